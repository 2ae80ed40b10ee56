import type { ComponentChildren } from 'preact'
import { useCallback, useEffect, useRef, useState } from 'preact/hooks'
import { roleAllows, type Role } from '../protocol/roles.js'
import { me, messageOf } from './api.js'
import { subscribe, type StreamMessage } from './stream.js'

/** Small shared pieces: loading data, following the stream, dialogs, badges, times. */

/** Whether the signed-in role may use a control that needs `need`: controls it may not use are not rendered. */
export function can(need: Role): boolean {
  const role = me.value?.role
  return role !== undefined && roleAllows(role, need)
}

export interface Resource<T> {
  data: T | undefined
  error: string
  loading: boolean
  reload: () => void
}

/** Data from the server, loaded when `key` changes and again on reload(); the last data stays while reloading. */
export function useResource<T>(load: (signal: AbortSignal) => Promise<T>, key: string): Resource<T> {
  const [data, setData] = useState<T | undefined>(undefined)
  const [error, setError] = useState('')
  const [loading, setLoading] = useState(true)
  const [tick, setTick] = useState(0)
  const loadRef = useRef(load)
  loadRef.current = load
  useEffect(() => {
    const abort = new AbortController()
    setLoading(true)
    loadRef.current(abort.signal).then(
      (value) => {
        if (abort.signal.aborted) return
        setData(value)
        setError('')
        setLoading(false)
      },
      (err: unknown) => {
        if (abort.signal.aborted) return
        setError(messageOf(err))
        setLoading(false)
      },
    )
    return () => abort.abort()
  }, [key, tick])
  const reload = useCallback(() => setTick((n) => n + 1), [])
  return { data, error, loading, reload }
}

/**
 * Calls `onMatch` for each stream message `match` accepts, or (with delayMs) once per burst:
 * a run of 50 record events becomes one reload.
 */
export function useLive(match: (m: StreamMessage) => boolean, onMatch: (m: StreamMessage) => void, delayMs = 0): void {
  const ref = useRef({ match, onMatch })
  ref.current = { match, onMatch }
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined
    let last: StreamMessage | undefined
    const off = subscribe((m) => {
      if (!ref.current.match(m)) return
      if (delayMs <= 0) return ref.current.onMatch(m)
      last = m
      timer ??= setTimeout(() => {
        timer = undefined
        ref.current.onMatch(last!)
      }, delayMs)
    })
    return () => {
      off()
      if (timer) clearTimeout(timer)
    }
  }, [delayMs])
}

/** Where an experiment opens in the editor: apart from /experiments/new, which any name (even "new") may have. */
export const experimentHref = (name: string) => `/experiments/edit/${encodeURIComponent(name)}`

export const fleetEventOf = (prefixes: string[]) => (m: StreamMessage) =>
  m.kind === 'fleet' && prefixes.some((p) => m.event.type.startsWith(p))

/**
 * A confirmation in a native modal <dialog>: it traps focus, Escape cancels, and focus returns
 * to the control that opened it. `busy` keeps it open while the action runs.
 */
export function ConfirmDialog(props: {
  open: boolean
  title: string
  children: ComponentChildren
  confirmLabel: string
  danger?: boolean
  onConfirm: () => void | Promise<void>
  onClose: () => void
}) {
  const ref = useRef<HTMLDialogElement>(null)
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState('')
  useEffect(() => {
    const dialog = ref.current
    if (!dialog) return
    if (props.open && !dialog.open) {
      setError('')
      dialog.showModal()
    } else if (!props.open && dialog.open) dialog.close()
  }, [props.open])
  const confirm = async () => {
    setBusy(true)
    setError('')
    try {
      await props.onConfirm()
      props.onClose()
    } catch (err) {
      setError(messageOf(err))
    } finally {
      setBusy(false)
    }
  }
  return (
    <dialog ref={ref} class="dialog" aria-labelledby="dialog-title" onClose={() => props.open && props.onClose()}>
      <h2 id="dialog-title">{props.title}</h2>
      <div class="dialog-body">{props.children}</div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <div class="actions">
        <button type="button" onClick={() => props.onClose()} disabled={busy}>
          Cancel
        </button>
        <button type="button" class={props.danger ? 'danger' : 'primary'} onClick={() => void confirm()} disabled={busy}>
          {busy ? 'Working…' : props.confirmLabel}
        </button>
      </div>
    </dialog>
  )
}

const statusTone: Record<string, string> = {
  sent: 'pending',
  pending: 'pending',
  active: 'active',
  running: 'active',
  recovered: 'ok',
  completed: 'ok',
  ok: 'ok',
  connected: 'ok',
  failed: 'bad',
  error: 'bad',
  forbidden: 'bad',
  unauthenticated: 'bad',
  aborted: 'warn',
  offline: 'muted',
  skipped: 'muted',
  disconnected: 'muted',
}

/** A status as text with a colour (the colour is never the only sign). */
export function Status({ value }: { value: string }) {
  return <span class={`status status-${statusTone[value] ?? 'muted'}`}>{value}</span>
}

export function Chips({ labels }: { labels: Record<string, string> }) {
  const entries = Object.entries(labels)
  if (entries.length === 0) return <span class="muted">none</span>
  return (
    <ul class="chips" aria-label="labels">
      {entries.map(([k, v]) => (
        <li key={k} class="chip">
          {k}={v}
        </li>
      ))}
    </ul>
  )
}

export function ago(iso: string | undefined, now = Date.now()): string {
  if (!iso) return '—'
  const s = Math.round((now - Date.parse(iso)) / 1000)
  const future = s < 0
  const a = Math.abs(s)
  const text = a < 60 ? `${a}s` : a < 3600 ? `${Math.floor(a / 60)}m` : a < 86400 ? `${Math.floor(a / 3600)}h` : `${Math.floor(a / 86400)}d`
  return future ? `in ${text}` : `${text} ago`
}

/** A time shown relative ("3m ago") with the exact time for the mouse and screen readers. */
export function Time({ iso }: { iso: string | undefined }) {
  if (!iso) return <span class="muted">—</span>
  const exact = new Date(iso).toLocaleString()
  return (
    <time dateTime={iso} title={exact}>
      {ago(iso)}
    </time>
  )
}

export function ErrorBox({ message }: { message: string }) {
  if (!message) return null
  return (
    <p class="error" role="alert">
      {message}
    </p>
  )
}

export function PageTitle({ children, actions }: { children: ComponentChildren; actions?: ComponentChildren }) {
  // Focus goes to the page heading on navigation so keyboard and screen-reader users land on the new page.
  const ref = useRef<HTMLHeadingElement>(null)
  useEffect(() => ref.current?.focus({ preventScroll: true }), [])
  return (
    <div class="page-title">
      <h1 ref={ref} tabIndex={-1}>
        {children}
      </h1>
      {actions && <div class="actions">{actions}</div>}
    </div>
  )
}
