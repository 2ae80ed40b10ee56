import { FaultlineError } from '../../../protocol/errors.js'

/**
 * Byte sizes as people write them. K, M, G, T and KiB, MiB, GiB, TiB are 1024-based (as in
 * fallocate -l and df -h); KB, MB, GB, TB are 1000-based; no unit (or B) means bytes. Case does
 * not matter: these are always bytes, never bits.
 */
export const SIZE_PATTERN = '^[0-9]+(\\.[0-9]+)?\\s*([KkMmGgTt]([Ii]?[Bb])?|[Bb])?$'
/** A size, or a percent of the filesystem ("1%", "0.5%"). */
export const SIZE_OR_PERCENT_PATTERN = '^([0-9]+(\\.[0-9]+)?\\s*([KkMmGgTt]([Ii]?[Bb])?|[Bb])?|[0-9]+(\\.[0-9]+)?%)$'

const powers: Record<string, number> = { k: 1, m: 2, g: 3, t: 4 }

export function parseSize(text: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*(?:([kmgt])(i?b)?|b)?$/i.exec(text.trim())
  if (!m) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `"${text}" is not a size; write e.g. 512MiB, 2GiB, 1.5G or 100MB`)
  const value = Number(m[1])
  const unit = m[2]?.toLowerCase()
  const base = unit && m[3]?.toLowerCase() === 'b' ? 1000 : 1024
  const bytes = Math.round(value * (unit ? base ** powers[unit]! : 1))
  if (!Number.isSafeInteger(bytes)) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `size "${text}" is too large`)
  return bytes
}

/** "64MiB" -> bytes; "1%" -> that share of `totalBytes`. */
export function parseSizeOrPercent(text: string, totalBytes: number): number {
  const pct = /^([0-9]+(?:\.[0-9]+)?)%$/.exec(text.trim())
  if (!pct) return parseSize(text)
  const p = Number(pct[1])
  if (p > 100) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `"${text}" is more than 100 %`)
  return Math.ceil((p / 100) * totalBytes)
}

/** 1073741824 -> "1 GiB", 1500 -> "1.46 KiB": for plans and messages. */
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
