import { Type } from 'typebox'
import { SizeField, SizeOrPercentField } from '../units.js'
import { defineFaultSpec } from './define.js'

export const diskFillSpec = defineFaultSpec({
  kind: 'disk-fill',
  summary: 'Fill a filesystem to a size or a Use% with one fallocated file; recovery removes it',
  targets: ['host', 'process', 'container'],
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('disk-fill'),
      path: Type.String({ minLength: 1, maxLength: 4096, pattern: '^/', description: 'A directory on the filesystem to fill (inside the container for container targets); the fill file goes in it' }),
      size: Type.Optional(SizeField('How much to allocate, e.g. 512MiB, 2GiB, 1.5G')),
      percent: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 100, description: "Fill until the filesystem is this full, as df's Use% counts: used / (used + available)" })),
      reserve: Type.Optional(SizeOrPercentField('Free space the fill must leave, as a size or a % of the filesystem (default: the smaller of 1% and 64MiB)')),
      force: Type.Optional(Type.Boolean({ description: 'Ignore the reserve and allow /proc, /sys, /dev (e.g. /dev/shm)' })),
    },
    { additionalProperties: false, title: 'disk-fill' },
  ),
  example: { path: '/var/lib/app', percent: 90 },
})
