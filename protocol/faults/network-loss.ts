import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'
import { CorrelationField, DirectionField, NetworkFilterFields, PercentField, networkKindTargets } from './fields.js'

export const networkLossSpec = defineFaultSpec({
  kind: 'network-loss',
  summary: 'Drop a percentage of matching packets (netem; nft numgen where netem is missing or for ingress)',
  targets: networkKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('network-loss'),
      percent: PercentField('drop'),
      correlation: CorrelationField,
      direction: DirectionField('egress'),
      ...NetworkFilterFields,
    },
    { additionalProperties: false, title: 'network-loss' },
  ),
  example: { percent: 30 },
})
