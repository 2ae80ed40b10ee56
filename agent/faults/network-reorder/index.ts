import { parseDuration } from '../../../protocol/duration.js'
import { DEFAULT_REORDER_DELAY, networkReorderSpec } from '../../../protocol/faults/network-reorder.js'
import { netemOnlyKind } from '../shared/netem-only.js'

/**
 * Reorders packets the way netem does: `percent` of the matching packets leave at once while
 * the others wait `delay` (default 10ms), so the immediate ones overtake them.
 */
export const networkReorder = netemOnlyKind(networkReorderSpec, (s) => ({
  reorder: {
    percent: s.percent,
    gapMs: Math.max(1, Math.round(parseDuration(s.delay ?? DEFAULT_REORDER_DELAY))),
    ...(s.correlation ? { correlation: s.correlation } : {}),
  },
}))
