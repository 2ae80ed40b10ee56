import { IO_LATENCY_DEFAULT_OPERATIONS, ioLatencySpec } from '../../../protocol/faults/io-latency.js'
import { IoPlanSchema, IoStateSchema, applyIo, buildRule, durationMs, gatherIo, planIo, recoverIo, sweepIo, undoIo } from '../shared/iofault.js'
import { defineFault } from '../types.js'

/**
 * Delays the selected operations on files of one directory by latency ± jitter (uniform): a
 * FUSE pass-through (native/iofault) laid over the directory in the target's mount namespace.
 * See agent/faults/shared/iofault.ts.
 */
export const ioLatency = defineFault(ioLatencySpec, {
  planSchema: IoPlanSchema,
  stateSchema: IoStateSchema,
  requires: ['fuse', 'helper:iofault', 'openat2'],
  exclusive: false,
  gather: (spec, target, ctx) => gatherIo(spec, target, ctx, 'io-latency'),
  plan(spec, _target, ctx) {
    const rule = buildRule({
      action: 'delay',
      operations: spec.operations ?? IO_LATENCY_DEFAULT_OPERATIONS,
      ...(spec.percent !== undefined ? { percent: spec.percent } : {}),
      ...(spec.glob !== undefined ? { glob: spec.glob } : {}),
      latencyMs: durationMs('latency', spec.latency),
      jitterMs: spec.jitter === undefined ? 0 : durationMs('jitter', spec.jitter),
    })
    return planIo(spec.path, [rule], ctx)
  },
  undoFromPlan: undoIo,
  apply: applyIo,
  recover: recoverIo,
  sweep: sweepIo,
})
