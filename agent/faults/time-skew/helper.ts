import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { Feature } from '../../../protocol/capabilities.js'
import { run } from '../../exec.js'
import { nativePath } from '../../native/paths.js'

/**
 * faultline-timeskew (native/timeskew): the short-lived process that stops a target's threads
 * with ptrace, patches or restores its vDSO, detaches and prints one JSON line. All decisions
 * (which processes, clocks, offset) are made here in TypeScript; the helper only does what its
 * argv says and checks the bytes it is told to expect.
 */
export const TIMESKEW_HELPER = 'faultline-timeskew'

/** The vDSO functions the helper can redirect, in the order the plan lists them. */
export const vdsoFunctions = ['clock_gettime', 'gettimeofday', 'time'] as const
export type VdsoFunction = (typeof vdsoFunctions)[number]

/**
 * Longest a helper run may take before the agent gives up on it (its own waits are bounded:
 * 2 s per thread to stop, 200 retries of 1 ms when a thread sits on a function entry). It is
 * killed only then: a helper killed mid-run detaches (the kernel does that for a dead tracer).
 */
const HELPER_TIMEOUT_MS = 60_000

/** <package root>/native/timeskew/faultline-timeskew. */
export function timeskewHelperPath(): string {
  return nativePath('timeskew', TIMESKEW_HELPER)
}

/** Why the helper refused, as it reports it (see native/timeskew/timeskew.c). */
export type HelperErrorCode =
  | 'gone'
  | 'traced'
  | 'no-vdso'
  | 'unsupported-vdso'
  | 'vdso-moved'
  | 'mismatch'
  | 'busy'
  | 'no-room'
  | 'timeout'
  | 'failed'
  /** The helper died, printed nothing usable, or could not be started: its outcome is unknown. */
  | 'crashed'

export class TimeskewHelperError extends Error {
  readonly code: HelperErrorCode
  constructor(code: HelperErrorCode, message: string) {
    super(message)
    this.name = 'TimeskewHelperError'
    this.code = code
  }
}

export interface InspectResult {
  ok: true
  pid: number
  vdso: string
  vdsoEnd: string
  relocation: 'displaced' | 'syscall'
  displaced: number
  symbols: { symbol: VdsoFunction; address: string; offset: number; bytes: string; ours: boolean; page?: string }[]
}

export interface InjectResult {
  ok: true
  pid: number
  threads: number
  vdso: string
  page: string
  pageReused: boolean
  relocation: 'displaced' | 'syscall'
  displaced: number
  patches: { symbol: VdsoFunction; address: string; original: string; patched: string }[]
}

export interface RestoreResult {
  ok: true
  pid: number
  threads: number
  /** restored: some bytes were written back; clean: nothing of ours was there; foreign: bytes that are neither ours nor the original; vdso-moved: the process exec'd. */
  result: 'restored' | 'clean' | 'foreign' | 'vdso-moved'
  patches: { address: string; result: 'restored' | 'clean' | 'foreign' }[]
}

async function runHelper<T>(args: string[]): Promise<T> {
  const path = timeskewHelperPath()
  let res
  try {
    res = await run([path, ...args], { timeoutMs: HELPER_TIMEOUT_MS, env: { LC_ALL: 'C' } })
  } catch (err) {
    throw new TimeskewHelperError('crashed', `${TIMESKEW_HELPER} could not be started (${(err as Error).message}); run "npm run build"`)
  }
  const line = res.stdout.trim().split('\n').pop() ?? ''
  let parsed: { ok?: boolean; error?: HelperErrorCode; message?: string } | undefined
  try {
    parsed = JSON.parse(line) as typeof parsed
  } catch {
    parsed = undefined
  }
  if (parsed?.ok === true) return parsed as T
  if (parsed?.ok === false && parsed.error) throw new TimeskewHelperError(parsed.error, parsed.message ?? parsed.error)
  const how = res.signal ? `was killed by ${res.signal}` : `exited ${res.code}`
  throw new TimeskewHelperError('crashed', `${TIMESKEW_HELPER} ${args[0]} ${args[1]} ${how} without a result: ${res.stderr.trim().slice(0, 300)}`)
}

export const inspectVdso = (pid: number | 'self') => runHelper<InspectResult>(['inspect', String(pid)])

/**
 * Redirects `functions` of the process (pid, startTime)'s vDSO (which must start at `vdso`; each entry must hold exactly
 * its `bytes`) to replacements that add `offsetNs` to the clocks in `clockMask`.
 */
export function injectSkew(
  pid: number,
  startTime: number,
  vdso: string,
  offsetNs: string,
  clockMask: number,
  functions: { symbol: VdsoFunction; bytes: string }[],
): Promise<InjectResult> {
  return runHelper<InjectResult>(['inject', String(pid), String(startTime), vdso, offsetNs, String(clockMask), ...functions.map((f) => `${f.symbol}=${f.bytes}`)])
}

/** Writes `original` back at each address where our jump is; leaves anything else alone. */
export function restoreSkew(pid: number, startTime: number, vdso: string, patches: { address: string; original: string }[]): Promise<RestoreResult> {
  return runHelper<RestoreResult>(['restore', String(pid), String(startTime), vdso, ...patches.map((p) => `${p.address}=${p.original}`)])
}

/** The unpatched vDSO of this kernel: the same image, so the same offsets and bytes, in every 64-bit process. */
export interface PristineVdso {
  relocation: 'displaced' | 'syscall'
  functions: Record<VdsoFunction, { offset: number; bytes: string }>
}

let pristine: Promise<PristineVdso> | undefined

/** Read once from the helper's own fresh vDSO (nobody has patched a process that just started). */
export function pristineVdso(): Promise<PristineVdso> {
  pristine ??= inspectVdso('self').then((r) => {
    const functions = {} as PristineVdso['functions']
    for (const name of vdsoFunctions) {
      const sym = r.symbols.find((s) => s.symbol === name)
      if (!sym) throw new TimeskewHelperError('unsupported-vdso', `this kernel's vDSO does not export ${name}`)
      functions[name] = { offset: sym.offset, bytes: sym.bytes }
    }
    return { relocation: r.relocation, functions }
  })
  pristine.catch(() => (pristine = undefined))
  return pristine
}

/** Adds a byte offset to a hex address ("0x7f..."), exactly (BigInt). */
export function addressAt(base: string, offset: number): string {
  return `0x${(BigInt(base) + BigInt(offset)).toString(16)}`
}

/**
 * Capability probe: x86-64, the helper built, and this kernel's vDSO understood (the helper
 * parses its own: clock_gettime, gettimeofday and time found, clock_gettime's prologue relocatable).
 */
export async function probeTimeskewHelper(): Promise<Feature> {
  if (process.arch !== 'x64') {
    return { available: false, detail: `time-skew patches the x86-64 vDSO; this host is ${process.arch}, for which ${TIMESKEW_HELPER} is not implemented` }
  }
  const path = timeskewHelperPath()
  if (!existsSync(path)) return { available: false, detail: `${path} is not built: run "npm run build" (needs gcc and make)` }
  try {
    const r = await inspectVdso('self')
    const missing = vdsoFunctions.filter((f) => !r.symbols.some((s) => s.symbol === f))
    if (missing.length > 0) return { available: false, detail: `this kernel's vDSO lacks ${missing.join(', ')}` }
    const how =
      r.relocation === 'displaced'
        ? `the skewed clock_gettime calls the real vDSO (its first ${r.displaced} bytes relocated)`
        : 'the skewed clock_gettime reads the real clock with the clock_gettime syscall (its vDSO prologue is not relocatable): slower'
    return { available: true, detail: `${path} understands this kernel's vDSO; ${how}` }
  } catch (err) {
    return { available: false, detail: `${path} inspect self failed: ${(err as Error).message}` }
  }
}
