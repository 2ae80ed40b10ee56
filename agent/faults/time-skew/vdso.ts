import { closeSync, openSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { OWN_PROC, defaultHostPaths, procPath, type HostPaths } from '../../host-paths.js'
import { readMaps, readMapsFile, type Mapping } from '../../targets/procfs.js'

/**
 * What time-skew needs to know about a process's vDSO, read in TypeScript from /proc: where the
 * [vdso] is (maps), where clock_gettime, gettimeofday and time start in it (its ELF dynamic
 * symbols), a `syscall` instruction the helper can run mmap with, how many of clock_gettime's
 * first bytes can move into the replacement page, which free pages lie within a rel32 jump, and
 * whether a Faultline page is already there. native/timeskew gets the answers as scalars.
 */

export const vdsoFunctions = ['clock_gettime', 'gettimeofday', 'time'] as const
export type VdsoFunction = (typeof vdsoFunctions)[number]

/** Why the vDSO cannot be used (the same codes the helper reports, see helper.ts). */
export class VdsoError extends Error {
  readonly code: 'gone' | 'no-vdso' | 'unsupported-vdso' | 'failed'
  constructor(code: VdsoError['code'], message: string) {
    super(message)
    this.name = 'VdsoError'
    this.code = code
  }
}

/** The first bytes of a Faultline page (native/timeskew/page.S): how our page is recognised. */
export const PAGE_MAGIC = Buffer.from('FLTSKEW1', 'latin1')
export const PAGE_BYTES = 4096n
export const JMP_LEN = 5
/** The page's real_clock_gettime stub is 32 bytes: displaced instructions plus a 5-byte jump back. */
const STUB_LEN = 32
/** Bytes of each function entry the journal keeps, and the helper checks before it writes. */
export const ENTRY_BYTES = 16
/** How far a page may lie from the vDSO: a rel32 jump, less a megabyte of margin. */
const REACH = (1n << 31n) - (1n << 20n)
const LOWEST = 0x10000n
const HIGHEST = 0x7ffffffff000n

// ---- the ELF image ------------------------------------------------------------------------------

export interface VdsoImage {
  /** Offset of each exported function in the image (= in the mapping: the image is mapped from 0). */
  offsets: Partial<Record<VdsoFunction, number>>
  /** Offset of the first `syscall` (0f 05). */
  syscallOffset: number | undefined
  /** Bytes of clock_gettime's prologue that can run from the page (0: use the clock_gettime syscall). */
  displaced: number
}

const PT_LOAD = 1
const SHT_DYNSYM = 11
const STT_FUNC = 2

/**
 * Parses an x86-64 vDSO image (ELF64): its first PT_LOAD and its dynamic symbol table give each
 * function's offset (st_value is a link-time address; the image is mapped from file offset 0).
 * The vDSO exports both __vdso_clock_gettime and clock_gettime; the __vdso_ name is preferred.
 */
export function parseVdsoImage(image: Buffer): VdsoImage {
  const bad = (what: string) => new VdsoError('unsupported-vdso', `the [vdso] ${what}`)
  if (image.length < 64 || image.readUInt32BE(0) !== 0x7f454c46) throw bad('is not an ELF image')
  if (image[4] !== 2 || image.readUInt16LE(18) !== 62) throw bad('is not x86-64 ELF64 (a 32-bit or x32 process)')
  const u64 = (at: number) => Number(image.readBigUInt64LE(at))
  const phoff = u64(32)
  const shoff = u64(40)
  const [phentsize, phnum, shentsize, shnum] = [54, 56, 58, 60].map((at) => image.readUInt16LE(at)) as [number, number, number, number]
  if (phentsize !== 56 || shentsize !== 64 || phoff + phnum * 56 > image.length || shoff + shnum * 64 > image.length) throw bad('ELF headers are out of bounds')

  let load: { offset: bigint; vaddr: bigint } | undefined
  for (let i = 0; i < phnum && !load; i++) {
    const at = phoff + i * 56
    if (image.readUInt32LE(at) === PT_LOAD) load = { offset: image.readBigUInt64LE(at + 8), vaddr: image.readBigUInt64LE(at + 16) }
  }
  const section = (i: number) => {
    const at = shoff + i * 64
    return { type: image.readUInt32LE(at + 4), offset: u64(at + 24), size: u64(at + 32), link: image.readUInt32LE(at + 40) }
  }
  let dynsym: ReturnType<typeof section> | undefined
  for (let i = 0; i < shnum && !dynsym; i++) if (section(i).type === SHT_DYNSYM) dynsym = section(i)
  if (!load || !dynsym || dynsym.link >= shnum || dynsym.offset + dynsym.size > image.length) throw bad('has no dynamic symbol table')
  const strtab = section(dynsym.link)
  if (strtab.offset + strtab.size > image.length) throw bad('string table is out of bounds')

  const symbols = new Map<string, number>()
  for (let at = dynsym.offset; at + 24 <= dynsym.offset + dynsym.size; at += 24) {
    const nameAt = image.readUInt32LE(at)
    const info = image[at + 4]!
    const shndx = image.readUInt16LE(at + 6)
    if (nameAt >= strtab.size || shndx === 0 || (info & 0xf) !== STT_FUNC) continue
    const end = image.indexOf(0, strtab.offset + nameAt)
    if (end < 0 || end >= strtab.offset + strtab.size) continue
    const name = image.toString('latin1', strtab.offset + nameAt, end)
    const offset = Number(image.readBigUInt64LE(at + 8) - load.vaddr + load.offset)
    if (!symbols.has(name) && offset >= 1 && offset + 32 <= image.length) symbols.set(name, offset)
  }
  const offsets: VdsoImage['offsets'] = {}
  for (const fn of vdsoFunctions) {
    const offset = symbols.get(`__vdso_${fn}`) ?? symbols.get(fn)
    if (offset !== undefined) offsets[fn] = offset
  }
  let syscallOffset: number | undefined
  for (let i = 0; i + 1 < image.length; i++) {
    if (image[i] === 0x0f && image[i + 1] === 0x05) {
      syscallOffset = i
      break
    }
  }
  let displaced = 0
  const cgt = offsets.clock_gettime
  if (cgt !== undefined) {
    let n = 0
    for (let len: number; n < JMP_LEN && (len = prologueInstructionLength(image, cgt + n)) > 0; ) n += len
    displaced = n >= JMP_LEN && n + JMP_LEN <= STUB_LEN ? n : 0
  }
  return { offsets, syscallOffset, displaced }
}

/**
 * The length of one instruction from the small set compilers put in a function prologue, to move
 * clock_gettime's first instructions into the page. Nothing RIP-relative and no branch: anything
 * else is 0, and the page then reads the real clock with the clock_gettime syscall instead.
 */
export function prologueInstructionLength(b: Buffer, at: number): number {
  const byte = (i: number) => b[at + i] ?? -1
  const rex = (byte(0) & 0xf0) === 0x40 ? 1 : 0
  const q0 = byte(rex)
  const q1 = byte(rex + 1)
  if (byte(0) === 0xf3 && byte(1) === 0x0f && byte(2) === 0x1e && byte(3) === 0xfa) return 4 // endbr64
  if (byte(0) === 0x90) return 1 // nop
  if (q0 >= 0x50 && q0 <= 0x57) return rex + 1 // push r64
  if ([0x89, 0x8b, 0x31, 0x33, 0x85].includes(q0) && (q1 & 0xc0) === 0xc0) return rex + 2 // mov / xor / test reg, reg
  if (q0 === 0x83 && (q1 & 0xc0) === 0xc0) return rex + 3 // add / or / and / sub / xor / cmp reg, imm8
  if (q0 === 0x81 && (q1 & 0xc0) === 0xc0) return rex + 6 // the same with imm32
  return 0
}

// ---- a process's memory and mappings --------------------------------------------------------------

function procDir(paths: Pick<HostPaths, 'procRoot'>, pid: number | 'self'): string {
  // The agent's own vDSO is read through the real /proc (procRoot may be another host's tree).
  return pid === 'self' ? OWN_PROC : procPath(paths, pid)
}

/** Reads `length` bytes at `address` of a process (/proc/<pid>/mem; root reads any process). */
export function readMemory(paths: Pick<HostPaths, 'procRoot'>, pid: number | 'self', address: bigint, length: number): Buffer {
  const path = join(procDir(paths, pid), 'mem')
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new VdsoError(code === 'ENOENT' || code === 'ESRCH' ? 'gone' : 'failed', `${path}: ${code ?? (err as Error).message}`)
  }
  try {
    const out = Buffer.alloc(length)
    let done = 0
    while (done < length) {
      const n = readSync(fd, out, done, length - done, Number(address) + done)
      if (n === 0) break
      done += n
    }
    if (done < length) throw new VdsoError('failed', `${path}: only ${done} of ${length} bytes at 0x${address.toString(16)}`)
    return out
  } catch (err) {
    if (err instanceof VdsoError) throw err
    const code = (err as NodeJS.ErrnoException).code
    throw new VdsoError(code === 'ESRCH' ? 'gone' : 'failed', `reading 0x${address.toString(16)} of ${path}: ${code ?? (err as Error).message}`)
  } finally {
    closeSync(fd)
  }
}

export function vdsoMapping(maps: readonly Mapping[]): Mapping | undefined {
  return maps.find((m) => m.name === '[vdso]')
}

/** Where a `jmp rel32` (e9) of the 5 bytes at `bytes`, read at address `at`, goes; undefined if they are no such jump. */
export function jumpTarget(bytes: Buffer, at: bigint): bigint | undefined {
  if (bytes[0] !== 0xe9 || bytes.length < JMP_LEN) return undefined
  return at + BigInt(JMP_LEN) + BigInt(bytes.readInt32LE(1))
}

/** The page at `address` starts with Faultline's magic. */
export function isFaultlinePage(paths: Pick<HostPaths, 'procRoot'>, pid: number | 'self', address: bigint): boolean {
  try {
    return readMemory(paths, pid, address - (address % PAGE_BYTES), PAGE_MAGIC.length).equals(PAGE_MAGIC)
  } catch {
    return false
  }
}

// ---- inspect ----------------------------------------------------------------------------------------

export interface InspectResult {
  pid: number | 'self'
  vdso: string
  vdsoEnd: string
  relocation: 'displaced' | 'syscall'
  displaced: number
  /** Offset of a `syscall` instruction in the vDSO. */
  syscallOffset: number | undefined
  symbols: { symbol: VdsoFunction; address: string; offset: number; bytes: string; ours: boolean; page?: string }[]
}

const hex = (n: bigint) => `0x${n.toString(16)}`

/**
 * A process's vDSO as it is now: where it is, its functions' first 16 bytes, and whether each
 * jumps into a Faultline page. Read only: nothing is stopped or written.
 */
export function inspectVdsoSync(pid: number | 'self', paths: Pick<HostPaths, 'procRoot'> = defaultHostPaths): InspectResult {
  const maps = pid === 'self' ? readMapsFile(join(OWN_PROC, 'maps')) : readMaps(paths.procRoot, pid)
  if (!maps || maps.length === 0) throw new VdsoError('gone', `process ${pid} has no mappings (it exited)`)
  const m = vdsoMapping(maps)
  if (!m) throw new VdsoError('no-vdso', `process ${pid} has no [vdso] mapping (vdso=0 on the kernel command line?)`)
  const size = Number(m.end - m.start)
  if (size > 1 << 20) throw new VdsoError('unsupported-vdso', `[vdso] of ${size} bytes is larger than any known vDSO`)
  const image = readMemory(paths, pid, m.start, size)
  const parsed = parseVdsoImage(image)
  const symbols: InspectResult['symbols'] = []
  for (const symbol of vdsoFunctions) {
    const offset = parsed.offsets[symbol]
    if (offset === undefined) continue
    const bytes = image.subarray(offset, offset + ENTRY_BYTES)
    const address = m.start + BigInt(offset)
    const dest = jumpTarget(bytes, address)
    const ours = dest !== undefined && isFaultlinePage(paths, pid, dest)
    symbols.push({ symbol, address: hex(address), offset, bytes: bytes.toString('hex'), ours, ...(ours ? { page: hex(dest - (dest % PAGE_BYTES)) } : {}) })
  }
  return {
    pid,
    vdso: hex(m.start),
    vdsoEnd: hex(m.end),
    relocation: parsed.displaced > 0 ? 'displaced' : 'syscall',
    displaced: parsed.displaced,
    syscallOffset: parsed.syscallOffset,
    symbols,
  }
}

// ---- where the page goes --------------------------------------------------------------------------

const distance = (a: bigint, b: bigint) => (a > b ? a - b : b - a)

/**
 * Free pages within a rel32 jump of the vDSO, nearest first: one page from each gap between
 * mappings, keeping a page of distance from both neighbours (no VMA merge) and 2 MiB clear below
 * a [stack] (its guard gap). The helper maps the first it can with MAP_FIXED_NOREPLACE, so a
 * mapping made meanwhile is never overwritten.
 */
export function candidatePages(maps: readonly Mapping[], vdso: bigint, max = 16): bigint[] {
  const sorted = [...maps].filter((m) => m.start < HIGHEST).sort((a, b) => (a.start < b.start ? -1 : 1))
  const loLimit = vdso > REACH + LOWEST ? vdso - REACH : LOWEST
  const hiLimit = vdso + REACH < HIGHEST ? vdso + REACH : HIGHEST
  const out: bigint[] = []
  for (let i = 0; i <= sorted.length; i++) {
    let lo = i === 0 ? LOWEST : sorted[i - 1]!.end + PAGE_BYTES
    let hi = i === sorted.length ? HIGHEST : sorted[i]!.start - PAGE_BYTES
    const next = sorted[i]
    if (next?.name.startsWith('[stack')) hi = next.start > 2n << 20n ? next.start - (2n << 20n) : 0n
    if (lo < loLimit) lo = loLimit
    if (hi > hiLimit) hi = hiLimit
    if (hi < lo + PAGE_BYTES) continue
    out.push(hi - PAGE_BYTES <= vdso ? hi - PAGE_BYTES : lo)
  }
  return out.sort((a, b) => (distance(a, vdso) < distance(b, vdso) ? -1 : 1)).slice(0, max)
}

/**
 * A Faultline page an earlier skew left in the process (anonymous, r-x, one page, within reach,
 * starting with the magic): the helper reuses it after checking its code byte for byte.
 */
export function reusablePage(paths: Pick<HostPaths, 'procRoot'>, pid: number, maps: readonly Mapping[], vdso: bigint): bigint | undefined {
  for (const m of maps) {
    if (m.end - m.start !== PAGE_BYTES || m.perms !== 'r-xp' || m.inode !== 0 || m.name !== '') continue
    if (distance(m.start, vdso) > REACH) continue
    if (isFaultlinePage(paths, pid, m.start)) return m.start
  }
  return undefined
}
