import { Type } from 'typebox'
import { DURATION_PATTERN } from '../duration.js'
import { defineFaultSpec } from './define.js'
import { IoOperationsField, IoSpecFields, ioKindTargets, type IoOperation } from './fields.js'

export const IO_LATENCY_DEFAULT_OPERATIONS: readonly IoOperation[] = ['read', 'write']

const IoDuration = (description: string) => Type.String({ pattern: DURATION_PATTERN, maxLength: 32, description })

export const ioLatencySpec = defineFaultSpec({
  kind: 'io-latency',
  summary: 'Delay file operations in a directory by latency ± jitter (FUSE pass-through over it, in the target mount namespace)',
  targets: ioKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('io-latency'),
      ...IoSpecFields,
      operations: IoOperationsField(IO_LATENCY_DEFAULT_OPERATIONS),
      latency: IoDuration('Added delay per operation, e.g. "20ms" (1ms to 1m)'),
      jitter: Type.Optional(IoDuration('Random variation, uniform in latency ± jitter (at most latency)')),
    },
    { additionalProperties: false, title: 'io-latency' },
  ),
  example: { path: '/var/lib/app', latency: '20ms' },
})
