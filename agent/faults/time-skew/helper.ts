import { existsSync } from 'node:fs'
import type { Feature } from '../../../protocol/capabilities.js'
import { run } from '../../exec.js'
import { defaultHostPaths, type HostPaths } from '../../host-paths.js'
import { nativePath } from '../../native/paths.js'
import { readMaps } from '../../targets/procfs.js'
import {
  ENTRY_BYTES,
  JMP_LEN,
  VdsoError,
  candidatePages,
  inspectVdsoSync,
  parseVdsoImage,
  readMemory,
  reusablePage,
  vdsoFunctions,
  vdsoMapping,
  type InspectResult,
  type VdsoFunction,
} from './vdso.js'

export { vdsoFunctions, type InspectResult, type VdsoFunction } from './vdso.js'

/**
 * faultline-timeskew (native/timeskew): the short-lived process that stops a target's threads
 * with ptrace, writes the page and the jumps (or the original bytes back), and detaches. Every
 * address and byte it gets is decided here, from the process's maps and vDSO (vdso.ts); the
 * helper only checks, with the threads stopped, that memory still holds what it is told.
 */
export const TIMESKEW_HELPER = 'faultline-timeskew'

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

/** Why a skew or a restore was refused (the helper's codes, and what vdso.ts finds out first). */
export type HelperErrorCode =
  | 'gone'
  | 'traced'
  | 'no-vdso'
  | 'unsupported-vdso'
  | 'vdso-moved'
  | 'mismatch'
  /** The entry already jumps into a Faultline page: another time-skew injection holds it. */
  | 'skewed'
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

/** VdsoError -> TimeskewHelperError, so callers handle one kind of refusal. */
function refusal<T>(work: () => T): T {
  try {
    return work()
  } catch (err) {
    if (err instanceof VdsoError) throw new TimeskewHelperError(err.code, err.message)
    throw err
  }
}

/** Runs the helper; resolves with the words of its `ok` line, rejects with its `err` line. */
async function runHelper(args: string[]): Promise<string[]> {
  const path = timeskewHelperPath()
  let res
  try {
    res = await run([path, ...args], { timeoutMs: HELPER_TIMEOUT_MS, env: { LC_ALL: 'C' } })
  } catch (err) {
    throw new TimeskewHelperError('crashed', `${TIMESKEW_HELPER} could not be started (${(err as Error).message}); run "npm run build"`)
  }
  const line = res.stdout.trim().split('\n').pop() ?? ''
  const [word, ...rest] = line.split(' ')
  if (word === 'ok' && res.code === 0) return rest
  if (word === 'err' && res.code === 1) {
    const [code, ...message] = rest
    throw new TimeskewHelperError((code ?? 'failed') as HelperErrorCode, message.join(' ') || (code ?? 'refused'))
  }
  const how = res.signal ? `was killed by ${res.signal}` : `exited ${res.code}`
  throw new TimeskewHelperError('crashed', `${TIMESKEW_HELPER} ${args[0]} ${args[1]} ${how} without a result: ${res.stderr.trim().slice(0, 300)}`)
}

/** A process's vDSO as it is now (read only). */
export async function inspectVdso(pid: number | 'self', paths: Pick<HostPaths, 'procRoot'> = defaultHostPaths): Promise<InspectResult> {
  return refusal(() => inspectVdsoSync(pid, paths))
}

export interface InjectResult {
  threads: number
  page: string
  pageReused: boolean
  /** The 5 bytes now at each address (read back after the helper returned). */
  patched: string[]
}

export interface PatchRequest {
  symbol: VdsoFunction
  /** The function's entry in the process (its [vdso] start + the function's offset). */
  address: string
  /** The unpatched bytes there (ENTRY_BYTES of them, hex): checked, and written back at recovery. */
  original: string
}

const hex = (n: bigint) => `0x${n.toString(16)}`

/**
 * Redirects the process's vDSO functions to a Faultline page that adds `offsetNs` to the clocks
 * in `clockMask`. The process's own image says where its syscall instruction is and confirms it
 * is an x86-64 vDSO with the functions where the journal says; its maps give a page to reuse or
 * the free pages to try, nearest first.
 */
export async function injectSkew(
  paths: Pick<HostPaths, 'procRoot'>,
  pid: number,
  startTime: number,
  vdso: string,
  offsetNs: string,
  clockMask: number,
  patches: readonly PatchRequest[],
): Promise<InjectResult> {
  const args = refusal(() => {
    const maps = readMaps(paths.procRoot, pid)
    if (!maps || maps.length === 0) throw new VdsoError('gone', `process ${pid} has no mappings (it exited)`)
    const mapping = vdsoMapping(maps)
    if (!mapping) throw new VdsoError('no-vdso', `process ${pid} has no [vdso] mapping (vdso=0 on the kernel command line?)`)
    if (mapping.start !== BigInt(vdso)) throw new TimeskewHelperError('vdso-moved', `the [vdso] of ${pid} is at ${hex(mapping.start)}, not ${vdso} (it exec'd)`)
    const image = parseVdsoImage(readMemory(paths, pid, mapping.start, Number(mapping.end - mapping.start)))
    if (image.syscallOffset === undefined) throw new VdsoError('unsupported-vdso', `the vDSO of ${pid} holds no syscall instruction to run mmap with`)
    for (const p of patches) {
      const offset = image.offsets[p.symbol]
      if (offset === undefined) throw new VdsoError('unsupported-vdso', `the vDSO of ${pid} does not export ${p.symbol}`)
      if (mapping.start + BigInt(offset) !== BigInt(p.address)) throw new VdsoError('unsupported-vdso', `the vDSO of ${pid} is not this kernel's 64-bit vDSO (${p.symbol} at another offset)`)
    }
    const cgt = patches.find((p) => p.symbol === 'clock_gettime')
    if (!cgt) throw new Error('time-skew always redirects clock_gettime')
    const ordered = [cgt, ...patches.filter((p) => p !== cgt)]
    const reuse = reusablePage(paths, pid, maps, mapping.start) ?? 0n
    const pages = candidatePages(maps, mapping.start)
    return [
      String(startTime),
      offsetNs,
      String(clockMask),
      hex(mapping.start + BigInt(image.syscallOffset)),
      String(image.displaced),
      hex(reuse),
      pages.map(hex).join(','),
      ...ordered.map((p) => `${vdsoFunctions.indexOf(p.symbol)}:${p.address}:${p.original}`),
    ]
  })
  const [page, reused, threads] = await runHelper(['inject', String(pid), ...args])
  const patched = patches.map((p) => {
    try {
      return readMemory(paths, pid, BigInt(p.address), JMP_LEN).toString('hex')
    } catch {
      return ''
    }
  })
  return { page: page!, pageReused: reused === '1', threads: Number(threads), patched }
}

export interface RestoreResult {
  threads: number
  /** restored: some bytes were written back; clean: nothing of ours was there; foreign: bytes that are neither ours nor the original; vdso-moved: the process exec'd. */
  result: 'restored' | 'clean' | 'foreign' | 'vdso-moved'
}

/** Writes `original` back at each address where our jump is; leaves anything else alone. */
export async function restoreSkew(
  paths: Pick<HostPaths, 'procRoot'>,
  pid: number,
  startTime: number,
  vdso: string,
  patches: readonly { address: string; original: string }[],
): Promise<RestoreResult> {
  const mapping = vdsoMapping(readMaps(paths.procRoot, pid) ?? [])
  // exec replaced the whole address space: nothing of ours is left in it.
  if (!mapping || mapping.start !== BigInt(vdso)) return { threads: 0, result: 'vdso-moved' }
  for (const p of patches) {
    const at = BigInt(p.address)
    if (at < mapping.start || at + BigInt(p.original.length / 2) > mapping.end) {
      throw new TimeskewHelperError('failed', `address ${p.address} is outside the [vdso] of ${pid}`)
    }
  }
  const [threads, ...results] = await runHelper(['restore', String(pid), String(startTime), ...patches.map((p) => `${p.address}:${p.original}`)])
  const result = results.includes('restored')
    ? 'restored'
    : results.includes('foreign')
      ? 'foreign'
      : results.length > 0 && results.every((r) => r === 'unmapped')
        ? 'vdso-moved'
        : 'clean'
  return { threads: Number(threads), result }
}

/** The unpatched vDSO of this kernel: the same image, so the same offsets and bytes, in every 64-bit process. */
export interface PristineVdso {
  relocation: 'displaced' | 'syscall'
  functions: Record<VdsoFunction, { offset: number; bytes: string }>
}

let pristine: PristineVdso | undefined

/** Read once from the agent's own vDSO (the agent never skews itself). */
export function pristineVdso(): Promise<PristineVdso> {
  return Promise.resolve().then(() => {
    pristine ??= refusal(() => {
      const r = inspectVdsoSync('self')
      const functions = {} as PristineVdso['functions']
      for (const name of vdsoFunctions) {
        const sym = r.symbols.find((s) => s.symbol === name)
        if (!sym) throw new TimeskewHelperError('unsupported-vdso', `this kernel's vDSO does not export ${name}`)
        if (sym.bytes.length !== ENTRY_BYTES * 2) throw new TimeskewHelperError('unsupported-vdso', `${name} is too close to the end of the vDSO`)
        functions[name] = { offset: sym.offset, bytes: sym.bytes }
      }
      return { relocation: r.relocation, functions }
    })
    return pristine
  })
}

/** Adds a byte offset to a hex address ("0x7f..."), exactly (BigInt). */
export function addressAt(base: string, offset: number): string {
  return `0x${(BigInt(base) + BigInt(offset)).toString(16)}`
}

/**
 * Capability probe: x86-64, the helper built and runnable, and this kernel's vDSO understood
 * (clock_gettime, gettimeofday and time found, a syscall instruction to map the page with).
 */
export async function probeTimeskewHelper(): Promise<Feature> {
  if (process.arch !== 'x64') {
    return { available: false, detail: `time-skew patches the x86-64 vDSO; this host is ${process.arch}, for which ${TIMESKEW_HELPER} is not implemented` }
  }
  const path = timeskewHelperPath()
  if (!existsSync(path)) return { available: false, detail: `${path} is not built: run "npm run build" (needs gcc and make)` }
  // Without arguments it prints its usage and exits 2: it runs on this host.
  const usage = await run([path], { timeoutMs: 10_000 }).catch((err: Error) => ({ code: null, stderr: err.message }))
  if (usage.code !== 2 || !/usage:/.test(usage.stderr)) return { available: false, detail: `${path} does not run here: ${usage.stderr.trim().slice(0, 200) || `exit ${usage.code}`}` }
  try {
    const r = inspectVdsoSync('self')
    const missing = vdsoFunctions.filter((f) => !r.symbols.some((s) => s.symbol === f))
    if (missing.length > 0) return { available: false, detail: `this kernel's vDSO lacks ${missing.join(', ')}` }
    if (r.syscallOffset === undefined) return { available: false, detail: "this kernel's vDSO holds no syscall instruction to map the page with" }
    const how =
      r.relocation === 'displaced'
        ? `the skewed clock_gettime calls the real vDSO (its first ${r.displaced} bytes relocated)`
        : 'the skewed clock_gettime reads the real clock with the clock_gettime syscall (its vDSO prologue is not relocatable): slower'
    return { available: true, detail: `${path} is built and this kernel's vDSO is understood; ${how}` }
  } catch (err) {
    return { available: false, detail: `this kernel's vDSO could not be read: ${(err as Error).message}` }
  }
}
