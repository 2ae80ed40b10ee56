import { stressCpuSpec } from '../../../protocol/faults/stress-cpu.js'
import { Type } from 'typebox'
import {
  DEADLINE_ARG,
  SECONDS_LEFT_ARG,
  basePlan,
  cgroupClaim,
  chooseEngine,
  gatherStress,
  gated,
  stressKindCommon,
  stressPlanSchema,
  stressSteps,
  type StressFacts,
} from '../shared/stress.js'
import { defineFault } from '../types.js'

/**
 * The built-in burner's period: each one busy for load % of 100 ms of CPU time, asleep for the
 * rest. Short enough that a 5 s window averages 50 periods; long enough that the sleep's timer
 * slack (50 µs) is 0.05 % of it.
 */
export const CPU_PERIOD_US = 100_000

/**
 * Loads the target's CPU: `workers` burners, each busy `load` % of one CPU, running in the
 * target's cgroups (its cpu and cpuacct cgroups, v1 or v2) so the load is charged to it and
 * shares its CPU quota and weight. stress-ng --cpu N --cpu-load P where stress-ng is installed,
 * else the built-in burner (native/stress), which meters its busy part in CPU time.
 */
export const stressCpu = defineFault(stressCpuSpec, {
  planSchema: stressPlanSchema({
    load: Type.Integer(),
    workers: Type.Integer(),
  }),
  ...stressKindCommon,

  async gather(_spec, target, ctx): Promise<StressFacts> {
    return gatherStress(target, ctx)
  },

  plan(spec, target, ctx) {
    const f = ctx.facts
    const load = spec.load ?? 100
    const workers = spec.workers ?? 1
    const engine = chooseEngine(spec.engine, f)
    const { plan, note } = basePlan(target, ctx, engine)
    const launches =
      engine === 'stress-ng'
        ? [gated(f, [f.stressNg!, '--cpu', String(workers), '--cpu-load', String(load), '--timeout', SECONDS_LEFT_ARG])]
        : Array.from({ length: workers }, () => gated(f, [f.helper, 'cpu', String(load), String(CPU_PERIOD_US), DEADLINE_ARG]))
    const full = { ...plan, launches, load, workers }
    const what = engine === 'stress-ng' ? `stress-ng with ${workers} cpu worker(s) at ${load} %` : `a burner at ${load} % of one CPU`
    return {
      ...full,
      steps: stressSteps(full, what, note ? { note } : {}),
      claims: target.type === 'host' ? [] : cgroupClaim('stress-cpu', plan.cgroups, 'cpuacct'),
    }
  },
})
