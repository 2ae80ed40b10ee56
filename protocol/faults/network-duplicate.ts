import { defineFaultSpec } from './define.js'
import { CorrelationField, PercentField } from './fields.js'
import { netemOnlySchema, netemOnlyTargets } from './netem-only.js'

export const networkDuplicateSpec = defineFaultSpec({
  kind: 'network-duplicate',
  summary: 'Duplicate a percentage of packets leaving a device (netem only)',
  targets: netemOnlyTargets,
  recoverable: true,
  specSchema: netemOnlySchema('network-duplicate', { percent: PercentField('duplicate'), correlation: CorrelationField }),
  example: { percent: 30 },
})
