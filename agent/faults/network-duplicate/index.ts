import { CorrelationField, PercentField } from '../shared/netem.js'
import { netemOnlyKind } from '../shared/netem-only.js'

/** Sends a share of the matching packets twice (netem duplicate). */
export const networkDuplicate = netemOnlyKind({
  kind: 'network-duplicate',
  summary: 'Duplicate a percentage of packets leaving a device (netem only)',
  extra: { percent: PercentField('duplicate'), correlation: CorrelationField },
  netem: (s) => ({ duplicate: { percent: s.percent, ...(s.correlation ? { correlation: s.correlation } : {}) } }),
})
