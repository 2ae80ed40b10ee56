import { CorrelationField, PercentField } from '../shared/netem.js'
import { netemOnlyKind } from '../shared/netem-only.js'

/** Flips a random bit in a share of the matching packets (netem corrupt). */
export const networkCorrupt = netemOnlyKind({
  kind: 'network-corrupt',
  summary: 'Corrupt a percentage of packets leaving a device (netem only)',
  extra: { percent: PercentField('corrupt'), correlation: CorrelationField },
  netem: (s) => ({ corrupt: { percent: s.percent, ...(s.correlation ? { correlation: s.correlation } : {}) } }),
})
