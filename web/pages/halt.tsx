import { signal } from '@preact/signals'
import { useEffect, useState } from 'preact/hooks'
import type { HaltResult } from '../../protocol/views.js'
import { api, messageOf } from '../api.js'
import type { FleetAgent } from '../types.js'
import { ConfirmDialog, fleetEventOf, useLive } from '../ui.js'

/**
 * Halt all: every connected agent recovers every injection now and running runs are aborted
 * (POST /v1/halt). The panel then follows the fleet until no connected host reports an active
 * injection; offline hosts recover through their lease and are listed as such.
 */

interface HaltState {
  phase: 'halting' | 'waiting' | 'done' | 'error'
  startedAt: number
  result?: HaltResult
  /** Connected hosts that still report injections, with how many. */
  remaining: { host: string; count: number }[]
  error?: string
}

const halt = signal<HaltState | null>(null)

const activeOn = (a: FleetAgent) => (a.injections ? a.injections.filter((i) => i.status === 'active' || i.status === 'sent').length : a.open)

async function check(): Promise<void> {
  const state = halt.value
  if (!state || state.phase !== 'waiting') return
  try {
    const { agents } = await api<{ agents: FleetAgent[] }>('GET', '/v1/agents')
    const remaining = agents.filter((a) => a.connected && activeOn(a) > 0).map((a) => ({ host: a.hostname, count: activeOn(a) }))
    if (halt.value?.phase !== 'waiting') return
    halt.value = { ...halt.value, remaining, phase: remaining.length === 0 ? 'done' : 'waiting' }
  } catch (err) {
    if (halt.value) halt.value = { ...halt.value, error: messageOf(err) }
  }
}

async function haltAll(): Promise<void> {
  halt.value = { phase: 'halting', startedAt: Date.now(), remaining: [] }
  try {
    const result = await api<HaltResult>('POST', '/v1/halt')
    halt.value = { ...halt.value, phase: 'waiting', result }
    await check()
  } catch (err) {
    halt.value = { ...halt.value, phase: 'error', error: messageOf(err) }
  }
}

export function HaltButton() {
  const [open, setOpen] = useState(false)
  return (
    <>
      <button type="button" class="danger halt" onClick={() => setOpen(true)}>
        Halt all
      </button>
      <ConfirmDialog
        open={open}
        title="Halt every fault?"
        confirmLabel="Stop every fault now"
        danger
        onClose={() => setOpen(false)}
        onConfirm={() => {
          // The panel shows the progress; the dialog closes at once.
          void haltAll()
        }}
      >
        <p>
          This will <strong>stop every fault on every host now</strong>: each connected agent recovers all its injections and every running run is
          aborted. Hosts that are offline recover through their lease.
        </p>
      </ConfirmDialog>
    </>
  )
}

export function HaltPanel() {
  const state = halt.value
  useLive(fleetEventOf(['record.', 'agent.', 'run.', 'halt']), () => void check(), 200)
  useEffect(() => {
    if (state?.phase !== 'waiting') return
    // The stream says when something changed; this is the safety net if it is not live.
    const timer = setInterval(() => void check(), 1_000)
    return () => clearInterval(timer)
  }, [state?.phase])
  if (!state) return null
  const r = state.result
  const ok = r?.agents.filter((a) => a.ok) ?? []
  const failed = r?.agents.filter((a) => !a.ok) ?? []
  const seconds = ((Date.now() - state.startedAt) / 1000).toFixed(1)
  return (
    <section class={`halt-panel halt-${state.phase}`} aria-labelledby="halt-title">
      <h2 id="halt-title">Halt all</h2>
      <div role="status" aria-live="polite">
        {state.phase === 'halting' && <p>Asking every connected agent to recover everything…</p>}
        {r && (
          <p>
            <strong>{ok.length}</strong> agent(s) recovered their injections, <strong>{failed.length}</strong> failed,{' '}
            <strong>{r.offline.length}</strong> offline (they recover through their lease); {r.runs.length} run(s) aborted.
          </p>
        )}
        {state.phase === 'waiting' && (
          <p>
            Waiting for every host to report no active injection: {state.remaining.map((h) => `${h.host} (${h.count})`).join(', ') || 'checking…'}
          </p>
        )}
        {state.phase === 'done' && (
          <p class="ok-text" data-testid="halt-done">
            <strong>Every host recovered</strong> ({seconds} s).
          </p>
        )}
        {state.phase === 'error' && <p class="error">Halt failed: {state.error}</p>}
      </div>
      {failed.length > 0 && (
        <ul class="plain">
          {failed.map((f) => (
            <li key={f.agent} class="bad-text">
              {f.agent}: {f.error ?? 'failed'}
            </li>
          ))}
        </ul>
      )}
      {r && r.offline.length > 0 && <p class="small muted">Offline: {r.offline.join(', ')}</p>}
      {state.error && state.phase !== 'error' && <p class="small error">{state.error}</p>}
      {(state.phase === 'done' || state.phase === 'error') && (
        <button type="button" onClick={() => (halt.value = null)}>
          Dismiss
        </button>
      )}
    </section>
  )
}
