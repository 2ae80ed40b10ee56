import { ioCorruptSpec } from '../../../protocol/faults/io-corrupt.js'
import { IoPlanSchema, IoStateSchema, applyIo, buildRule, gatherIo, planIo, recoverIo, sweepIo, undoIo } from '../shared/iofault.js'
import { defineFault } from '../types.js'

/**
 * Flips bytes of the data reads return from files of one directory; the files themselves are
 * never written, so recovery has nothing to restore: a FUSE pass-through (native/iofault) laid
 * over the directory in the target's mount namespace. See agent/faults/shared/iofault.ts.
 */
export const ioCorrupt = defineFault(ioCorruptSpec, {
  planSchema: IoPlanSchema,
  stateSchema: IoStateSchema,
  requires: ['fuse', 'helper:iofault', 'openat2'],
  exclusive: false,
  gather: (spec, target, ctx) => gatherIo(spec, target, ctx, 'io-corrupt'),
  plan(spec, _target, ctx) {
    const rule = buildRule({
      action: 'corrupt',
      operations: ['read'],
      ...(spec.percent !== undefined ? { percent: spec.percent } : {}),
      ...(spec.glob !== undefined ? { glob: spec.glob } : {}),
      bytes: spec.bytes ?? 1,
    })
    return planIo(spec.path, [rule], ctx)
  },
  undoFromPlan: undoIo,
  apply: applyIo,
  recover: recoverIo,
  sweep: sweepIo,
})
