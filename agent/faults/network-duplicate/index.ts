import { networkDuplicateSpec } from '../../../protocol/faults/network-duplicate.js'
import { netemOnlyKind } from '../shared/netem-only.js'

/** Sends a share of the matching packets twice (netem duplicate). */
export const networkDuplicate = netemOnlyKind(networkDuplicateSpec, (s) => ({
  duplicate: { percent: s.percent, ...(s.correlation ? { correlation: s.correlation } : {}) },
}))
