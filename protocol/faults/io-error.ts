import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'
import { IoOperationsField, IoSpecFields, ioErrnoNames, ioKindTargets, type IoOperation } from './fields.js'

export const IO_ERROR_DEFAULT_OPERATIONS: readonly IoOperation[] = ['read', 'write', 'fsync']

export const ioErrorSpec = defineFaultSpec({
  kind: 'io-error',
  summary: 'Fail file operations in a directory with an errno (EIO, ENOSPC, ...) (FUSE pass-through over it, in the target mount namespace)',
  targets: ioKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('io-error'),
      ...IoSpecFields,
      operations: IoOperationsField(IO_ERROR_DEFAULT_OPERATIONS),
      errno: Type.Enum(ioErrnoNames, { description: 'The error the operations fail with' }),
    },
    { additionalProperties: false, title: 'io-error' },
  ),
  example: { path: '/var/lib/app', errno: 'EIO', percent: 10 },
})
