import type { Logger } from 'pino'
import { RESCAN_INTERVAL_MS } from '../../../protocol/faults/time-skew.js'
import type { SkewSession, SkewState } from './skew.js'

interface Rescan {
  session: SkewSession
  stopped: boolean
  timer?: NodeJS.Timeout
  running?: Promise<void>
}

/**
 * The re-scans of the active `children: true` injections of this agent process, by injection
 * id. They live only as long as the agent: after a restart every injection is recovered at
 * start, so nothing is left to re-scan. Each patch a re-scan makes is journaled by the session
 * (before and after the helper runs) exactly as at apply.
 *
 * Stand-in for an injector hook: the injector does not start or stop background work per
 * injection, so `recover` stops the re-scan itself (stopRescan) before it restores anything.
 */
const rescans = new Map<string, Rescan>()

export function startRescan(injectionId: string, session: SkewSession, expiresAt: number, log: Logger, intervalMs = RESCAN_INTERVAL_MS): void {
  const r: Rescan = { session, stopped: false }
  const schedule = () => {
    if (r.stopped || Date.now() >= expiresAt) return
    r.timer = setTimeout(tick, intervalMs)
    r.timer.unref()
  }
  const tick = () => {
    r.running = session
      .rescan(() => r.stopped)
      .catch((err: unknown) => log.warn({ err }, 'time-skew re-scan failed; trying again at the next one'))
      .finally(() => {
        r.running = undefined
        schedule()
      })
  }
  rescans.set(injectionId, r)
  schedule()
}

/**
 * Stops the re-scan of an injection and waits for a re-scan in progress to finish (its patches
 * are journaled by then). Returns the state the re-scan kept, which may list more processes
 * than the state recovery was called with.
 */
export async function stopRescan(injectionId: string): Promise<SkewState | undefined> {
  const r = rescans.get(injectionId)
  if (!r) return undefined
  r.stopped = true
  clearTimeout(r.timer)
  await r.running
  rescans.delete(injectionId)
  return r.session.state
}

/** For tests: the injections with a live re-scan. */
export const activeRescans = (): string[] => [...rescans.keys()]
