import { Type } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import type { ResolvedProcess, ResolvedTarget } from '../../../protocol/target.js'
import { readStat } from '../../targets/procfs.js'
import { signalExactProcess, type SignalName, type SignalOutcome } from '../../targets/signal.js'

/** The fields every process fault keeps to name its process exactly. */
export const ExactProcessFields = {
  pid: Type.Integer({ minimum: 1 }),
  startTime: Type.Integer({ minimum: 0 }),
  comm: Type.String(),
}

export function requireProcess(target: ResolvedTarget, kind: string): ResolvedProcess {
  if (target.type !== 'process') {
    throw new FaultlineError('FAULTLINE_ERR_TARGET_UNSUPPORTED', `${kind} acts on processes and containers, not on a ${target.type}`)
  }
  return target
}

export function describeProcess(p: { pid: number; startTime: number; comm: string }): string {
  return `pid ${p.pid} (${p.comm}, start time ${p.startTime})`
}

/** Signals the exact process at apply time; a vanished or reused pid is TARGET_GONE. */
export function signalAtApply(
  procRoot: string,
  p: { pid: number; startTime: number; comm: string },
  signal: SignalName,
): void {
  const outcome = signalExactProcess(procRoot, p.pid, p.startTime, signal)
  if (outcome !== 'delivered') {
    throw new FaultlineError(
      'FAULTLINE_ERR_TARGET_GONE',
      `${describeProcess(p)} ${outcomeText(outcome)} before ${signal} could be sent; nothing was changed`,
    )
  }
}

export function outcomeText(outcome: Exclude<SignalOutcome, 'delivered'>): string {
  return outcome === 'exited' ? 'has exited' : 'is gone and its pid now belongs to another process'
}

/**
 * Waits until the process shows the wanted state letter (a stop takes effect when the process
 * next returns to user space, so a process in uninterruptible sleep may take a moment).
 */
export async function waitForState(
  procRoot: string,
  p: { pid: number; startTime: number },
  wanted: (state: string) => boolean,
  timeoutMs: number,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  // The state usually changes within ~100 µs: poll on every turn of the event loop first
  // (setImmediate lets other work run), then back off to 1 ms and 5 ms sleeps.
  for (let attempt = 0; ; attempt++) {
    const stat = readStat(procRoot, p.pid)
    if (!stat || stat.startTime !== p.startTime) return false
    if (wanted(stat.state)) return true
    if (Date.now() >= deadline) return false
    if (attempt < 50) await new Promise((r) => setImmediate(r))
    else await new Promise((r) => setTimeout(r, attempt < 100 ? 1 : 5))
  }
}
