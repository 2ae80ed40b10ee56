import { Type } from 'typebox'
import { DURATION_PATTERN } from '../duration.js'
import { defineFaultSpec } from './define.js'
import { DirectionField, NetworkFilterFields, networkKindTargets } from './fields.js'

const DelayDuration = (description: string) => Type.String({ pattern: DURATION_PATTERN, maxLength: 32, description })

export const networkDelaySpec = defineFaultSpec({
  kind: 'network-delay',
  summary: 'Delay matching packets by latency ± jitter (netem; NFQUEUE + faultline-netdelay where netem is missing or for ingress)',
  targets: networkKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('network-delay'),
      latency: DelayDuration('Added delay, e.g. "100ms" (1ms to 1m)'),
      jitter: Type.Optional(DelayDuration('Random variation, uniform in latency ± jitter (at most latency)')),
      correlation: Type.Optional(
        Type.Number({ minimum: 0, maximum: 100, description: "Percent by which each packet's jitter depends on the previous one's (needs jitter)" }),
      ),
      direction: DirectionField('egress'),
      mechanism: Type.Optional(
        Type.Enum(['auto', 'netem', 'nfqueue'], { description: 'Default auto: netem for egress where the kernel has sch_netem, NFQUEUE otherwise' }),
      ),
      ...NetworkFilterFields,
    },
    { additionalProperties: false, title: 'network-delay' },
  ),
  example: { latency: '100ms' },
})
