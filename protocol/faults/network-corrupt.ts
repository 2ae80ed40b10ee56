import { defineFaultSpec } from './define.js'
import { CorrelationField, PercentField } from './fields.js'
import { netemOnlySchema, netemOnlyTargets } from './netem-only.js'

export const networkCorruptSpec = defineFaultSpec({
  kind: 'network-corrupt',
  summary: 'Corrupt a percentage of packets leaving a device (netem only)',
  targets: netemOnlyTargets,
  recoverable: true,
  specSchema: netemOnlySchema('network-corrupt', { percent: PercentField('corrupt'), correlation: CorrelationField }),
  example: { percent: 30 },
})
