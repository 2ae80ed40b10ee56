import { Type } from 'typebox'
import { FaultlineError } from './errors.js'

/**
 * Sizes, the one grammar every kind uses (stress-memory, stress-io, disk-fill, network-bandwidth's
 * burst and limit): a number, an optional space, an optional unit. Always bytes, never bits.
 *
 *   KiB MiB GiB TiB PiB   1024-based (IEC), and so are the bare K M G T P (as dd, fallocate -l
 *                         and df -h read them)
 *   KB  MB  GB  TB  PB    1000-based (SI): "100MB" is 100,000,000 bytes, as on a disk's label
 *   B, or no unit         bytes
 *
 * Case does not matter ("kb" is kB, 1000 bytes). Fractions are allowed ("1.5GiB") and rounded to
 * whole bytes. Units of bits ("Mbit") are refused: rates of network-bandwidth have their own
 * grammar (bit, kbit, mbit, gbit). Documented in docs/faults.md#sizes.
 */
export const SIZE_PATTERN = '^[0-9]{1,16}(?:\\.[0-9]{1,6})? ?(?:[KkMmGgTtPp](?:[Ii]?[Bb])?|[Bb])?$'
/** A size, or a percentage ("25%", "0.5%") of something the kind names. */
export const SIZE_OR_PERCENT_PATTERN = `^(?:${SIZE_PATTERN.slice(1, -1)}|[0-9]{1,3}(?:\\.[0-9]{1,2})?%)$`

const SIZE_HELP = 'a number with B, KiB, MiB, GiB, TiB (1024-based; K, M, G, T too) or KB, MB, GB, TB (1000-based), e.g. "512MiB" or "1.5GB"'

/** A size field of a fault spec, with the grammar in its description. */
export const SizeField = (description: string, examples?: string[]) =>
  Type.String({ pattern: SIZE_PATTERN, maxLength: 32, description: `${description}. Sizes: ${SIZE_HELP}`, ...(examples ? { examples } : {}) })

/** A size-or-percentage field of a fault spec. */
export const SizeOrPercentField = (description: string, examples?: string[]) =>
  Type.String({ pattern: SIZE_OR_PERCENT_PATTERN, maxLength: 32, description: `${description}. Sizes: ${SIZE_HELP}`, ...(examples ? { examples } : {}) })

const powers: Record<string, number> = { k: 1, m: 2, g: 3, t: 4, p: 5 }
const sizeRe = /^([0-9]+(?:\.[0-9]+)?) ?(?:([kmgtp])(i?b)?|b)?$/i

/** "512MiB" -> 536870912, "100MB" -> 100000000, "4096" -> 4096. Throws FAULTLINE_ERR_VALIDATION naming `what`. */
export function parseSize(text: string, what = 'size'): number {
  const m = sizeRe.exec(text.trim())
  if (!m) {
    const bits = /bit|bps/i.test(text) ? ' (sizes are bytes; a rate in bits belongs in network-bandwidth\'s rate)' : ''
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `${what} "${text}" is not a size${bits}: write ${SIZE_HELP}`)
  }
  const unit = m[2]?.toLowerCase()
  const base = unit && m[3]?.toLowerCase() === 'b' ? 1000 : 1024
  const bytes = Math.round(Number(m[1]) * (unit ? base ** powers[unit]! : 1))
  if (!Number.isSafeInteger(bytes)) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `${what} "${text}" is too large`)
  return bytes
}

/** "64MiB" -> bytes; "1%" -> that share of `totalBytes`, rounded up. Percentages above 100 are refused. */
export function parseSizeOrPercent(text: string, totalBytes: number, what = 'size'): number {
  const pct = /^([0-9]+(?:\.[0-9]+)?)%$/.exec(text.trim())
  if (!pct) return parseSize(text, what)
  const p = Number(pct[1])
  if (p > 100) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `${what} "${text}" is more than 100 %`)
  return Math.ceil((p / 100) * totalBytes)
}

/** 1073741824 -> "1 GiB", 1500 -> "1.46 KiB": sizes in plans and messages, always 1024-based. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let value = bytes
  let i = 0
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024
    i++
  }
  const text = i === 0 ? String(value) : value.toFixed(2).replace(/\.?0+$/, '')
  return `${text} ${units[i]}`
}
