import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'
import { IoSpecFields, ioKindTargets } from './fields.js'

export const MAX_IO_CORRUPT_BYTES = 4096

export const ioCorruptSpec = defineFaultSpec({
  kind: 'io-corrupt',
  summary: 'Flip bytes in the data reads return from a directory; the files on disk stay intact (FUSE pass-through over it, in the target mount namespace)',
  targets: ioKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('io-corrupt'),
      ...IoSpecFields,
      bytes: Type.Optional(
        Type.Integer({ minimum: 1, maximum: MAX_IO_CORRUPT_BYTES, description: 'Bytes flipped (XOR with a random non-zero value) at random offsets of each affected read; default 1' }),
      ),
    },
    { additionalProperties: false, title: 'io-corrupt' },
  ),
  example: { path: '/var/lib/app', percent: 5 },
})
