import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'
import { FileSpecFields, fileKindTargets } from './fields.js'

export const MAX_CORRUPT_BYTES = 1024

export const fileCorruptSpec = defineFaultSpec({
  kind: 'file-corrupt',
  summary: 'Overwrite bytes of a file at given offsets, or N random ones from a seed; recovery restores it',
  targets: fileKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('file-corrupt'),
      ...FileSpecFields,
      offsets: Type.Optional(Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1, maxItems: MAX_CORRUPT_BYTES, description: 'Byte offsets to overwrite' })),
      value: Type.Optional(Type.Integer({ minimum: 0, maximum: 255, description: 'With offsets: the byte to write there (default: each byte inverted)' })),
      count: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_CORRUPT_BYTES, description: 'Instead of offsets: corrupt this many bytes at random offsets' })),
      seed: Type.Optional(Type.Integer({ minimum: 0, maximum: 4294967295, description: 'With count: the seed (default: a new one, shown in the plan; pass it again to get the same bytes)' })),
    },
    { additionalProperties: false, title: 'file-corrupt' },
  ),
  example: { path: '/etc/app/app.conf', count: 16 },
})
