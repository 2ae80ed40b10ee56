import { formatDuration, parseDuration } from '../../../protocol/duration.js'
import { FaultlineError } from '../../../protocol/errors.js'
import type { ClockName } from '../../../protocol/faults/time-skew.js'
import type { VdsoFunction } from './helper.js'

/** 50 years: keeps a backward realtime skew after 1970 and the offset in nanoseconds far from int64's edge. */
export const MAX_OFFSET_MS = 50 * 365 * 86_400_000

/** Parses a signed offset to milliseconds. */
export function parseOffset(text: string): number {
  const sign = text.startsWith('-') ? -1 : 1
  const body = text.startsWith('-') || text.startsWith('+') ? text.slice(1) : text
  let ms: number
  try {
    ms = parseDuration(body)
  } catch (err) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `invalid offset ${JSON.stringify(text)}: a sign and a duration, e.g. "-15m", "+2h" or "30s" (${(err as Error).message})`)
  }
  if (ms === 0) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `offset ${JSON.stringify(text)} is zero: it would skew nothing`)
  if (ms > MAX_OFFSET_MS) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `offset ${JSON.stringify(text)} is larger than ${formatDuration(MAX_OFFSET_MS)} (50 years)`)
  }
  return sign * ms
}

export function formatOffset(ms: number): string {
  return `${ms < 0 ? '-' : '+'}${formatDuration(Math.abs(ms))}`
}

/**
 * The Linux clock ids each clock name stands for (include/uapi/linux/time.h). A skew of
 * "realtime" also moves its coarse, alarm and TAI variants, so a program comparing them sees
 * one consistent clock; likewise for monotonic (raw, coarse) and boottime (alarm).
 */
export const clockIds: Record<ClockName, readonly number[]> = {
  realtime: [0 /* REALTIME */, 5 /* REALTIME_COARSE */, 8 /* REALTIME_ALARM */, 11 /* TAI */],
  monotonic: [1 /* MONOTONIC */, 4 /* MONOTONIC_RAW */, 6 /* MONOTONIC_COARSE */],
  boottime: [7 /* BOOTTIME */, 9 /* BOOTTIME_ALARM */],
}

/** Bit N set: clock id N is skewed (the replacement clock_gettime tests this mask). */
export function clockMask(clocks: readonly ClockName[]): number {
  let mask = 0
  for (const c of clocks) for (const id of clockIds[c]) mask |= 1 << id
  return mask
}

/** gettimeofday and time read CLOCK_REALTIME: they are redirected only when realtime is skewed. */
export function functionsFor(clocks: readonly ClockName[]): VdsoFunction[] {
  return clocks.includes('realtime') ? ['clock_gettime', 'gettimeofday', 'time'] : ['clock_gettime']
}

/** Milliseconds to the helper's signed nanoseconds, as a decimal string (beyond 2^53). */
export const offsetNanoseconds = (ms: number): string => (BigInt(ms) * 1_000_000n).toString()
