import { execFile } from 'node:child_process'
import { connect } from 'node:net'
import type { Logger } from 'pino'
import { parseDuration } from '../../protocol/duration.js'
import type { Guard } from '../../protocol/link.js'

/**
 * Guards run on the agent, not on the server, so a run stays guarded while the server is
 * unreachable: that is exactly when nobody else is watching. A guard that fails `failures`
 * times in a row (default 1) trips: the caller recovers every injection of that run on this
 * host (reason 'guard') and the guards of the run stop.
 */
export interface GuardOutcome {
  ok: boolean
  /** What was checked and what came back, for the run record ("tcp 127.0.0.1:5432: ECONNREFUSED"). */
  detail: string
}

/** A guard never runs more often than this, whatever `every` says. */
export const MIN_GUARD_INTERVAL_MS = 100
const DEFAULT_TIMEOUT_MS = 5_000

export function describeGuard(guard: Guard): string {
  if ('http' in guard) return `http ${guard.http.url}`
  if ('tcp' in guard) return `tcp ${guard.tcp.host}:${guard.tcp.port}`
  return `command ${guard.command.argv.join(' ').slice(0, 200)}`
}

function timeoutOf(guard: Guard): number {
  const spec = 'http' in guard ? guard.http.timeout : 'tcp' in guard ? guard.tcp.timeout : guard.command.timeout
  const every = Math.max(parseDuration(guard.every), MIN_GUARD_INTERVAL_MS)
  return spec ? parseDuration(spec) : Math.min(DEFAULT_TIMEOUT_MS, every)
}

/** Runs one check of one guard. Never throws: any failure to check is a failed check. */
export async function checkGuard(guard: Guard): Promise<GuardOutcome> {
  const what = describeGuard(guard)
  const timeoutMs = timeoutOf(guard)
  try {
    if ('http' in guard) {
      const expect = guard.http.expectStatus ?? 200
      const res = await fetch(guard.http.url, { redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) })
      await res.body?.cancel().catch(() => undefined)
      return { ok: res.status === expect, detail: `${what}: status ${res.status}${res.status === expect ? '' : `, expected ${expect}`}` }
    }
    if ('tcp' in guard) {
      await tcpConnect(guard.tcp.host, guard.tcp.port, timeoutMs)
      return { ok: true, detail: `${what}: connected` }
    }
    const { code, signal } = await runCommand(guard.command.argv, timeoutMs)
    if (code === 0) return { ok: true, detail: `${what}: exit 0` }
    return { ok: false, detail: `${what}: ${signal ? `killed by ${signal}${signal === 'SIGKILL' ? ` (timeout ${timeoutMs} ms)` : ''}` : `exit ${code}`}` }
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException }
    const reason = e.name === 'TimeoutError' ? `timeout ${timeoutMs} ms` : (e.cause?.code ?? e.code ?? e.message)
    return { ok: false, detail: `${what}: ${reason}` }
  }
}

function tcpConnect(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(Object.assign(new Error(`timeout ${timeoutMs} ms`), { code: 'TIMEOUT' }))
    }, timeoutMs)
    socket.once('connect', () => {
      clearTimeout(timer)
      socket.destroy()
      resolve()
    })
    socket.once('error', (err) => {
      clearTimeout(timer)
      socket.destroy()
      reject(err)
    })
  })
}

function runCommand(argv: string[], timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    // argv, never a shell: the guard's words are passed to the program as they are.
    const child = execFile(argv[0]!, argv.slice(1), { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 }, () => undefined)
    child.once('error', reject)
    child.once('exit', (code, signal) => resolve({ code, signal }))
  })
}

interface Watch {
  guard: Guard
  timer: NodeJS.Timeout | undefined
  failures: number
  checking: boolean
}

/**
 * The guards of one run on this host: each on its own interval, the first check one interval
 * after the injection became active. `onTrip` is called once, with the failing check.
 */
export class GuardSet {
  readonly runId: string
  readonly #watches: Watch[]
  readonly #onTrip: (outcome: GuardOutcome) => void
  readonly #log: Logger
  #stopped = false

  constructor(runId: string, guards: Guard[], log: Logger, onTrip: (outcome: GuardOutcome) => void) {
    this.runId = runId
    this.#log = log
    this.#onTrip = onTrip
    this.#watches = guards.map((guard) => ({ guard, timer: undefined, failures: 0, checking: false }))
    for (const watch of this.#watches) this.#schedule(watch)
  }

  get stopped(): boolean {
    return this.#stopped
  }

  #schedule(watch: Watch): void {
    if (this.#stopped) return
    const every = Math.max(parseDuration(watch.guard.every), MIN_GUARD_INTERVAL_MS)
    watch.timer = setTimeout(() => void this.#check(watch), every)
    watch.timer.unref()
  }

  async #check(watch: Watch): Promise<void> {
    if (this.#stopped || watch.checking) return
    watch.checking = true
    const outcome = await checkGuard(watch.guard)
    watch.checking = false
    if (this.#stopped) return
    if (outcome.ok) {
      watch.failures = 0
    } else {
      watch.failures++
      const allowed = watch.guard.failures ?? 1
      this.#log.warn({ runId: this.runId, detail: outcome.detail, failures: watch.failures, allowed }, 'guard check failed')
      if (watch.failures >= allowed) {
        this.stop()
        this.#onTrip({ ok: false, detail: `${outcome.detail} (${watch.failures} failed check${watch.failures > 1 ? 's' : ''} in a row)` })
        return
      }
    }
    this.#schedule(watch)
  }

  stop(): void {
    this.#stopped = true
    for (const watch of this.#watches) clearTimeout(watch.timer)
  }
}
