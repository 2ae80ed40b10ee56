import { signal } from '@preact/signals'
import { createParser } from 'eventsource-parser'
import type { AuditEntry, FleetEvent } from '../protocol/views.js'
import { api, signOut } from './api.js'

/**
 * The live event stream (GET /v1/events/stream, server-sent events). EventSource cannot send an
 * Authorization header, so it is read with fetch() and parsed with eventsource-parser. After a
 * drop it reconnects with the last cursor in Last-Event-ID, so no event is missed or repeated.
 * A server without the stream (404) is polled through GET /v1/events instead.
 */

export type StreamMessage = { kind: 'fleet'; event: FleetEvent } | { kind: 'audit'; entry: AuditEntry }
type Listener = (message: StreamMessage) => void

export const streamStatus = signal<'off' | 'connecting' | 'live' | 'reconnecting' | 'polling'>('off')
const listeners = new Set<Listener>()

export function subscribe(listener: Listener): () => void {
  listeners.add(listener)
  return () => listeners.delete(listener)
}

function emit(message: StreamMessage): void {
  for (const listener of listeners) {
    try {
      listener(message)
    } catch (err) {
      console.error('stream listener failed', err)
    }
  }
}

const sleep = (ms: number, abort: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms)
    abort.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
  })

/** Starts following the stream with this token; returns the function that stops it. */
export function startStream(secret: string): () => void {
  const abort = new AbortController()
  void follow(secret, abort.signal)
  return () => {
    abort.abort()
    streamStatus.value = 'off'
  }
}

async function follow(secret: string, abort: AbortSignal): Promise<void> {
  let cursor: string | undefined
  let failures = 0
  streamStatus.value = 'connecting'
  while (!abort.aborted) {
    const session = { signedOut: false }
    try {
      const res = await fetch('/v1/events/stream', {
        headers: { authorization: `Bearer ${secret}`, accept: 'text/event-stream', ...(cursor ? { 'last-event-id': cursor } : {}) },
        signal: abort,
        cache: 'no-store',
      })
      if (res.status === 401) {
        const body = (await res.json().catch(() => ({}))) as { message?: string }
        signOut(body.message ?? 'the server no longer accepts this token')
        return
      }
      if (res.status === 404) return await poll(abort)
      if (!res.ok || !res.body) throw new Error(`the event stream answered ${res.status}`)
      streamStatus.value = 'live'
      failures = 0
      const parser = createParser({
        onEvent(message) {
          if (message.id) cursor = message.id
          const data = message.data ? (JSON.parse(message.data) as unknown) : undefined
          if (message.event === 'fleet') emit({ kind: 'fleet', event: data as FleetEvent })
          else if (message.event === 'audit') emit({ kind: 'audit', entry: data as AuditEntry })
          else if (message.event === 'signed-out') {
            session.signedOut = true
            signOut((data as { message?: string } | undefined)?.message ?? 'signed out by the server')
          }
        },
      })
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
      for (;;) {
        const { value, done } = await reader.read()
        if (done || session.signedOut) break
        parser.feed(value)
      }
      if (session.signedOut) return
    } catch (err) {
      if (abort.aborted) return
      console.warn('event stream dropped', err)
    }
    // Reconnect, a little later after each failure in a row (at most 10 s).
    streamStatus.value = 'reconnecting'
    failures++
    await sleep(Math.min(10_000, 500 * 2 ** Math.min(failures, 5)), abort)
  }
}

/** The fallback for a server without the stream: fleet events every 3 s (no audit rows). */
async function poll(abort: AbortSignal): Promise<void> {
  streamStatus.value = 'polling'
  let after: number | undefined
  while (!abort.aborted) {
    try {
      const { events } = await api<{ events: FleetEvent[] }>('GET', `/v1/events${after === undefined ? '?limit=1' : `?after=${after}`}`, undefined, { signal: abort })
      if (after !== undefined) for (const event of events) emit({ kind: 'fleet', event })
      after = events.at(-1)?.id ?? after ?? 0
    } catch {
      if (abort.aborted) return
    }
    await sleep(3_000, abort)
  }
}
