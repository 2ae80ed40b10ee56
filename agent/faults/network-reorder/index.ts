import { Type } from 'typebox'
import { DurationSchema, parseDuration } from '../../../protocol/duration.js'
import { CorrelationField, PercentField } from '../shared/netem.js'
import { netemOnlyKind } from '../shared/netem-only.js'

/**
 * Reorders packets the way netem does: `percent` of the matching packets leave at once while
 * the others wait `delay` (default 10ms), so the immediate ones overtake them.
 */
export const networkReorder = netemOnlyKind({
  kind: 'network-reorder',
  summary: 'Reorder a percentage of packets leaving a device (netem only)',
  extra: {
    percent: PercentField('send ahead of the others'),
    correlation: CorrelationField,
    delay: Type.Optional({ ...DurationSchema, description: 'How long the other packets wait (default 10ms)' }),
  },
  netem: (s) => ({
    reorder: {
      percent: s.percent,
      gapMs: Math.max(1, Math.round(parseDuration(typeof s.delay === 'string' ? s.delay : '10ms'))),
      ...(s.correlation ? { correlation: s.correlation } : {}),
    },
  }),
})
