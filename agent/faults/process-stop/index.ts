import { processStopSpec } from '../../../protocol/faults/process-stop.js'
import { Type } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import { PlanStepSchema } from '../../../protocol/plan.js'
import { describeTarget } from '../../../protocol/target.js'
import { readCgroupMounts } from '../../targets/cgroupfs.js'
import { signalExactProcess } from '../../targets/signal.js'
import { FreezerSchema, freeze, freezerFor, freezerState, thaw, type Freezer } from '../shared/freezer.js'
import { ExactProcessFields, describeProcess, outcomeText, signalAtApply, waitForState } from '../shared/process.js'
import { defineFault } from '../types.js'

const MechanismFields = {
  mechanism: Type.Enum(['signal', 'freezer']),
  pid: Type.Optional(ExactProcessFields.pid),
  startTime: Type.Optional(ExactProcessFields.startTime),
  comm: Type.Optional(ExactProcessFields.comm),
  freezer: Type.Optional(FreezerSchema),
}

type StopFacts = { freezer: Freezer; state: string } | undefined

/**
 * Freezes a process with SIGSTOP (SIGCONT at recovery), or a whole container through its cgroup
 * freezer (v1 freezer.state, v2 cgroup.freeze), which also holds processes it would fork.
 * A process or container that was already stopped is refused: recovery would resume something
 * someone else stopped on purpose.
 */
export const processStop = defineFault(processStopSpec, {
  planSchema: Type.Object({ ...MechanismFields, steps: Type.Array(PlanStepSchema) }),
  stateSchema: Type.Object(MechanismFields),
  requires: ['signals'],
  exclusive: true,

  async gather(_spec, target, ctx): Promise<StopFacts> {
    if (target.type !== 'container') return undefined
    const freezer = freezerFor(target, readCgroupMounts(ctx.paths.procRoot))
    return { freezer, state: freezerState(freezer) }
  },

  plan(_spec, target, ctx) {
    if (target.type === 'container') {
      const f = ctx.facts!
      if (f.state !== 'thawed') {
        throw new FaultlineError(
          'FAULTLINE_ERR_TARGET_STATE',
          `${describeTarget(target)} is already ${f.state} (e.g. docker pause); Faultline would thaw it at recovery, so it refuses to freeze it`,
        )
      }
      const file = f.freezer.version === 'v1' ? 'freezer.state' : 'cgroup.freeze'
      return {
        mechanism: 'freezer' as const,
        freezer: f.freezer,
        steps: [
          { phase: 'apply' as const, action: 'write', detail: `${f.freezer.version === 'v1' ? 'FROZEN' : '1'} to ${f.freezer.dir}/${file}, then wait until every task is frozen` },
          { phase: 'recover' as const, action: 'write', detail: `${f.freezer.version === 'v1' ? 'THAWED' : '0'} to ${f.freezer.dir}/${file} (a cgroup that is gone counts as thawed)` },
        ],
      }
    }
    if (target.type !== 'process') {
      throw new FaultlineError('FAULTLINE_ERR_TARGET_UNSUPPORTED', `process-stop acts on processes and containers, not on a ${target.type}`)
    }
    if (target.state === 'T' || target.state === 't') {
      throw new FaultlineError(
        'FAULTLINE_ERR_TARGET_STATE',
        `pid ${target.pid} (${target.comm}) is already stopped (state ${target.state}); Faultline would resume it at recovery, so it refuses to stop it`,
      )
    }
    const exact = { pid: target.pid, startTime: target.startTime, comm: target.comm }
    return {
      mechanism: 'signal' as const,
      ...exact,
      steps: [
        { phase: 'apply' as const, action: 'pidfd_send_signal', detail: `SIGSTOP to ${describeProcess(exact)}` },
        { phase: 'recover' as const, action: 'pidfd_send_signal', detail: `SIGCONT to ${describeProcess(exact)}, unless it exited or its pid was reused` },
      ],
    }
  },

  undoFromPlan: ({ steps: _steps, ...state }) => state,

  async apply(plan, ctx) {
    const { steps: _steps, ...state } = plan
    if (plan.mechanism === 'freezer') {
      const complete = await freeze(plan.freezer!)
      if (!complete) ctx.log.warn({ dir: plan.freezer!.dir }, 'freeze requested but not complete within 5 s (a task in uninterruptible sleep?)')
      return state
    }
    const p = { pid: plan.pid!, startTime: plan.startTime!, comm: plan.comm! }
    signalAtApply(ctx.paths.procRoot, p, 'SIGSTOP')
    const stopped = await waitForState(ctx.paths.procRoot, p, (s) => s === 'T' || s === 't', 2_000)
    if (!stopped) ctx.log.warn({ pid: p.pid }, 'SIGSTOP sent but the process has not shown state T within 2 s')
    return state
  },

  async recover(state, ctx) {
    if (state.mechanism === 'freezer') return thaw(state.freezer!)
    const p = { pid: state.pid!, startTime: state.startTime!, comm: state.comm! }
    const outcome = signalExactProcess(ctx.paths.procRoot, p.pid, p.startTime, 'SIGCONT')
    if (outcome === 'delivered') return {}
    return { note: `${describeProcess(p)} ${outcomeText(outcome)}; nothing to resume` }
  },
})
