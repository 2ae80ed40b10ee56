import { Type } from 'typebox'
import { DurationSchema } from '../duration.js'
import { defineFaultSpec } from './define.js'
import { CorrelationField, PercentField } from './fields.js'
import { netemOnlySchema, netemOnlyTargets } from './netem-only.js'

/** How long the packets that are not sent ahead wait, when the spec does not say. */
export const DEFAULT_REORDER_DELAY = '10ms'

export const networkReorderSpec = defineFaultSpec({
  kind: 'network-reorder',
  summary: 'Reorder a percentage of packets leaving a device (netem only)',
  targets: netemOnlyTargets,
  recoverable: true,
  specSchema: netemOnlySchema('network-reorder', {
    percent: PercentField('send ahead of the others'),
    correlation: CorrelationField,
    delay: Type.Optional({ ...DurationSchema, description: `How long the other packets wait (default ${DEFAULT_REORDER_DELAY})` }),
  }),
  example: { percent: 30 },
})
