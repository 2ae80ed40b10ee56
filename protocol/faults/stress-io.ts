import { Type } from 'typebox'
import { SizeField } from '../units.js'
import { defineFaultSpec } from './define.js'
import { EngineField, stressKindTargets } from './fields.js'

export const STRESS_IO_DEFAULT_BYTES = '256MiB'
export const STRESS_IO_DEFAULT_PATH = '/var/tmp'

export const stressIoSpec = defineFaultSpec({
  kind: 'stress-io',
  summary: "Read and/or write files with direct IO from the target's cgroups",
  targets: stressKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('stress-io'),
      workers: Type.Optional(Type.Integer({ minimum: 1, maximum: 64, description: 'Number of workers, each with its own file (default 1)' })),
      bytes: Type.Optional(SizeField(`Size of each worker's file, passed over again and again until the deadline (default ${STRESS_IO_DEFAULT_BYTES})`)),
      mode: Type.Optional(Type.Enum(['write', 'read', 'readwrite'], { description: 'write (default): sequential writes; read: one pass of writes to fill the file, then sequential reads; readwrite: a write pass, then a read pass' })),
      path: Type.Optional(
        Type.String({
          pattern: '^/[^\\u0000]{0,4000}$',
          description: `Directory on the host (also for container targets) whose file system takes the IO (default ${STRESS_IO_DEFAULT_PATH}); the files go in <path>/faultline-<id>`,
        }),
      ),
      engine: EngineField,
    },
    { additionalProperties: false, title: 'stress-io' },
  ),
  example: {},
})
