import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'
import { DirectionField, NetworkFilterFields, networkKindTargets } from './fields.js'

export const networkPartitionSpec = defineFaultSpec({
  kind: 'network-partition',
  summary: 'Drop traffic to/from peers, ports or a device (nft table owned by the injection)',
  targets: networkKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    { kind: Type.Literal('network-partition'), direction: DirectionField('both'), ...NetworkFilterFields },
    { additionalProperties: false, title: 'network-partition' },
  ),
  example: {},
})
