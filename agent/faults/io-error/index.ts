import { IO_ERROR_DEFAULT_OPERATIONS, ioErrorSpec } from '../../../protocol/faults/io-error.js'
import { IoPlanSchema, IoStateSchema, applyIo, buildRule, gatherIo, planIo, recoverIo, sweepIo, undoIo } from '../shared/iofault.js'
import { defineFault } from '../types.js'

/**
 * Fails the selected operations on files of one directory with an errno, before they reach the
 * real file system (a failed write writes nothing): a FUSE pass-through (native/iofault) laid
 * over the directory in the target's mount namespace. See agent/faults/shared/iofault.ts.
 */
export const ioError = defineFault(ioErrorSpec, {
  planSchema: IoPlanSchema,
  stateSchema: IoStateSchema,
  requires: ['fuse', 'helper:iofault', 'openat2'],
  exclusive: false,
  gather: (spec, target, ctx) => gatherIo(spec, target, ctx, 'io-error'),
  plan(spec, _target, ctx) {
    const rule = buildRule({
      action: 'errno',
      operations: spec.operations ?? IO_ERROR_DEFAULT_OPERATIONS,
      ...(spec.percent !== undefined ? { percent: spec.percent } : {}),
      ...(spec.glob !== undefined ? { glob: spec.glob } : {}),
      errno: spec.errno,
    })
    return planIo(spec.path, [rule], ctx)
  },
  undoFromPlan: undoIo,
  apply: applyIo,
  recover: recoverIo,
  sweep: sweepIo,
})
