import { Type } from 'typebox'
import { PlanStepSchema } from '../../../protocol/plan.js'
import { defineFault } from '../types.js'
import { ExactProcessFields, describeProcess, requireProcess, signalAtApply } from '../shared/process.js'

/** Signals that end or disturb a process. STOP/CONT belong to process-stop, which undoes itself. */
export const killSignals = ['KILL', 'TERM', 'INT', 'HUP', 'QUIT', 'ABRT', 'USR1', 'USR2', 'ALRM', 'SEGV', 'BUS', 'PIPE'] as const
const SignalSchema = Type.Enum(killSignals, { description: 'Signal name without the SIG prefix (default KILL)' })

/**
 * Sends a signal once, to a process or to a container's init. A killed process cannot be brought
 * back: recovery only records that.
 */
export const processKill = defineFault({
  kind: 'process-kill',
  summary: "Send a signal (default KILL) to a process or a container's init; not recoverable",
  specSchema: Type.Object(
    { kind: Type.Literal('process-kill'), signal: Type.Optional(SignalSchema) },
    { additionalProperties: false, title: 'process-kill' },
  ),
  planSchema: Type.Object({ ...ExactProcessFields, signal: SignalSchema, steps: Type.Array(PlanStepSchema) }),
  stateSchema: Type.Object({ ...ExactProcessFields, signal: SignalSchema, delivered: Type.Boolean() }),
  recoverable: false,
  targets: ['process', 'container'],
  requires: ['signals'],
  exclusive: false,

  plan(spec, target) {
    // A container is signalled through its init (its pid 1): ending it ends the container.
    const exact =
      target.type === 'container'
        ? { pid: target.initPid, startTime: target.initStartTime, comm: `init of container ${target.name ?? target.id.slice(0, 12)}` }
        : (({ pid, startTime, comm }) => ({ pid, startTime, comm }))(requireProcess(target, 'process-kill'))
    const signal = spec.signal ?? 'KILL'
    return {
      ...exact,
      signal,
      steps: [
        { phase: 'apply', action: 'pidfd_send_signal', detail: `SIG${signal} to ${describeProcess(exact)}` },
        { phase: 'recover', action: 'none', detail: 'not recoverable: a signalled process is not restarted by Faultline' },
      ],
    }
  },

  undoFromPlan: (plan) => ({ pid: plan.pid, startTime: plan.startTime, comm: plan.comm, signal: plan.signal, delivered: false }),

  async apply(plan, ctx) {
    signalAtApply(ctx.paths.procRoot, plan, `SIG${plan.signal}`)
    return { pid: plan.pid, startTime: plan.startTime, comm: plan.comm, signal: plan.signal, delivered: true }
  },

  async recover(state) {
    return {
      note: state.delivered
        ? `not recoverable: SIG${state.signal} was delivered to ${describeProcess(state)}`
        : `not recoverable; SIG${state.signal} was never confirmed delivered to ${describeProcess(state)}`,
    }
  },
})
