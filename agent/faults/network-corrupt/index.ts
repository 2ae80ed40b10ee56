import { networkCorruptSpec } from '../../../protocol/faults/network-corrupt.js'
import { netemOnlyKind } from '../shared/netem-only.js'

/** Flips a random bit in a share of the matching packets (netem corrupt). */
export const networkCorrupt = netemOnlyKind(networkCorruptSpec, (s) => ({
  corrupt: { percent: s.percent, ...(s.correlation ? { correlation: s.correlation } : {}) },
}))
