// The vDSO and maps parsing time-skew does in TypeScript (agent/faults/time-skew/vdso.ts), checked
// against binutils' readelf on this kernel's real vDSO, and on synthetic inputs: prologue
// decoding, the pages offered to the helper, the refusals of images it cannot patch.
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { OWN_PROC } from '../../../../agent/host-paths.js'
import { parseMaps, readMapsFile, type Mapping } from '../../../../agent/targets/procfs.js'
import {
  PAGE_BYTES,
  VdsoError,
  candidatePages,
  inspectVdsoSync,
  jumpTarget,
  parseVdsoImage,
  prologueInstructionLength,
  readMemory,
  vdsoMapping,
} from '../../../../agent/faults/time-skew/vdso.js'
import { tmpDir } from '../../../helpers.js'

const x64 = process.arch === 'x64'

t.test("this kernel's vDSO, parsed in TypeScript, agrees with readelf", { skip: x64 && spawnSync('readelf', ['--version']).status === 0 ? false : 'needs x86-64 and binutils' }, async (t) => {
  const maps = readMapsFile(join(OWN_PROC, 'maps'))!
  const m = vdsoMapping(maps)!
  t.ok(m, 'this process has a [vdso]')
  const image = readMemory({ procRoot: '/proc' }, 'self', m.start, Number(m.end - m.start))
  const parsed = parseVdsoImage(image)
  const file = join(tmpDir(t), 'vdso.so')
  writeFileSync(file, image)
  const out = spawnSync('readelf', ['-W', '--dyn-syms', file], { encoding: 'utf8' }).stdout
  // "    5: 0000000000000c10   ...  FUNC    WEAK   DEFAULT   11 clock_gettime@@LINUX_2.6"
  const value = (name: string) => {
    const line = out.split('\n').find((l) => / FUNC /.test(l) && new RegExp(`\\s${name}(@|$)`).test(l.trim()))
    return line ? Number.parseInt(line.trim().split(/\s+/)[1]!, 16) : undefined
  }
  const phdrs = spawnSync('readelf', ['-W', '-l', file], { encoding: 'utf8' }).stdout
  const load = /LOAD\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)/.exec(phdrs)!
  const bias = Number.parseInt(load[1]!, 16) - Number.parseInt(load[2]!, 16)
  for (const fn of ['clock_gettime', 'gettimeofday', 'time'] as const) {
    const expected = (value(`__vdso_${fn}`) ?? value(fn))! + bias
    t.equal(parsed.offsets[fn], expected, `${fn} at offset 0x${expected.toString(16)}`)
  }
  t.ok(parsed.syscallOffset !== undefined && image[parsed.syscallOffset] === 0x0f && image[parsed.syscallOffset + 1] === 0x05, 'a syscall instruction')
  t.ok(parsed.displaced === 0 || (parsed.displaced >= 5 && parsed.displaced <= 27), `displaced ${parsed.displaced}`)

  const seen = inspectVdsoSync('self')
  t.equal(seen.vdso, `0x${m.start.toString(16)}`)
  t.same(
    seen.symbols.map((s) => s.symbol),
    ['clock_gettime', 'gettimeofday', 'time'],
  )
  t.ok(seen.symbols.every((s) => !s.ours && s.bytes.length === 32), 'unpatched: 16 bytes each, no jump into a Faultline page')
})

t.test('images the helper cannot patch are refused with the reason', async (t) => {
  t.throws(() => parseVdsoImage(Buffer.from('not an elf image at all, really not, no, not one bit of it at all')), { code: 'unsupported-vdso', message: /not an ELF image/ })
  const elf32 = Buffer.alloc(64)
  elf32.writeUInt32BE(0x7f454c46, 0)
  elf32[4] = 1
  t.throws(() => parseVdsoImage(elf32), new VdsoError('unsupported-vdso', 'the [vdso] is not x86-64 ELF64 (a 32-bit or x32 process)'))
  const truncated = Buffer.alloc(64)
  truncated.writeUInt32BE(0x7f454c46, 0)
  truncated[4] = 2
  truncated.writeUInt16LE(62, 18)
  truncated.writeBigUInt64LE(4096n, 32) // program headers past the end
  truncated.writeUInt16LE(56, 54)
  truncated.writeUInt16LE(1, 56)
  truncated.writeUInt16LE(64, 58)
  t.throws(() => parseVdsoImage(truncated), { message: /out of bounds/ })
})

t.test('prologue instructions that may move into the page, and the ones that may not', async (t) => {
  const len = (...bytes: number[]) => prologueInstructionLength(Buffer.from(bytes), 0)
  t.equal(len(0xf3, 0x0f, 0x1e, 0xfa), 4, 'endbr64')
  t.equal(len(0x55), 1, 'push rbp')
  t.equal(len(0x41, 0x54), 2, 'push r12')
  t.equal(len(0x48, 0x89, 0xe5), 3, 'mov rbp, rsp')
  t.equal(len(0x48, 0x83, 0xec, 0x10), 4, 'sub rsp, 16')
  t.equal(len(0x48, 0x81, 0xec, 0, 1, 0, 0), 7, 'sub rsp, 256')
  t.equal(len(0x90), 1, 'nop')
  t.equal(len(0x48, 0x8b, 0x05, 0, 0, 0, 0), 0, 'mov rax, [rip+x]: RIP-relative, never moved')
  t.equal(len(0xe8, 0, 0, 0, 0), 0, 'call: never moved')
  t.equal(len(0xeb, 0x10), 0, 'jmp: never moved')
})

t.test('jumps into a page', async (t) => {
  const jmp = Buffer.from([0xe9, 0xfb, 0x0f, 0x00, 0x00]) // +0xffb
  t.equal(jumpTarget(jmp, 0x1000n), 0x1000n + 5n + 0xffbn)
  t.equal(jumpTarget(Buffer.from([0xe9, 0xfb, 0xff, 0xff, 0xff]), 0x2000n), 0x2000n + 5n - 5n, 'negative rel32')
  t.equal(jumpTarget(Buffer.from([0x55, 0x48, 0x89, 0xe5, 0x90]), 0x1000n), undefined)
})

const mapping = (start: bigint, end: bigint, name = '', perms = 'r-xp'): Mapping => ({ start, end, perms, offset: 0n, inode: 0, name })

t.test('the pages offered to the helper: free, within a rel32 jump, nearest first', async (t) => {
  const vdso = 0x7ffc_0000_0000n
  const maps = [
    mapping(0x5555_0000_0000n, 0x5555_0001_0000n, '/usr/bin/prog'),
    mapping(0x7ffb_f000_0000n, 0x7ffb_ffff_0000n, '[stack]', 'rw-p'),
    mapping(vdso - 0x2000n, vdso, '[vvar]', 'r--p'),
    mapping(vdso, vdso + 0x2000n, '[vdso]'),
    mapping(0xffff_ffff_ff60_0000n, 0xffff_ffff_ff60_1000n, '[vsyscall]', '--xp'),
  ]
  const pages = candidatePages(maps, vdso)
  t.ok(pages.length >= 2, `${pages.length} pages`)
  const reach = (1n << 31n) - (1n << 20n)
  for (const p of pages) {
    t.equal(p % PAGE_BYTES, 0n, `0x${p.toString(16)} is page-aligned`)
    t.ok((p > vdso ? p - vdso : vdso - p) <= reach, `0x${p.toString(16)} is within a jump of the vDSO`)
    t.notOk(maps.some((m) => p + PAGE_BYTES > m.start - PAGE_BYTES && p < m.end + PAGE_BYTES), `0x${p.toString(16)} keeps a page from every mapping`)
    t.notOk(p < 0x7ffb_f000_0000n && p > 0x7ffb_f000_0000n - (2n << 20n), 'clear of the stack guard gap')
  }
  const dist = pages.map((p) => (p > vdso ? p - vdso : vdso - p))
  t.same(dist, [...dist].sort((a, b) => (a < b ? -1 : 1)), 'nearest first')
  t.same(candidatePages([mapping(vdso, vdso + 0x2000n, '[vdso]')], vdso, 1), [vdso - 2n * PAGE_BYTES], 'right below the vDSO, a page of distance kept, when that is free')
})

t.test('maps lines as proc(5) writes them', async (t) => {
  const maps = parseMaps(
    [
      '55d6c8a00000-55d6c8a02000 r--p 00000000 fd:01 1835072                    /usr/bin/cat',
      '7ffd4a3f1000-7ffd4a3f3000 r-xp 00000000 00:00 0                          [vdso]',
      '7f0000001000-7f0000002000 r-xp 00000000 00:00 0 ',
      'ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]',
      'garbage',
    ].join('\n'),
  )
  t.equal(maps.length, 4)
  t.match(maps[0], { start: 0x55d6c8a00000n, perms: 'r--p', inode: 1835072, name: '/usr/bin/cat' })
  t.equal(vdsoMapping(maps)?.start, 0x7ffd4a3f1000n)
  t.equal(maps[2]!.name, '', 'anonymous')
  t.equal(maps[3]!.start, 0xffffffffff600000n, 'above 2^53, exact')
})
