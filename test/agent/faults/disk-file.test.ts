// Disk and file faults on the real kernel: disk-fill on a tmpfs and on an ext4 loop device the
// test mounts (unmounted and detached at teardown, also on failure; a killed run's leftovers
// are swept by the next), every file fault restored byte-identical (sha256, owner, mode, atime,
// mtime to the nanosecond) on the host and inside a docker container, bad input refused with a
// 4xx and nothing changed, the agent dying after every checkpoint inside apply (in-process), and
// kill -9 of the agent process with every kind active and at both crash points. Needs root; the
// container cases need dockerd and the test image (scripts/test-runtimes.sh start).
import { execFileSync, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  chmodSync,
  chownSync,
  closeSync,
  constants as fsConstants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  statfsSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import t from 'tap'
import { fillBytes, reserveBytes } from '../../../agent/faults/disk-fill/index.js'
import { formatBytes, parseSize } from '../../../protocol/units.js'
import { corruptionsOf } from '../../../agent/faults/file-corrupt/index.js'
import { replaceIn } from '../../../agent/faults/file-replace/index.js'
import { getFaultKind } from '../../../agent/faults/registry.js'
import type { FeatureMap } from '../../../protocol/capabilities.js'
import type { Injection } from '../../../protocol/injection.js'
import { http, startAgentProcess, testAgent, tmpDir, type TestLike } from '../../helpers.js'

t.setTimeout(600_000)
const isRoot = process.getuid?.() === 0
const needsRoot = { skip: isRoot ? false : 'needs root (mounts a tmpfs, chowns files)' }

// ---- helpers -------------------------------------------------------------------------------

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/**
 * Teardowns do not run when a test process is killed (a run's timeout): mounts and containers
 * this file made in a process that is gone (the pid is in their names) are removed first.
 */
function sweepLeftovers(): void {
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const mountPoint = line.split(' ')[1] ?? ''
    const m = /^\/tmp\/fl-disk-([0-9]+)-[^/]+(\/mnt)?$/.exec(mountPoint)
    if (m && !alive(Number(m[1]))) {
      spawnSync('umount', ['-l', mountPoint])
      rmSync(mountPoint, { recursive: true, force: true })
    }
  }
  // loop devices backed by an image of a dead run (after the umount above, so they can go)
  const loops = spawnSync('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE'], { encoding: 'utf8' }).stdout ?? ''
  for (const line of loops.split('\n')) {
    const [dev, back] = line.trim().split(/\s+/)
    const m = /^(\/tmp\/fl-disk-([0-9]+)-[^/]+)\/img$/.exec(back ?? '')
    if (dev && m && !alive(Number(m[2]))) {
      spawnSync('losetup', ['-d', dev])
      rmSync(m[1]!, { recursive: true, force: true })
    }
  }
  if (!existsSync('/run/docker.sock')) return
  const names = spawnSync('docker', ['ps', '-a', '--filter', 'label=faultline-test', '--format', '{{.Names}}'], { encoding: 'utf8' }).stdout ?? ''
  for (const name of names.split('\n')) {
    const m = /^fl-test-disk-.*-([0-9]+)$/.exec(name)
    if (m && !alive(Number(m[1]))) spawnSync('docker', ['rm', '-f', name], { stdio: 'ignore' })
  }
}
if (isRoot) sweepLeftovers()

/** A tmpfs of `size` on a fresh directory; unmounted and removed at teardown, also on failure. */
function mountTmpfs(t: TestLike, size = '64m'): string {
  const dir = mkdtempSync(join(tmpdir(), `fl-disk-${process.pid}-`))
  t.teardown(() => {
    if (spawnSync('mountpoint', ['-q', dir]).status === 0 && spawnSync('umount', [dir]).status !== 0) spawnSync('umount', ['-l', dir])
    rmSync(dir, { recursive: true, force: true })
  })
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'fl-test-tmpfs', dir])
  return dir
}

/**
 * An ext4 filesystem of `size` on a loop device (an image in a fresh directory), mounted at
 * <dir>/mnt; unmounted, detached and removed at teardown, also on failure.
 */
function mountLoopExt4(t: TestLike, size = 64 << 20): string {
  const base = mkdtempSync(join('/tmp', `fl-disk-${process.pid}-`))
  const image = join(base, 'img')
  const mnt = join(base, 'mnt')
  let dev = ''
  t.teardown(() => {
    if (spawnSync('mountpoint', ['-q', mnt]).status === 0 && spawnSync('umount', [mnt]).status !== 0) spawnSync('umount', ['-l', mnt])
    if (dev) spawnSync('losetup', ['-d', dev])
    rmSync(base, { recursive: true, force: true })
  })
  mkdirSync(mnt)
  writeFileSync(image, '')
  execFileSync('truncate', ['-s', String(size), image])
  execFileSync('mkfs.ext4', ['-q', '-F', '-m', '5', image], { stdio: 'ignore' })
  dev = execFileSync('losetup', ['--find', '--show', image], { encoding: 'utf8' }).trim()
  execFileSync('mount', ['-t', 'ext4', dev, mnt])
  return mnt
}

/** df's own figures: Use% as it prints it (rounded up) and the used and available bytes. */
function df(path: string): { pcent: number; used: number; avail: number } {
  // syncfs first: ext4 counts freed blocks as free only once the journal has committed
  execFileSync('sync', ['-f', path])
  const [, line] = execFileSync('df', ['-B1', '--output=pcent,used,avail', path], { encoding: 'utf8' }).trim().split('\n')
  const [pcent, used, avail] = line!.trim().split(/\s+/)
  return { pcent: parseInt(pcent!, 10), used: Number(used), avail: Number(avail) }
}

/** df's Use%: used / (used + available), unrounded. */
function usedPercent(path: string): number {
  const fs = statfsSync(path)
  return (100 * (fs.blocks - fs.bfree)) / (fs.blocks - fs.bfree + fs.bavail)
}

interface Snapshot {
  sha256: string
  size: number
  mode: number
  uid: number
  gid: number
  atimeNs: string
  mtimeNs: string
  ino: string
}

/** Reads without moving the atime (O_NOATIME), so looking at a file does not change what is compared. */
function read(path: string): Buffer {
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOATIME)
  try {
    return readFileSync(fd)
  } finally {
    closeSync(fd)
  }
}

function snapshot(path: string): Snapshot {
  const st = statSync(path, { bigint: true })
  return {
    sha256: createHash('sha256').update(read(path)).digest('hex'),
    size: Number(st.size),
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    atimeNs: String(st.atimeNs),
    mtimeNs: String(st.mtimeNs),
    ino: String(st.ino),
  }
}

/**
 * The snapshot to compare after recovery. file-delete across mounts (a tmpfs or a container's
 * files, away from the state dir) copies the file aside and back: a new inode, all else equal.
 */
const comparable = (s: Snapshot, kind: string, crossMount: boolean): Snapshot => (kind === 'file-delete' && crossMount ? { ...s, ino: '' } : s)

const CONTENT = `# app config\nlisten = 0.0.0.0\nport = 5432\n${'x'.repeat(5000)}\nend\n`

/** A file with an owner, mode, atime and mtime (to the nanosecond) that nothing else would give it. */
function makeFile(path: string, content: string | Buffer = CONTENT): Snapshot {
  writeFileSync(path, content)
  chownSync(path, 1234, 2345)
  chmodSync(path, 0o640)
  execFileSync('touch', ['-a', '-d', '@1500000000.987654321', path])
  execFileSync('touch', ['-m', '-d', '@1600000000.123456789', path])
  return snapshot(path)
}

interface FileCase {
  kind: string
  fault(path: string): Record<string, unknown>
  /** The fault is visible on the file (read through `hostPath`). */
  effect(hostPath: string): boolean
}

const fileCases: FileCase[] = [
  { kind: 'file-delete', fault: (path) => ({ kind: 'file-delete', path }), effect: (p) => !existsSync(p) },
  { kind: 'file-chmod', fault: (path) => ({ kind: 'file-chmod', path, mode: '000' }), effect: (p) => (statSync(p).mode & 0o7777) === 0 },
  { kind: 'file-append', fault: (path) => ({ kind: 'file-append', path, text: 'FAULTLINE-APPENDED\n' }), effect: (p) => read(p).toString('utf8') === `${CONTENT}FAULTLINE-APPENDED\n` },
  {
    kind: 'file-replace',
    fault: (path) => ({ kind: 'file-replace', path, pattern: 'port = (\\d+)', replacement: 'port = 1$1', regex: true }),
    effect: (p) => read(p).toString('utf8') === CONTENT.replace('port = 5432', 'port = 15432'),
  },
  {
    kind: 'file-corrupt',
    fault: (path) => ({ kind: 'file-corrupt', path, offsets: [0, 17, 5000] }),
    effect: (p) => {
      const now = read(p)
      const was = Buffer.from(CONTENT)
      return [0, 17, 5000].every((o) => now[o] === (~was[o]! & 0xff)) && now.subarray(1, 17).equals(was.subarray(1, 17))
    },
  },
]

const post = (app: Awaited<ReturnType<typeof testAgent>>, body: Record<string, unknown>) => app.inject({ method: 'POST', url: '/v1/injections', payload: { duration: '5m', ...body } })
const recover = async (app: Awaited<ReturnType<typeof testAgent>>, id: string) => (await app.inject({ method: 'DELETE', url: `/v1/injections/${id}` })).json<Injection>()

function backupsLeft(stateDir: string): string[] {
  const dir = join(stateDir, 'backups')
  return existsSync(dir) ? readdirSync(dir) : []
}

/**
 * One in-process agent for every API test of this file (building one costs seconds on a busy
 * machine): each test ends with its injections recovered and no backup left, which it checks.
 */
let shared: Promise<{ app: Awaited<ReturnType<typeof testAgent>>; stateDir: string }> | undefined
function sharedAgent() {
  shared ??= (async () => {
    const stateDir = tmpDir(t)
    return { app: await testAgent(t, { stateDir }), stateDir }
  })()
  return shared
}

// ---- pure parts ----------------------------------------------------------------------------

t.test('sizes, the percent arithmetic and the default reserve', async (t) => {
  t.equal(parseSize('1GiB'), 1024 ** 3)
  t.equal(parseSize('1G'), 1024 ** 3)
  t.equal(parseSize('1.5 MiB'), 1.5 * 1024 ** 2)
  t.equal(parseSize('100MB'), 100e6)
  t.equal(parseSize('4096'), 4096)
  t.throws(() => parseSize('1 Gbit'), { code: 'FAULTLINE_ERR_VALIDATION' })
  t.equal(formatBytes(64 * 1024 ** 2), '64 MiB')
  const usage = { blockBytes: 4096, sizeBytes: 100 * 4096 * 1000, usedBytes: 30 * 4096 * 1000, availBytes: 60 * 4096 * 1000 } // ext4-like: 10 % reserved for root
  // 90 % of used + avail (90 * 4096000 bytes) minus the 30 used: 51 units
  t.equal(fillBytes({ percent: 90 }, usage), 51 * 4096 * 1000)
  t.equal(fillBytes({ size: '8KiB' }, usage), 8192)
  t.equal(reserveBytes(undefined, usage), Math.ceil(0.01 * usage.sizeBytes), 'small filesystem: 1 %')
  t.equal(reserveBytes(undefined, { ...usage, sizeBytes: 1e12 }), 64 * 1024 ** 2, 'large filesystem: 64 MiB')
  t.equal(reserveBytes('10%', usage), 0.1 * usage.sizeBytes)
  t.equal(reserveBytes('1MiB', usage), 1024 ** 2)
})

t.test('replaceIn: literal on bytes, regex with groups, offsets in bytes of the original', async (t) => {
  const text = Buffer.from('héllo wörld, wörld!')
  const literal = replaceIn(text, { pattern: 'wörld', replacement: 'X' })
  t.equal(literal.content.toString(), 'héllo X, X!')
  t.same(literal.changes.map((c) => c.offset), [7, 15], 'byte offsets (é and ö are two bytes)')
  const regex = replaceIn(text, { pattern: 'w(ö)rld', replacement: '[$1$1]', regex: true, limit: 1 })
  t.equal(regex.content.toString(), 'héllo [öö], wörld!')
  t.same(regex.changes, [{ offset: 7, before: 'wörld', after: '[öö]' }])
  t.equal(replaceIn(text, { pattern: 'WÖRLD', replacement: 'y', ignoreCase: true }).count, 2)
  t.throws(() => replaceIn(text, { pattern: '(a+)+$', replacement: '', regex: true }), { code: 'FAULTLINE_ERR_UNSAFE_PATTERN' })
  t.throws(() => replaceIn(text, { pattern: 'x*', replacement: 'y', regex: true }), { code: 'FAULTLINE_ERR_UNSAFE_PATTERN' })
  t.throws(() => replaceIn(Buffer.from([0xff, 0xfe]), { pattern: 'a', replacement: 'b', regex: true }), { code: 'FAULTLINE_ERR_TARGET_STATE' })
})

t.test('corruptionsOf: a seed names exactly one set of bytes, and each really changes', async (t) => {
  const data = Buffer.from(CONTENT)
  const byteAt = async (o: number) => data[o]!
  const a = await corruptionsOf({ count: 50 }, 42, data.length, byteAt)
  const b = await corruptionsOf({ count: 50 }, 42, data.length, byteAt)
  t.same(a, b)
  t.equal(new Set(a.map((c) => c.offset)).size, 50, 'distinct offsets')
  t.ok(a.every((c) => c.before !== c.after && c.before === data[c.offset]))
  t.notSame(await corruptionsOf({ count: 50 }, 43, data.length, byteAt), a)
  t.same(await corruptionsOf({ offsets: [1], value: 0x41 }, 0, data.length, byteAt), [{ offset: 1, before: data[1], after: 0x41 }])
})

// ---- disk-fill on the host -----------------------------------------------------------------

t.test('disk-fill to 90 % of a 64 MiB tmpfs: within 1 point; recovery removes the fill', needsRoot, async (t) => {
  const { app, stateDir } = await sharedAgent()
  const dir = mountTmpfs(t)
  writeFileSync(join(dir, 'data'), Buffer.alloc(8 << 20, 1)) // 12.5 % used before
  const before = usedPercent(dir)
  const res = await post(app, { fault: { kind: 'disk-fill', path: dir, percent: 90 }, target: { type: 'host' } })
  t.equal(res.statusCode, 201, res.body)
  const inj = res.json<Injection>()
  const fill = join(dir, `.faultline-fill-${inj.id}`)
  t.ok(existsSync(fill), 'the fill file is named from the injection id')
  const measured = usedPercent(dir)
  t.comment(`disk-fill: requested 90 %, measured ${measured.toFixed(3)} % (before ${before.toFixed(2)} %, fill ${statSync(fill).size} bytes)`)
  t.ok(Math.abs(measured - 90) <= 1, `within ±1 point: ${measured}`)
  t.match(inj.plan, { expected: { usedPercent: 90 }, filesystem: { usedPercent: 12.5 } })
  t.equal(statSync(fill).mode & 0o777, 0o600)
  const second = await post(app, { fault: { kind: 'disk-fill', path: dir, percent: 95 }, target: { type: 'host' } })
  t.equal(second.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_BUSY', 'one percent fill per filesystem at a time')
  t.equal((await recover(app, inj.id)).status, 'recovered')
  t.notOk(existsSync(fill), 'fill removed')
  t.equal(usedPercent(dir), before, 'usage back to what it was')

  const bySize = await post(app, { fault: { kind: 'disk-fill', path: dir, size: '16MiB' }, target: { type: 'host' } })
  t.equal(bySize.statusCode, 201, bySize.body)
  t.equal(statSync(join(dir, `.faultline-fill-${bySize.json<Injection>().id}`)).size, 16 << 20)
  t.ok(Math.abs(usedPercent(dir) - 37.5) < 0.1, 'a 16 MiB fill is 25 points of 64 MiB')
  await recover(app, bySize.json<Injection>().id)
  t.same(readdirSync(dir), ['data'])
})

t.test('disk-fill to 90 % of a 64 MiB ext4 on a loop device (5 % reserved for root): within 1 point of df', needsRoot, async (t) => {
  const { app } = await sharedAgent()
  const dir = mountLoopExt4(t)
  writeFileSync(join(dir, 'data'), Buffer.alloc(8 << 20, 1))
  const before = df(dir)
  const res = await post(app, { fault: { kind: 'disk-fill', path: dir, percent: 90 }, target: { type: 'host' } })
  t.equal(res.statusCode, 201, res.body)
  const inj = res.json<Injection>()
  const after = df(dir)
  const exact = (100 * after.used) / (after.used + after.avail)
  t.comment(`disk-fill on ext4: requested 90 %, df shows ${after.pcent} % (${exact.toFixed(3)} % unrounded; before ${before.pcent} %)`)
  t.ok(Math.abs(exact - 90) <= 1, `within ±1 point of df's Use%: ${exact}`)
  t.ok(after.pcent >= 89 && after.pcent <= 91, `df prints ${after.pcent} %`)
  t.ok(existsSync(join(dir, `.faultline-fill-${inj.id}`)))
  t.equal((await recover(app, inj.id)).status, 'recovered')
  t.same(readdirSync(dir).sort(), ['data', 'lost+found'], 'fill removed')
  t.same(df(dir), before, 'df as before')
})

t.test('disk-fill refuses to eat into the reserve unless force, and never beyond what is available', needsRoot, async (t) => {
  const { app } = await sharedAgent()
  const dir = mountTmpfs(t)
  const target = { type: 'host' }
  // 64 MiB: the default reserve is 1 % (655 KiB); 99.5 % would leave 328 KiB
  const tooFull = await post(app, { fault: { kind: 'disk-fill', path: dir, percent: 99.5 }, target })
  t.equal(tooFull.statusCode, 422)
  t.equal(tooFull.json<{ code: string }>().code, 'FAULTLINE_ERR_DISK_RESERVE')
  t.match(tooFull.json<{ message: string }>().message, /less than the reserve of 655\.36 KiB/)
  const custom = await post(app, { fault: { kind: 'disk-fill', path: dir, percent: 95, reserve: '10%' }, target })
  t.equal(custom.json<{ code: string }>().code, 'FAULTLINE_ERR_DISK_RESERVE', 'a 10 % reserve refuses 95 %')
  const tooBig = await post(app, { fault: { kind: 'disk-fill', path: dir, size: '65MiB', force: true }, target })
  t.equal(tooBig.json<{ code: string }>().code, 'FAULTLINE_ERR_DISK_RESERVE', 'force does not make room that is not there')
  t.same(readdirSync(dir), [], 'nothing created by the refusals')
  const forced = await post(app, { fault: { kind: 'disk-fill', path: dir, percent: 100, force: true }, target })
  t.equal(forced.statusCode, 201, forced.body)
  t.equal(statfsSync(dir).bavail, 0, 'with force: full to the last block')
  await recover(app, forced.json<Injection>().id)
  t.same(readdirSync(dir), [])
  writeFileSync(join(dir, 'data'), Buffer.alloc(32 << 20))
  const already = await post(app, { fault: { kind: 'disk-fill', path: dir, percent: 40 }, target })
  t.equal(already.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_STATE', 'already fuller than asked')
  t.match(already.json<{ message: string }>().message, /already 50 % full/)
})

t.test('disk-fill leaves a file of its name that is not its own alone, and refuses protected paths', needsRoot, async (t) => {
  const { app, stateDir } = await sharedAgent()
  const dir = mountTmpfs(t)
  writeFileSync(join(dir, '.faultline-fill-mine'), 'not yours')
  const res = await post(app, { id: 'mine', fault: { kind: 'disk-fill', path: dir, size: '1MiB' }, target: { type: 'host' } })
  t.equal(res.statusCode, 422, res.body)
  t.equal(res.json<{ code: string }>().code, 'FAULTLINE_ERR_PATH_FORBIDDEN')
  t.equal(readFileSync(join(dir, '.faultline-fill-mine'), 'utf8'), 'not yours', 'untouched, also by the rollback')
  t.same(readdirSync(dir), ['.faultline-fill-mine'])
  for (const [path, code] of [
    ['/proc', 'FAULTLINE_ERR_PATH_FORBIDDEN'],
    ['/dev/shm', 'FAULTLINE_ERR_PATH_FORBIDDEN'],
    [stateDir, 'FAULTLINE_ERR_PATH_FORBIDDEN'],
    [join(dir, 'nope'), 'FAULTLINE_ERR_PATH_NOT_FOUND'],
    [`${dir}/../x`, 'FAULTLINE_ERR_VALIDATION'],
  ] as const) {
    const r = await post(app, { fault: { kind: 'disk-fill', path, size: '1MiB' }, target: { type: 'host' } })
    t.equal(r.json<{ code: string }>().code, code, `${path}: ${r.json<{ message: string }>().message}`)
    t.ok(r.statusCode >= 400 && r.statusCode < 500, `${path}: a 4xx (${r.statusCode})`)
  }
  // a relative path, and a file where a directory is needed
  const relative = await post(app, { fault: { kind: 'disk-fill', path: 'tmp', size: '1MiB' }, target: { type: 'host' } })
  t.equal(relative.statusCode, 400, relative.body)
  t.equal(relative.json<{ code: string }>().code, 'FAULTLINE_ERR_VALIDATION')
  t.match(relative.json<{ message: string }>().message, /path/)
  const notDir = await post(app, { fault: { kind: 'disk-fill', path: join(dir, '.faultline-fill-mine'), size: '1MiB' }, target: { type: 'host' } })
  t.equal(notDir.json<{ code: string }>().code, 'FAULTLINE_ERR_PATH_NOT_FOUND', notDir.body)
  t.same(readdirSync(dir), ['.faultline-fill-mine'], 'no refusal created anything')
  t.same(backupsLeft(stateDir), [])
})

t.test('disk-fill dryRun shows the bytes and the resulting Use%, and creates nothing', needsRoot, async (t) => {
  const { app } = await sharedAgent()
  const dir = mountTmpfs(t)
  const res = await post(app, { dryRun: true, fault: { kind: 'disk-fill', path: dir, percent: 50 }, target: { type: 'host' } })
  t.equal(res.statusCode, 200, res.body)
  const plan = res.json<Injection>().plan as unknown as { bytes: number; path: string; expected: { usedPercent: number }; steps: { argv?: string[]; detail: string }[] }
  t.equal(plan.bytes, 32 << 20)
  t.equal(plan.expected.usedPercent, 50)
  t.same(plan.steps[0]!.argv, ['fallocate', '--length', String(32 << 20), '/dev/fd/3'])
  t.match(plan.steps[0]!.detail, /from 0 % to 50 % used/)
  t.same(readdirSync(dir), [])
})

// ---- file faults on the host ---------------------------------------------------------------

t.test('every file fault on the host: visible while active; recovery restores content, owner, mode, atime, mtime', needsRoot, async (t) => {
  const { app, stateDir } = await sharedAgent()
  for (const c of fileCases) {
    await t.test(c.kind, async (t) => {
      const path = join(tmpDir(t), 'app.conf')
      const before = makeFile(path)
      const res = await post(app, { fault: c.fault(path), target: { type: 'host' } })
      t.equal(res.statusCode, 201, res.body)
      t.ok(c.effect(path), 'the fault is on the file')
      const again = await post(app, { fault: { kind: 'file-chmod', path, mode: '0444' }, target: { type: 'host' } })
      if (c.kind !== 'file-delete') t.equal(again.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_BUSY', 'one file fault per file at a time')
      const done = await recover(app, res.json<Injection>().id)
      t.equal(done.status, 'recovered')
      t.same(done.notes, [])
      t.same(snapshot(path), before, 'byte-identical, same inode, same owner, mode and times')
      t.same(backupsLeft(stateDir), [], 'backup removed')
      t.same(readdirSync(join(path, '..')), ['app.conf'], 'no temporary file left')
    })
  }
})

t.test('file-append keeps what others wrote after the appended bytes; a rewritten file gets the backup', needsRoot, async (t) => {
  const { app } = await sharedAgent()
  const path = join(tmpDir(t), 'app.log')
  const before = makeFile(path, 'line 1\nline 2\n')
  let res = await post(app, { fault: { kind: 'file-append', path, text: 'garbage\n' }, target: { type: 'host' } })
  writeFileSync(path, 'line 3\n', { flag: 'a' })
  let done = await recover(app, res.json<Injection>().id)
  t.equal(read(path).toString('utf8'), 'line 1\nline 2\nline 3\n', 'only the appended bytes were cut')
  t.match(done.notes.join(' '), /kept the 7 bytes written to the file during the fault/)
  t.equal(statSync(path).mode & 0o777, 0o640)

  makeFile(path, 'line 1\nline 2\n')
  res = await post(app, { fault: { kind: 'file-append', path, text: 'garbage\n' }, target: { type: 'host' } })
  writeFileSync(path, 'rotated\n')
  done = await recover(app, res.json<Injection>().id)
  t.same(snapshot(path), before, 'restored whole from the backup')
  t.match(done.notes.join(' '), /restored from the backup/)
})

t.test('a file removed or recreated during the fault is put back byte-identical', needsRoot, async (t) => {
  const { app, stateDir } = await sharedAgent()
  const path = join(tmpDir(t), 'app.conf')
  const before = makeFile(path)
  let res = await post(app, { fault: { kind: 'file-replace', path, pattern: '0.0.0.0', replacement: '256.0.0.1' }, target: { type: 'host' } })
  rmSync(path)
  let done = await recover(app, res.json<Injection>().id)
  t.same({ ...snapshot(path), ino: '' }, { ...before, ino: '' }, 'recreated (a new inode) with content, owner, mode and times')
  t.match(done.notes.join(' '), /recreated from the backup/)

  const again = makeFile(path)
  res = await post(app, { fault: { kind: 'file-delete', path }, target: { type: 'host' } })
  writeFileSync(path, 'someone else')
  done = await recover(app, res.json<Injection>().id)
  t.same(snapshot(path), again, 'the original (its very inode) replaced the newcomer')
  t.match(done.notes.join(' '), /replaced by the original/)

  // recreated with the very same content (a config tool putting it back), but its own owner, mode and times
  const third = makeFile(path)
  res = await post(app, { fault: { kind: 'file-delete', path }, target: { type: 'host' } })
  writeFileSync(path, CONTENT)
  done = await recover(app, res.json<Injection>().id)
  t.same(snapshot(path), third, 'the original, not the look-alike')
  t.match(done.notes.join(' '), /replaced by the original/)
  t.same(backupsLeft(stateDir), [])
})

t.test('file faults refuse what they must not touch', needsRoot, async (t) => {
  const { app, stateDir } = await sharedAgent()
  const dir = tmpDir(t)
  const file = join(dir, 'f')
  makeFile(file)
  symlinkSync(file, join(dir, 'link'))
  mkdirSync(join(dir, 'sub'))
  execFileSync('mkfifo', [join(dir, 'fifo')])
  const before = snapshot(file)
  const refused = async (fault: Record<string, unknown>, code: string, message?: RegExp) => {
    const r = await post(app, { fault, target: { type: 'host' } })
    t.equal(r.json<{ code: string }>().code, code, `${JSON.stringify(fault)}: ${r.json<{ message: string }>().message}`)
    t.ok(r.statusCode >= 400 && r.statusCode < 500, `a 4xx (${r.statusCode})`)
    if (message) t.match(r.json<{ message: string }>().message, message)
  }
  await refused({ kind: 'file-delete', path: 'etc/passwd' }, 'FAULTLINE_ERR_VALIDATION', /path/)
  await refused({ kind: 'file-chmod', path: '', mode: '000' }, 'FAULTLINE_ERR_VALIDATION')
  await refused({ kind: 'file-delete', path: join(file, 'x') }, 'FAULTLINE_ERR_PATH_NOT_FOUND', /not a directory/)
  await refused({ kind: 'file-delete', path: join(dir, 'link') }, 'FAULTLINE_ERR_PATH_FORBIDDEN', /symbolic link/)
  await refused({ kind: 'file-delete', path: join(dir, 'sub') }, 'FAULTLINE_ERR_PATH_FORBIDDEN', /directory, not a regular file/)
  await refused({ kind: 'file-append', path: join(dir, 'fifo'), text: 'x' }, 'FAULTLINE_ERR_PATH_FORBIDDEN', /FIFO/)
  await refused({ kind: 'file-chmod', path: '/dev/null', mode: '000' }, 'FAULTLINE_ERR_PATH_FORBIDDEN', /under \/dev/)
  await refused({ kind: 'file-chmod', path: '/dev/null', mode: '000', force: true }, 'FAULTLINE_ERR_PATH_FORBIDDEN', /character device/)
  await refused({ kind: 'file-corrupt', path: '/proc/self/status', count: 1 }, 'FAULTLINE_ERR_PATH_FORBIDDEN', /under \/proc/)
  // refused before anything is opened for writing; a read-only attribute, in case it ever were not
  await refused({ kind: 'file-corrupt', path: '/sys/kernel/address_bits', count: 1, force: true }, 'FAULTLINE_ERR_PATH_FORBIDDEN', /on sysfs.*even with force/)
  await refused({ kind: 'file-chmod', path: '/proc/sys/kernel/hostname', mode: '000', force: true }, 'FAULTLINE_ERR_PATH_FORBIDDEN', /on procfs/)
  await refused({ kind: 'file-delete', path: join(stateDir, 'journal.sqlite') }, 'FAULTLINE_ERR_PATH_FORBIDDEN', /state dir/)
  // the state dir through a symlinked directory is still the state dir
  symlinkSync(stateDir, join(dir, 'state'))
  await refused({ kind: 'file-delete', path: join(dir, 'state', 'journal.sqlite') }, 'FAULTLINE_ERR_PATH_FORBIDDEN', /state dir/)
  await refused({ kind: 'file-delete', path: join(dir, 'missing') }, 'FAULTLINE_ERR_PATH_NOT_FOUND')
  await refused({ kind: 'file-delete', path: `${dir}/./f` }, 'FAULTLINE_ERR_VALIDATION', /normal form/)
  await refused({ kind: 'file-chmod', path: file, mode: '4755' }, 'FAULTLINE_ERR_VALIDATION', /set-uid/)
  await refused({ kind: 'file-chmod', path: file, mode: '640' }, 'FAULTLINE_ERR_TARGET_STATE', /already has mode/)
  await refused({ kind: 'file-replace', path: file, pattern: '(x+)+y', replacement: '', regex: true }, 'FAULTLINE_ERR_UNSAFE_PATTERN')
  await refused({ kind: 'file-replace', path: file, pattern: 'absent', replacement: 'x' }, 'FAULTLINE_ERR_TARGET_STATE', /does not occur/)
  await refused({ kind: 'file-corrupt', path: file, offsets: [999999] }, 'FAULTLINE_ERR_TARGET_STATE', /beyond the end/)
  await refused({ kind: 'file-append', path: file }, 'FAULTLINE_ERR_VALIDATION', /exactly one of/)
  t.same(backupsLeft(stateDir), [], 'no refusal left a backup')
  t.same(snapshot(file), before, 'the file is untouched by every refusal')
  t.same(readdirSync(dir).sort(), ['f', 'fifo', 'link', 'state', 'sub'], 'nothing created')
})

t.test('a backup that would crowd the journal out of the state dir is refused, and nothing changes', needsRoot, async (t) => {
  // state dir on a 72 MiB tmpfs: backups must leave 64 MiB free there
  const stateDir = mountTmpfs(t, '72m')
  const app = await testAgent(t, { stateDir })
  const dir = mountTmpfs(t, '32m')
  const path = join(dir, 'big.bin')
  const before = makeFile(path, Buffer.alloc(12 << 20, 7))
  for (const fault of [
    { kind: 'file-corrupt', path, offsets: [1] },
    { kind: 'file-delete', path }, // across mounts: a copy, not a rename
  ]) {
    const r = await post(app, { fault, target: { type: 'host' } })
    t.equal(r.statusCode, 422, r.body)
    t.equal(r.json<{ code: string }>().code, 'FAULTLINE_ERR_DISK_RESERVE', `${fault.kind}: ${r.json<{ message: string }>().message}`)
    t.match(r.json<{ message: string }>().message, /64 MiB kept free for the journal/)
    t.same(snapshot(path), before, `${fault.kind}: the file is untouched`)
    t.same(backupsLeft(stateDir), [], `${fault.kind}: no backup left`)
  }
  t.same(readdirSync(dir), ['big.bin'])
  await app.close() // before its state dir is unmounted at teardown
})

t.test('dryRun shows exactly what will change, and changes nothing', needsRoot, async (t) => {
  const { app, stateDir } = await sharedAgent()
  const path = join(tmpDir(t), 'app.conf')
  const before = makeFile(path)
  const dry = async (fault: Record<string, unknown>) => {
    const r = await post(app, { dryRun: true, fault: { path, ...fault }, target: { type: 'host' } })
    t.equal(r.statusCode, 200, r.body)
    return r.json<Injection>().plan as Record<string, unknown> & { steps: { detail: string }[] }
  }
  const replace = await dry({ kind: 'file-replace', pattern: 'x', replacement: 'YY', limit: 3 })
  t.match(replace, { matches: 3, changes: [{ offset: 42, before: 'x', after: 'YY' }, { offset: 43 }, { offset: 44 }], sizeAfter: before.size + 3 })
  t.equal(replace.sha256Before, before.sha256)
  t.equal(replace.sha256After, createHash('sha256').update(CONTENT.replace('xxx', 'YYYYYY')).digest('hex'), 'the sha256 the file will have')
  const corrupt = await dry({ kind: 'file-corrupt', count: 5 })
  const seed = corrupt.seed as number
  const again = await dry({ kind: 'file-corrupt', count: 5, seed })
  t.same(again.corruptions, corrupt.corruptions, 'the seed in the plan reproduces exactly those bytes')
  const append = await dry({ kind: 'file-append', text: 'hello\n' })
  t.match(append, { offset: before.size, appended: { length: 6, data: Buffer.from('hello\n').toString('base64') } })
  t.match(append.steps[1]!.detail, /"hello\\n"/)
  const chmod = await dry({ kind: 'file-chmod', mode: '000' })
  t.match(chmod.steps[1]!.detail, /chmod 0000 .* \(was 0640\)/)
  const del = await dry({ kind: 'file-delete' })
  t.match(del, { file: { size: before.size, mode: 0o640, uid: 1234, gid: 2345, mtimeNs: before.mtimeNs }, backupDir: join(stateDir, 'backups', String(del.backupDir).split('/').pop()!) })
  t.same(snapshot(path), before, 'the file is untouched')
  t.same(backupsLeft(stateDir), [])

  // what the plan promised is what apply does
  const res = await post(app, { fault: { kind: 'file-corrupt', path, count: 5, seed }, target: { type: 'host' } })
  t.equal(res.statusCode, 201, res.body)
  const now = read(path)
  for (const c of corrupt.corruptions as { offset: number; after: number }[]) t.equal(now[c.offset], c.after, `byte ${c.offset}`)
  await recover(app, res.json<Injection>().id)
  t.same(snapshot(path), before)
})

t.test('a process target that shares the agent root works on host paths', needsRoot, async (t) => {
  const { app } = await sharedAgent()
  const path = join(tmpDir(t), 'app.conf')
  const before = makeFile(path)
  const { spawn } = await import('node:child_process')
  const child = spawn('sleep', ['60'], { stdio: 'ignore' })
  t.teardown(() => child.kill('SIGKILL'))
  const res = await post(app, { fault: { kind: 'file-chmod', path, mode: '000' }, target: { type: 'process', pid: child.pid } })
  t.equal(res.statusCode, 201, res.body)
  t.match(res.json<Injection>().plan, { root: { type: 'host' } })
  await recover(app, res.json<Injection>().id)
  t.same(snapshot(path), before)
})

// ---- every checkpoint inside apply ---------------------------------------------------------

const log = pino({ level: 'silent' })
const paths = { procRoot: '/proc', netnsDir: '/var/run/netns', containerdTaskDir: '/run/containerd/io.containerd.runtime.v2.task' }
const hostTarget = { type: 'host' as const, hostname: 'test', netnsInode: 0 }
class Killed extends Error {}

t.test('the agent dying right after any checkpoint of apply (or before apply) is recovered exactly', needsRoot, async (t) => {
  const stateDir = tmpDir(t)
  const fsDir = mountTmpfs(t, '16m')
  const gatherCtx = { paths, features: {} as FeatureMap, control: { agentNetnsInode: 0, tcpPorts: [] }, openPlans: () => [], stateDir }
  const cases = [...fileCases.map((c) => ({ kind: c.kind, spec: (p: string) => c.fault(p) })), { kind: 'disk-fill', spec: () => ({ kind: 'disk-fill', path: fsDir, percent: 50 }) }]
  for (const c of cases) {
    const kind = getFaultKind(c.kind)!
    for (let killAt = 0; ; killAt++) {
      const id = `cp-${c.kind}-${killAt}`
      const path = join(fsDir, 'app.conf')
      const before = makeFile(path)
      const spec = c.spec(path) as never
      const facts = await kind.gather!(spec, hostTarget, gatherCtx)
      const plan = kind.plan(spec, hostTarget, { ...gatherCtx, injectionId: id, facts })
      let state: unknown = kind.undoFromPlan(plan)
      let calls = 0
      let finished = false
      if (killAt > 0) {
        try {
          state = await kind.apply(plan, {
            log,
            paths,
            expiresAt: Date.now() + 60_000,
            checkpoint: (s) => {
              state = structuredClone(s)
              if (++calls === killAt) throw new Killed()
            },
          })
          finished = true
        } catch (err) {
          if (!(err instanceof Killed)) throw err
        }
      }
      const first = await kind.recover(state as never, { log, paths })
      const second = await kind.recover(state as never, { log, paths })
      t.same(first, {}, `${c.kind}, killed after checkpoint ${killAt}: recovered without notes`)
      t.same(second, {}, `${c.kind}, killed after checkpoint ${killAt}: a second recovery finds nothing to do`)
      t.same(comparable(snapshot(path), c.kind, true), comparable(before, c.kind, true), `${c.kind}, killed after checkpoint ${killAt}: file byte-identical`)
      t.same(readdirSync(fsDir), ['app.conf'], `${c.kind}, killed after checkpoint ${killAt}: no fill or temporary file left`)
      t.same(backupsLeft(stateDir), [], `${c.kind}, killed after checkpoint ${killAt}: no backup left`)
      if (finished) {
        t.comment(`${c.kind}: ${calls} checkpoint(s) inside apply, each recovered`)
        break
      }
    }
  }
})

// ---- inside a docker container -------------------------------------------------------------

const IMAGE = 'localhost/faultline-test/busybox:latest'
const dockerUnavailable = ((): string | false => {
  if (process.env.FAULTLINE_TEST_REQUIRE_RUNTIMES === '1') return false
  if (!isRoot) return 'needs root'
  if (!existsSync('/run/docker.sock')) return 'needs dockerd: scripts/test-runtimes.sh start'
  if (spawnSync('docker', ['image', 'inspect', IMAGE], { stdio: 'ignore' }).status !== 0) return `needs the test image ${IMAGE}: scripts/test-runtimes.sh start`
  return false
})()
const withDocker = { skip: dockerUnavailable }

interface Container {
  name: string
  pid: number
  /** A path inside the container, as the host reaches it. */
  host(path: string): string
}

/** A docker container (sleep) with a 16 MiB tmpfs at /scratch; removed at teardown. */
function container(t: TestLike, tag: string): Container {
  const name = `fl-test-disk-${tag}-${process.pid}`
  t.teardown(() => spawnSync('docker', ['rm', '-f', name], { stdio: 'ignore' }))
  execFileSync('docker', ['run', '-d', '--name', name, '--network', 'none', '--label', 'faultline-test=1', '--tmpfs', '/scratch:size=16m', IMAGE, 'sleep', '3600'], { stdio: 'ignore' })
  const pid = Number(execFileSync('docker', ['inspect', '-f', '{{.State.Pid}}', name], { encoding: 'utf8' }).trim())
  return { name, pid, host: (p: string) => `/proc/${pid}/root${p}` }
}

t.test('every file fault inside a container, through its root: restored byte-identical', withDocker, async (t) => {
  const { app, stateDir } = await sharedAgent()
  const c = container(t, 'files')
  mkdirSync(c.host('/etc/app'), { recursive: true })
  for (const fc of fileCases) {
    // /etc is on the container's overlay (file-delete copies across mounts), /scratch on its tmpfs
    for (const inside of ['/etc/app/app.conf', '/scratch/app.conf']) {
      const before = makeFile(c.host(inside))
      const res = await post(app, { fault: fc.fault(inside), target: { type: 'container', name: c.name } })
      t.equal(res.statusCode, 201, res.body)
      t.match(res.json<Injection>().plan, { root: { type: 'proc', pid: c.pid } })
      t.ok(fc.effect(c.host(inside)), `${fc.kind} ${inside}: visible inside the container`)
      const done = await recover(app, res.json<Injection>().id)
      t.equal(done.status, 'recovered')
      t.same(comparable(snapshot(c.host(inside)), fc.kind, true), comparable(before, fc.kind, true), `${fc.kind} ${inside}: byte-identical`)
      t.same(backupsLeft(stateDir), [])
    }
  }
})

t.test("a container's symlinks resolve inside the container, never to a host file", withDocker, async (t) => {
  const { app } = await sharedAgent()
  const c = container(t, 'escape')
  const hostDir = tmpDir(t)
  const decoy = join(hostDir, 'victim')
  const before = makeFile(decoy)
  // absolute and relative escapes, as a hostile container would plant them
  symlinkSync(hostDir, c.host('/abs'))
  symlinkSync(`../../../../../../../..${hostDir}`, c.host('/rel'))
  for (const path of ['/abs/victim', '/rel/victim']) {
    const res = await post(app, { fault: { kind: 'file-delete', path }, target: { type: 'container', name: c.name } })
    t.equal(res.json<{ code: string }>().code, 'FAULTLINE_ERR_PATH_NOT_FOUND', `${path}: ${res.json<{ message: string }>().message}`)
  }
  const dots = await post(app, { fault: { kind: 'file-delete', path: `/../../..${decoy}` }, target: { type: 'container', name: c.name } })
  t.equal(dots.json<{ code: string }>().code, 'FAULTLINE_ERR_VALIDATION', '".." is refused before any lookup')
  // the container's own /proc: refused, and with force still refused (it is procfs)
  for (const force of [false, true]) {
    const r = await post(app, { fault: { kind: 'file-corrupt', path: '/proc/1/environ', count: 1, force }, target: { type: 'container', name: c.name } })
    t.equal(r.statusCode, 422, r.body)
    t.equal(r.json<{ code: string }>().code, 'FAULTLINE_ERR_PATH_FORBIDDEN', `force ${force}: ${r.json<{ message: string }>().message}`)
  }
  const relative = await post(app, { fault: { kind: 'file-delete', path: 'etc/hosts' }, target: { type: 'container', name: c.name } })
  t.equal(relative.json<{ code: string }>().code, 'FAULTLINE_ERR_VALIDATION')
  t.same(snapshot(decoy), before, 'the host file is untouched')
  // the same symlink pointing inside the container is followed, inside the container
  mkdirSync(c.host(hostDir), { recursive: true })
  const inner = makeFile(c.host(decoy))
  const res = await post(app, { fault: { kind: 'file-chmod', path: '/abs/victim', mode: '000' }, target: { type: 'container', name: c.name } })
  t.equal(res.statusCode, 201, res.body)
  t.equal(statSync(c.host(decoy)).mode & 0o777, 0, "the container's own file changed")
  t.same(snapshot(decoy), before, 'the host file did not')
  await recover(app, res.json<Injection>().id)
  t.same(snapshot(c.host(decoy)), inner)
})

t.test('disk-fill inside a container fills its filesystem, not the host path of the same name', withDocker, async (t) => {
  const { app } = await sharedAgent()
  const c = container(t, 'fill')
  const res = await post(app, { fault: { kind: 'disk-fill', path: '/scratch', percent: 75 }, target: { type: 'container', name: c.name } })
  t.equal(res.statusCode, 201, res.body)
  const measured = usedPercent(c.host('/scratch'))
  t.comment(`disk-fill in a container: requested 75 %, measured ${measured.toFixed(3)} % of its 16 MiB /scratch`)
  t.ok(Math.abs(measured - 75) <= 1)
  t.notOk(existsSync('/scratch'), 'nothing on the host')
  await recover(app, res.json<Injection>().id)
  t.same(readdirSync(c.host('/scratch')), [])
})

t.test('a container restarted during the fault is recovered through its new init', withDocker, async (t) => {
  const { app } = await sharedAgent()
  const c = container(t, 'restart')
  const before = makeFile(c.host('/etc/app.conf'))
  const res = await post(app, { fault: { kind: 'file-replace', path: '/etc/app.conf', pattern: '5432', replacement: '1' }, target: { type: 'container', name: c.name } })
  t.equal(res.statusCode, 201, res.body)
  execFileSync('docker', ['restart', '-t', '0', c.name], { stdio: 'ignore' })
  const pid = Number(execFileSync('docker', ['inspect', '-f', '{{.State.Pid}}', c.name], { encoding: 'utf8' }).trim())
  t.not(pid, c.pid, 'a new init')
  const done = await recover(app, res.json<Injection>().id)
  t.equal(done.status, 'recovered')
  t.match(done.notes.join(' '), new RegExp(`reached through pid ${pid}`))
  t.same(snapshot(`/proc/${pid}/root/etc/app.conf`), before)
})

// ---- kill -9 of the agent process ----------------------------------------------------------

/**
 * One agent process per crash: every start costs seconds (more on a busy machine), so the real
 * kill -9 tests batch. First every kind is active at once — on the host and, with docker, inside
 * a container — when the agent is killed with SIGKILL from outside; the next start must put all
 * of them back. Then the agent kills itself at the two crash points of the injector (right after
 * the journal write, and right after apply before its state write). Every kind at every
 * checkpoint of its own apply is covered in-process above, with the same recover functions.
 */
t.test('kill -9 of the agent with every kind active (host and container), then at both crash points: each restart recovers exactly', needsRoot, async (t) => {
  const stateDir = tmpDir(t)
  const fillDir = mountTmpfs(t, '16m')
  const fileDir = mountTmpfs(t, '16m')
  const c = dockerUnavailable ? undefined : container(t, 'crash')
  if (!c) t.comment(`container part skipped: ${dockerUnavailable}`)

  interface Armed {
    id: string
    what: string
    fault: Record<string, unknown>
    target: Record<string, unknown>
    effect(): boolean
    restored(): void
  }
  const armed: Armed[] = []
  const fileFault = (fc: FileCase, hostPath: string, path: string, target: Record<string, unknown>, where: string): Armed => {
    const before = makeFile(hostPath)
    return {
      id: `crash-${where}-${fc.kind}`,
      what: `${fc.kind} ${where}`,
      fault: fc.fault(path),
      target,
      effect: () => fc.effect(hostPath),
      restored: () => t.same(comparable(snapshot(hostPath), fc.kind, true), comparable(before, fc.kind, true), `${fc.kind} ${where}: byte-identical`),
    }
  }
  const fillFault = (dir: string, path: string, percent: number, target: Record<string, unknown>, where: string): Armed => ({
    id: `crash-${where}-disk-fill`,
    what: `disk-fill ${where}`,
    fault: { kind: 'disk-fill', path, percent },
    target,
    effect: () => Math.abs(usedPercent(dir) - percent) <= 1,
    restored: () => t.same(readdirSync(dir), [], `disk-fill ${where}: fill gone`),
  })
  for (const fc of fileCases) armed.push(fileFault(fc, join(fileDir, `${fc.kind}.conf`), join(fileDir, `${fc.kind}.conf`), { type: 'host' }, 'host'))
  armed.push(fillFault(fillDir, fillDir, 60, { type: 'host' }, 'host'))
  if (c) {
    mkdirSync(c.host('/etc/app'), { recursive: true })
    const target = { type: 'container', name: c.name }
    for (const fc of fileCases) armed.push(fileFault(fc, c.host(`/etc/app/${fc.kind}.conf`), `/etc/app/${fc.kind}.conf`, target, 'container'))
    armed.push(fillFault(c.host('/scratch'), '/scratch', 50, target, 'container'))
  }
  const confs = fileCases.map((fc) => `${fc.kind}.conf`).sort()
  const status = async (url: string, id: string) => (await http<Injection>(`${url}/v1/injections/${id}`)).body.status

  // 1. every kind active at once, then SIGKILL from outside
  let agent = await startAgentProcess(t, stateDir)
  for (const a of armed) {
    const res = await http<Injection>(`${agent.url}/v1/injections`, { method: 'POST', body: { id: a.id, fault: a.fault, target: a.target, duration: '10m' } })
    t.equal(res.status, 201, `${a.what}: ${JSON.stringify(res.body)}`)
  }
  process.kill(agent.pid, 'SIGKILL')
  t.same(await agent.exited, { code: null, signal: 'SIGKILL' })
  for (const a of armed) t.ok(a.effect(), `${a.what}: the fault is on while the agent is dead`)
  t.equal(backupsLeft(stateDir).length, armed.filter((a) => a.fault.kind !== 'disk-fill' && a.fault.kind !== 'file-chmod').length, 'a backup per content fault')

  // 2. the restart recovers all of them before its API answers
  agent = await startAgentProcess(t, stateDir, { env: { FAULTLINE_CRASH_AT: 'after-journal' } })
  for (const a of armed) {
    a.restored()
    t.equal(await status(agent.url, a.id), 'recovered', `${a.what}: recorded as recovered`)
  }
  t.same(readdirSync(fileDir).sort(), confs, 'no temporary file left on the host')
  if (c) t.same(readdirSync(c.host('/etc/app')).sort(), confs, 'no temporary file left in the container')
  t.same(backupsLeft(stateDir), [], 'no backup left')

  // 3. the agent dies right after the journal write (nothing applied), then right after apply
  // (before its state write) of a file fault and of a fill
  const hostFile = (kind: string) => {
    const fc = fileCases.find((f) => f.kind === kind)!
    const path = join(fileDir, `${kind}.conf`)
    let before: Snapshot
    return {
      kind,
      prepare: () => void (before = makeFile(path)),
      fault: () => fc.fault(path),
      effect: () => fc.effect(path),
      untouched: () => t.same(snapshot(path), before, `${kind}: nothing applied yet`),
      restored: () => t.same(comparable(snapshot(path), kind, true), comparable(before, kind, true), `${kind}: restored byte-identical by the restart`),
    }
  }
  const hostFill = {
    kind: 'disk-fill',
    prepare: () => undefined,
    fault: () => ({ kind: 'disk-fill', path: fillDir, percent: 60 }),
    effect: () => Math.abs(usedPercent(fillDir) - 60) <= 1,
    untouched: () => t.same(readdirSync(fillDir), [], 'disk-fill: nothing created yet'),
    restored: () => t.same(readdirSync(fillDir), [], 'disk-fill: fill gone'),
  }
  const crashes = [
    { point: 'after-journal', c: hostFile('file-replace') },
    { point: 'after-apply', c: hostFile('file-delete') },
    { point: 'after-apply', c: hostFill },
  ] as const
  for (const [i, { point, c }] of crashes.entries()) {
    c.prepare()
    const id = `crash-${point}-${c.kind}`
    await http(`${agent.url}/v1/injections`, { method: 'POST', body: { id, fault: c.fault(), target: { type: 'host' }, duration: '10m' } }).catch(() => undefined)
    t.same(await agent.exited, { code: null, signal: 'SIGKILL' }, `${c.kind}: the agent killed itself ${point}`)
    if (point === 'after-apply') t.ok(c.effect(), `${c.kind}: the fault is on while the agent is dead`)
    else c.untouched()
    const next = crashes[i + 1]?.point
    agent = await startAgentProcess(t, stateDir, next ? { env: { FAULTLINE_CRASH_AT: next } } : {})
    c.restored()
    t.same(readdirSync(fileDir).sort(), confs, `${c.kind} killed ${point}: no temporary file left`)
    t.same(backupsLeft(stateDir), [], `${c.kind} killed ${point}: no backup left`)
    t.equal(await status(agent.url, id), 'recovered', `${c.kind} killed ${point}: recorded as recovered`)
  }
})
