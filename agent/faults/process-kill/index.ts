import { Type } from 'typebox'
import { SignalSchema, processKillSpec } from '../../../protocol/faults/process-kill.js'
import { PlanStepSchema } from '../../../protocol/plan.js'
import { ExactProcessFields, describeProcess, requireProcess, signalAtApply } from '../shared/process.js'
import { defineFault, noFacts } from '../types.js'

/**
 * Sends a signal once, to a process or to a container's init. A killed process cannot be brought
 * back: recovery only records that.
 */
export const processKill = defineFault(processKillSpec, {
  planSchema: Type.Object({ ...ExactProcessFields, signal: SignalSchema, steps: Type.Array(PlanStepSchema) }),
  stateSchema: Type.Object({ ...ExactProcessFields, signal: SignalSchema, delivered: Type.Boolean() }),
  requires: ['signals'],
  exclusive: false,
  gather: noFacts,

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
