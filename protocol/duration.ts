import { Type } from 'typebox'
import { FaultlineError } from './errors.js'

/**
 * Durations on the wire are strings of whole numbers with units, largest first:
 * "500ms", "30s", "5m", "1h30m", "2h". This is our own grammar (a schema pattern shared by the
 * agent, the server and the CLI), so it lives here rather than in a general-purpose parser
 * that would also accept "1 year" or bare numbers.
 */
const unitMs = { h: 3_600_000, m: 60_000, s: 1_000, ms: 1 } as const
type Unit = keyof typeof unitMs
const unitOrder: readonly Unit[] = ['h', 'm', 's', 'ms']

export const DURATION_PATTERN = '^(?:[0-9]{1,9}(?:ms|h|m|s))+$'
const partRe = /([0-9]{1,9})(ms|h|m|s)/g
const wholeRe = new RegExp(DURATION_PATTERN)

export const DurationSchema = Type.String({
  pattern: DURATION_PATTERN,
  maxLength: 32,
  description: 'Whole numbers with units, largest first: "500ms", "30s", "5m", "1h30m"',
  examples: ['30s', '5m', '1h30m'],
})

/** Parses a duration; throws FAULTLINE_ERR_BAD_DURATION with a message that shows the grammar. */
export function parseDuration(text: string): number {
  if (typeof text !== 'string' || text.length > 32 || !wholeRe.test(text)) {
    throw new FaultlineError(
      'FAULTLINE_ERR_BAD_DURATION',
      `invalid duration ${JSON.stringify(String(text).slice(0, 40))}: use whole numbers with units h, m, s, ms, largest first, e.g. "30s", "5m" or "1h30m"`,
    )
  }
  let total = 0
  let lastRank = -1
  for (const match of text.matchAll(partRe)) {
    const unit = match[2] as Unit
    const rank = unitOrder.indexOf(unit)
    if (rank <= lastRank) {
      throw new FaultlineError(
        'FAULTLINE_ERR_BAD_DURATION',
        `invalid duration "${text}": each unit may appear once, largest first (h, m, s, ms)`,
      )
    }
    lastRank = rank
    total += Number(match[1]) * unitMs[unit]
  }
  if (!Number.isSafeInteger(total)) {
    throw new FaultlineError('FAULTLINE_ERR_BAD_DURATION', `duration "${text}" is too large`)
  }
  return total
}

/** Formats milliseconds in the same grammar, e.g. 5400000 -> "1h30m". */
export function formatDuration(durationMs: number): string {
  if (!Number.isFinite(durationMs) || durationMs <= 0) return '0s'
  let rest = Math.round(durationMs)
  let out = ''
  for (const unit of unitOrder) {
    const n = Math.floor(rest / unitMs[unit])
    if (n > 0) {
      out += `${n}${unit}`
      rest -= n * unitMs[unit]
    }
  }
  return out
}
