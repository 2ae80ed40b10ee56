import { Type } from 'typebox'
import { SizeField } from '../units.js'
import { defineFaultSpec } from './define.js'
import { DEVICE_PATTERN, DirectionField, NetworkFilterFields, networkKindTargets } from './fields.js'

/**
 * Rates are bits per second with tc's decimal bit units. tc's "bps"/"kbps" units mean BYTES per
 * second, which users routinely read as bits: the pattern recognises them only so that the agent
 * can refuse them with a message saying so, rather than "1mbps" silently becoming 8 Mbit/s.
 */
export const RATE_PATTERN = '^(0|[1-9][0-9]{0,11})(\\.[0-9]{1,6})?([kKmMgG])?(bit|bps)$'
export const LATENCY_PATTERN = '^[1-9][0-9]{0,5}(us|ms|s)$'

// Bandwidth slows a device down but cuts no link, so it has no control-channel exemption (see
// agent/faults/network-bandwidth); `device` has its own meaning here (the device to shape).
const { protectControlChannel: _noExemption, device: _device, ...FilterFields } = NetworkFilterFields

export const networkBandwidthSpec = defineFaultSpec({
  kind: 'network-bandwidth',
  summary: 'Limit bandwidth on a device: tbf (egress), IFB + mirred + tbf (ingress), htb for peers/ports',
  targets: networkKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('network-bandwidth'),
      rate: Type.String({
        pattern: RATE_PATTERN,
        maxLength: 24,
        description: 'Rate in bits per second: bit, kbit, mbit, gbit (1000-based, as tc), e.g. "1mbit", "500kbit"; 8kbit..100gbit. tc\'s bps/kbps (bytes per second) are not accepted',
        examples: ['1mbit', '500kbit', '10mbit'],
      }),
      burst: Type.Optional(SizeField('Token bucket size. Default max(10 ms of traffic, 2 frames)', ['32KiB'])),
      limit: Type.Optional(SizeField('Queue size; packets beyond it are dropped. Default burst + max(100 ms of traffic, 8 frames). Not with latency', ['64KiB'])),
      latency: Type.Optional(
        Type.String({ pattern: LATENCY_PATTERN, maxLength: 16, description: 'Longest a packet may wait in the queue (us, ms, s): limit = burst + rate × latency. Not with limit' }),
      ),
      direction: DirectionField('egress'),
      device: Type.Optional(Type.String({ pattern: DEVICE_PATTERN, description: 'Interface to shape. Default: the device of the route to the peers, or of the default route' })),
      ...FilterFields,
    },
    { additionalProperties: false, title: 'network-bandwidth' },
  ),
  example: { rate: '1mbit' },
})
