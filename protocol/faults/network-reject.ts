import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'
import { DirectionField, NetworkFilterFields, networkKindTargets } from './fields.js'

export const networkRejectSpec = defineFaultSpec({
  kind: 'network-reject',
  summary: 'Refuse connections to ports with a TCP reset or ICMP port-unreachable (nft reject)',
  targets: networkKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('network-reject'),
      with: Type.Optional(Type.Enum(['tcp-reset', 'icmp-unreachable'], { description: 'Default tcp-reset (TCP only); icmp-unreachable works for TCP and UDP' })),
      direction: DirectionField('both'),
      ...NetworkFilterFields,
    },
    { additionalProperties: false, title: 'network-reject' },
  ),
  example: {},
})
