import { FaultlineError } from '../../../protocol/errors.js'
import { LATENCY_PATTERN, RATE_PATTERN } from '../../../protocol/faults/network-bandwidth.js'
import { parseSize } from '../../../protocol/units.js'

/**
 * Rates and latencies of network-bandwidth (their patterns are in the spec,
 * protocol/faults/network-bandwidth.ts; sizes are protocol/units.ts's one grammar), normalised
 * to integers before anything reaches tc, so the plan shows exact numbers and tc never has to
 * guess.
 */

export const MIN_RATE_BPS = 8_000
export const MAX_RATE_BPS = 100_000_000_000

const rateUnits: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9 }

/** "1mbit", "1.5Mbit", "500kbit", "10gbit" -> bits per second (integer). */
export function parseRate(text: string): number {
  const m = new RegExp(RATE_PATTERN).exec(text)
  if (!m) {
    throw new FaultlineError(
      'FAULTLINE_ERR_VALIDATION',
      `rate "${text}" is not a rate: write a number with bit, kbit, mbit or gbit, e.g. "1mbit" or "500kbit"`,
    )
  }
  const value = Number(`${m[1]}${m[2] ?? ''}`) * rateUnits[(m[3] ?? '').toLowerCase()]!
  if (m[4] === 'bps') {
    const prefix = (m[3] ?? '').toLowerCase()
    const word = ({ '': '', k: 'kilo', m: 'mega', g: 'giga' } as Record<string, string>)[prefix]
    throw new FaultlineError(
      'FAULTLINE_ERR_VALIDATION',
      `rate "${text}": tc reads ${prefix}bps as ${word}bytes per second, not ${word}bits; write "${m[1]}${m[2] ?? ''}${prefix}bit" for ${word}bits per second, or "${formatRate(Math.round(value * 8))}" for ${m[1]}${m[2] ?? ''} ${word}bytes per second`,
    )
  }
  const bps = Math.round(value)
  if (bps < MIN_RATE_BPS || bps > MAX_RATE_BPS) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `rate "${text}" is outside 8kbit..100gbit`)
  }
  return bps
}

/** 1000000 -> "1mbit", 1500000 -> "1500kbit", 8123 -> "8123bit": the largest exact unit. */
export function formatRate(bps: number): string {
  for (const [unit, mult] of [['g', 1e9], ['m', 1e6], ['k', 1e3]] as const) {
    if (bps % mult === 0) return `${bps / mult}${unit}bit`
  }
  return `${bps}bit`
}

const latencyUnitsUs: Record<string, number> = { us: 1, ms: 1_000, s: 1_000_000 }

/** "50ms" -> 50000 microseconds. */
export function parseLatencyUs(text: string): number {
  const m = new RegExp(LATENCY_PATTERN).exec(text)
  if (!m) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `latency "${text}" is not a latency: write e.g. "50ms" or "1s"`)
  return Number(text.slice(0, -m[1]!.length)) * latencyUnitsUs[m[1]!]!
}

/** The qdisc counts a frame with its Ethernet header: MTU + 14 bytes. */
export const L2_HEADER_BYTES = 14
export const DEFAULT_BURST_MS = 10
export const DEFAULT_LATENCY_MS = 100
export const MIN_QUEUE_FRAMES = 8
/** tbf's limit is a 32-bit byte count. */
const MAX_LIMIT_BYTES = 0xffff_ffff
/** tc stores the bucket as a 32-bit time in 64 ns ticks (~274 s): stay well below that. */
const MAX_BURST_SECONDS = 60
const MAX_LATENCY_US = 10_000_000

export interface Shaping {
  rateBps: number
  burstBytes: number
  limitBytes: number
}

/**
 * The token bucket for a rate on a device with this MTU. Defaults (documented in docs/faults.md):
 *
 *   frame = MTU + 14
 *   burst = max(rate × 10 ms, 2 × frame)       — 10 ms of traffic absorbs timer slack at high
 *                                                 rates; a bucket smaller than a frame would
 *                                                 never pass a full-size frame
 *   limit = burst + max(rate × 100 ms, 8 × frame) — about 100 ms of queue, never fewer than 8
 *                                                  frames: with less, TCP through the shaper
 *                                                  loses whole windows and idles in
 *                                                  retransmission timeouts (measured, 2mbit
 *                                                  ingress: with 50 ms one run in four got
 *                                                  1.58 Mbit/s of TCP payload; with 100 ms all
 *                                                  four got 1.91, i.e. 1448/1514 of the rate)
 *   with latency given: limit = burst + rate × latency (tc's own formula)
 */
export function shapingFor(spec: { rate: string; burst?: string; limit?: string; latency?: string }, mtu: number): Shaping {
  const rateBps = parseRate(spec.rate)
  const bytesPerSecond = rateBps / 8
  const frame = mtu + L2_HEADER_BYTES
  if (spec.limit !== undefined && spec.latency !== undefined) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'give limit (queue bytes) or latency (queue time), not both')
  }
  const burstBytes = spec.burst !== undefined ? parseSize(spec.burst, 'burst') : Math.max(Math.ceil((bytesPerSecond * DEFAULT_BURST_MS) / 1000), 2 * frame)
  if (burstBytes < frame) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `burst ${burstBytes} bytes is smaller than one frame of this device (${frame} bytes = MTU ${mtu} + 14): full-size packets would never pass; use at least ${frame}b`)
  }
  if (burstBytes > bytesPerSecond * MAX_BURST_SECONDS) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `burst ${burstBytes} bytes is more than ${MAX_BURST_SECONDS} s of traffic at ${formatRate(rateBps)}; lower it`)
  }
  let limitBytes: number
  if (spec.limit !== undefined) {
    limitBytes = parseSize(spec.limit, 'limit')
  } else if (spec.latency !== undefined) {
    const latencyUs = parseLatencyUs(spec.latency)
    if (latencyUs > MAX_LATENCY_US) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `latency ${spec.latency} is more than 10s`)
    limitBytes = burstBytes + Math.ceil((bytesPerSecond * latencyUs) / 1_000_000)
  } else {
    limitBytes = burstBytes + Math.max(Math.ceil((bytesPerSecond * DEFAULT_LATENCY_MS) / 1000), MIN_QUEUE_FRAMES * frame)
  }
  if (limitBytes < frame) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `limit ${limitBytes} bytes is smaller than one frame of this device (${frame} bytes): every full-size packet would be dropped`)
  }
  if (limitBytes > MAX_LIMIT_BYTES) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `the queue limit would be ${limitBytes} bytes, more than tc's 4 GiB; give a smaller latency or limit`)
  }
  return { rateBps, burstBytes, limitBytes }
}
