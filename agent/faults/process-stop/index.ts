import { Type } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import { PlanStepSchema } from '../../../protocol/plan.js'
import { signalExactProcess } from '../../targets/signal.js'
import { defineFault } from '../types.js'
import { ExactProcessFields, describeProcess, outcomeText, requireProcess, signalAtApply, waitForState } from '../shared/process.js'

/**
 * Freezes a process with SIGSTOP and thaws it with SIGCONT at recovery. A process that was
 * already stopped is refused: recovery would resume a process someone else stopped on purpose.
 */
export const processStop = defineFault({
  kind: 'process-stop',
  summary: 'Stop a process (SIGSTOP); recovery resumes it (SIGCONT)',
  specSchema: Type.Object(
    { kind: Type.Literal('process-stop') },
    { additionalProperties: false, title: 'process-stop' },
  ),
  planSchema: Type.Object({ ...ExactProcessFields, steps: Type.Array(PlanStepSchema) }),
  stateSchema: Type.Object({ pid: ExactProcessFields.pid, startTime: ExactProcessFields.startTime, comm: ExactProcessFields.comm }),
  recoverable: true,
  targets: ['process'],
  requires: ['signals'],
  exclusive: true,

  plan(_spec, target) {
    const p = requireProcess(target, 'process-stop')
    if (p.state === 'T' || p.state === 't') {
      throw new FaultlineError(
        'FAULTLINE_ERR_TARGET_STATE',
        `pid ${p.pid} (${p.comm}) is already stopped (state ${p.state}); Faultline would resume it at recovery, so it refuses to stop it`,
      )
    }
    const exact = { pid: p.pid, startTime: p.startTime, comm: p.comm }
    return {
      ...exact,
      steps: [
        { phase: 'apply', action: 'pidfd_send_signal', detail: `SIGSTOP to ${describeProcess(exact)}` },
        { phase: 'recover', action: 'pidfd_send_signal', detail: `SIGCONT to ${describeProcess(exact)}, unless it exited or its pid was reused` },
      ],
    }
  },

  undoFromPlan: (plan) => ({ pid: plan.pid, startTime: plan.startTime, comm: plan.comm }),

  async apply(plan, ctx) {
    signalAtApply(ctx.paths.procRoot, plan, 'SIGSTOP')
    const stopped = await waitForState(ctx.paths.procRoot, plan, (s) => s === 'T' || s === 't', 2_000)
    if (!stopped) ctx.log.warn({ pid: plan.pid }, 'SIGSTOP sent but the process has not shown state T within 2 s')
    return { pid: plan.pid, startTime: plan.startTime, comm: plan.comm }
  },

  async recover(state, ctx) {
    const outcome = signalExactProcess(ctx.paths.procRoot, state.pid, state.startTime, 'SIGCONT')
    if (outcome === 'delivered') return {}
    return { note: `${describeProcess(state)} ${outcomeText(outcome)}; nothing to resume` }
  },
})
