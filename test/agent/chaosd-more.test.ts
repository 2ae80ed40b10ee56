// The rest of the chaosd body shapes on the real kernel, each measured as the kind's own tests
// measure it (test/agent/faults/stress.test.ts, disk-file.test.ts, time-skew.test.ts), then
// DELETE leaves nothing: disk write-payload and read-payload (stress-io, IO counted on a loop
// device the test mounts), disk fill with fill-by-fallocate true and false and by percent, the
// superset file actions delete, append and replace (restored byte-identical, with owner, mode
// and times), process kill by pid with SIGKILL, and clock with CLOCK_MONOTONIC. Needs root
// (mounts, loop devices, chown, ptrace).
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { createHash, randomUUID } from 'node:crypto'
import { chownSync, chmodSync, closeSync, constants as fsConstants, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, statfsSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import t from 'tap'
import type { Injection } from '../../protocol/injection.js'
import { procState, repoRoot, sleep, sleeper, tmpDir, waitFor, type TestLike } from '../helpers.js'
import { chaosdError, chaosdPair, stressorsOf, type ChaosdPair } from './chaosd.js'

const root = process.getuid?.() === 0
const opts = { skip: root ? false : 'needs root (mounts, loop devices, chown)' }
const MiB = 1024 * 1024

/** One pair for the whole file (an agent costs seconds to build); each test recovers what it made. */
let shared: Promise<ChaosdPair> | undefined
const pair = () => (shared ??= chaosdPair(t))

const injectionsOf = async (c: ChaosdPair, uid: string): Promise<Injection[]> => (await c.injections()).filter((i) => i.requestId === uid)

// ---- disk: write-payload and read-payload -----------------------------------------------------

/**
 * A 1 GiB ext4 file system (a sparse image) on a loop device, mounted on a fresh directory;
 * unmounted, detached and removed at teardown. stress-io keeps 256 MiB free, hence the size. The
 * device's own counters (/sys/block/loopN/stat) show what reached it.
 */
function loopFs(t: TestLike): { mount: string; device: string } {
  const dir = mkdtempSync('/var/tmp/fl-chaosd-loop-')
  const image = join(dir, 'image')
  const mount = join(dir, 'mnt')
  let device = ''
  t.teardown(() => {
    if (device) {
      if (spawnSync('umount', [mount]).status !== 0) spawnSync('umount', ['-l', mount])
      spawnSync('losetup', ['-d', device])
    }
    rmSync(dir, { recursive: true, force: true })
  })
  execFileSync('truncate', ['-s', '1G', image])
  execFileSync('mkfs.ext4', ['-q', '-F', image], { stdio: 'ignore' })
  device = execFileSync('losetup', ['--find', '--show', image], { encoding: 'utf8' }).trim()
  mkdirSync(mount)
  execFileSync('mount', [device, mount])
  return { mount, device }
}

/** Bytes read and written on a block device so far (sectors of 512 bytes, block/stat.rst). */
function deviceBytes(device: string): { read: number; write: number } {
  const f = readFileSync(`/sys/block/${basename(device)}/stat`, 'utf8').trim().split(/\s+/).map(Number)
  return { read: f[2]! * 512, write: f[6]! * 512 }
}

/** The stressors' own block IO (/proc/<pid>/io read_bytes, write_bytes). */
function procIo(pids: number[]): { read: number; write: number } {
  let read = 0
  let write = 0
  for (const pid of pids) {
    try {
      const text = readFileSync(`/proc/${pid}/io`, 'utf8')
      read += Number(/^read_bytes: (\d+)$/m.exec(text)![1])
      write += Number(/^write_bytes: (\d+)$/m.exec(text)![1])
    } catch {
      /* exited */
    }
  }
  return { read, write }
}

for (const action of ['write-payload', 'read-payload'] as const) {
  t.test(`disk ${action}: IO reaches the device while active; DELETE stops it and leaves nothing`, opts, async (t) => {
    const c = await pair()
    const fs = loopFs(t)
    const uid = randomUUID()
    // As Chaos Mesh sends spec["disk-write-payload"]: path, size, payload-process-num.
    const res = await c.attack('disk', { uid, action, path: fs.mount, size: '16M', 'payload-process-num': 2 })
    t.equal(res.status, 200, JSON.stringify(res.body))
    const mode = action === 'write-payload' ? 'write' : 'read'
    const [inj] = await injectionsOf(c, uid)
    t.match(inj, { kind: 'stress-io', status: 'active', fault: { mode, bytes: String(16 * MiB), workers: 2, path: fs.mount }, resolved: { type: 'host' } })
    const stressors = await waitFor('two stressors', () => stressorsOf(uid).length >= 2 && stressorsOf(uid))
    const scratch = join(fs.mount, `faultline-${uid}`)
    t.ok(existsSync(scratch), `the scratch directory ${basename(scratch)} exists`)
    const before = deviceBytes(fs.device)
    const ownBefore = procIo(stressors)
    await sleep(2000)
    const after = deviceBytes(fs.device)
    const own = procIo(stressors)
    const read = (after.read - before.read) / MiB
    const write = (after.write - before.write) / MiB
    const ownRead = (own.read - ownBefore.read) / MiB
    const ownWrite = (own.write - ownBefore.write) / MiB
    t.comment(`chaosd disk ${action}: ${basename(fs.device)} over 2 s: read ${read.toFixed(1)} MiB, written ${write.toFixed(1)} MiB; the stressors' /proc/<pid>/io: read ${ownRead.toFixed(1)} MiB, written ${ownWrite.toFixed(1)} MiB`)
    if (mode === 'write') {
      t.ok(write >= 16, `writes reach the device (${write.toFixed(1)} MiB in 2 s)`)
      t.ok(ownWrite >= 16, `written by the stressors (${ownWrite.toFixed(1)} MiB)`)
    } else {
      t.ok(read >= 16, `reads reach the device (${read.toFixed(1)} MiB in 2 s)`)
      t.ok(ownRead >= 16, `read by the stressors (${ownRead.toFixed(1)} MiB)`)
    }

    t.equal((await c.recover(uid)).status, 200)
    await waitFor('the stressors gone', () => stressorsOf(uid).length === 0 && stressors.every((p) => procState(p) === undefined))
    t.pass('no stressor left')
    const quiet = deviceBytes(fs.device)
    await sleep(500)
    const later = deviceBytes(fs.device)
    t.equal(later.read + later.write - quiet.read - quiet.write, 0, 'no IO on the device after DELETE')
    t.notOk(existsSync(scratch), 'the scratch directory is removed')
    t.same(readdirSync(fs.mount).filter((n) => n !== 'lost+found'), [], 'nothing left on the file system')
    t.equal((await c.recover(uid)).status, 404, 'a second DELETE: 404')
  })
}

// ---- disk: fill ---------------------------------------------------------------------------------

/** A tmpfs of `size` on a fresh directory; unmounted and removed at teardown. */
function tmpfs(t: TestLike, size: string): string {
  const dir = mkdtempSync('/tmp/fl-chaosd-tmpfs-')
  t.teardown(() => {
    if (spawnSync('umount', [dir]).status !== 0) spawnSync('umount', ['-l', dir])
    rmSync(dir, { recursive: true, force: true })
  })
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'fl-chaosd-tmpfs', dir])
  return dir
}

const usedBytes = (dir: string) => {
  const s = statfsSync(dir)
  return (s.blocks - s.bfree) * s.bsize
}

t.test('disk fill: fill-by-fallocate true and false, chaosd\'s fallocate, and percent; each file allocated and removed', opts, async (t) => {
  const c = await pair()
  const dir = tmpfs(t, '64m')
  const fsBytes = statfsSync(dir).blocks * statfsSync(dir).bsize
  const cases: [string, Record<string, unknown>, number][] = [
    ['size 8M, fill-by-fallocate true', { size: '8M', 'fill-by-fallocate': true }, 8 * MiB],
    ['size 8M, fill-by-fallocate false', { size: '8M', 'fill-by-fallocate': false }, 8 * MiB],
    ['size 5MB, fallocate false (chaosd\'s own field)', { size: '5MB', fallocate: false }, 5e6],
    // chaosd's percent: a share of the file system's size to allocate
    ['percent 25', { percent: '25' }, Math.floor(fsBytes * 0.25)],
  ]
  const baseline = usedBytes(dir)
  for (const [what, fields, bytes] of cases) {
    const uid = randomUUID()
    const res = await c.attack('disk', { uid, action: 'fill', path: join(dir, 'fill'), ...fields })
    t.equal(res.status, 200, `${what}: ${JSON.stringify(res.body)}`)
    const [inj] = await injectionsOf(c, uid)
    t.match(inj, { kind: 'disk-fill', status: 'active', fault: { path: dir, size: String(bytes) } }, what)
    const files = readdirSync(dir)
    t.equal(files.length, 1, `${what}: one fill file (${files.join(', ')})`)
    const st = statSync(join(dir, files[0]!))
    const grew = usedBytes(dir) - baseline
    t.comment(`chaosd disk fill ${what}: file ${st.size} bytes, ${st.blocks * 512} allocated; the file system's used bytes grew by ${grew} (asked ${bytes})`)
    t.equal(st.size, bytes, `${what}: the size asked for`)
    t.ok(st.blocks * 512 >= bytes, `${what}: allocated, not sparse`)
    t.ok(grew >= bytes, `${what}: the file system has that much less room`)
    t.equal((await c.recover(uid)).status, 200)
    t.same(readdirSync(dir), [], `${what}: removed`)
    t.equal(usedBytes(dir), baseline, `${what}: the room is back`)
  }
  for (const [fields, message] of [
    [{ size: '1M', percent: '10' }, /size or percent, not both/],
    [{ percent: '0' }, /percent "0" not valid/],
    [{ percent: '12.5' }, /percent "12.5" not valid/],
    [{}, /needs size or percent/],
  ] as const) {
    const res = await c.attack('disk', { uid: randomUUID(), action: 'fill', path: dir, ...fields })
    t.equal(res.status, 400, JSON.stringify(fields))
    t.match(res.body, { ...chaosdError('error.api.invalid_request'), message })
  }
  t.same(readdirSync(dir), [], 'the refusals wrote nothing')
})

// ---- file: delete, append, replace --------------------------------------------------------------

interface Snapshot {
  sha256: string
  size: number
  mode: number
  uid: number
  gid: number
  atimeNs: string
  mtimeNs: string
}

/** As test/agent/faults/disk-file.test.ts compares files: content, owner, mode, times to the nanosecond (read with O_NOATIME). */
function snapshot(path: string): Snapshot {
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOATIME)
  let content: Buffer
  try {
    content = readFileSync(fd)
  } finally {
    closeSync(fd)
  }
  const st = statSync(path, { bigint: true })
  return {
    sha256: createHash('sha256').update(content).digest('hex'),
    size: Number(st.size),
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    atimeNs: String(st.atimeNs),
    mtimeNs: String(st.mtimeNs),
  }
}

const CONTENT = `# app config\nlisten = 0.0.0.0\nport = 5432\n${'x'.repeat(5000)}\nend\n`

function makeFile(path: string): Snapshot {
  writeFileSync(path, CONTENT)
  chownSync(path, 1234, 2345)
  chmodSync(path, 0o640)
  execFileSync('touch', ['-a', '-d', '@1500000000.987654321', path])
  execFileSync('touch', ['-m', '-d', '@1600000000.123456789', path])
  return snapshot(path)
}

const noatimeRead = (path: string) => {
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOATIME)
  try {
    return readFileSync(fd, 'utf8')
  } finally {
    closeSync(fd)
  }
}

const fileCases = [
  { action: 'delete', fields: {}, kind: 'file-delete', effect: (p: string) => !existsSync(p) },
  {
    action: 'append',
    fields: { data: 'FAULTLINE-APPENDED', count: 3 },
    kind: 'file-append',
    effect: (p: string) => noatimeRead(p) === `${CONTENT}FAULTLINE-APPENDED\nFAULTLINE-APPENDED\nFAULTLINE-APPENDED\n`,
  },
  {
    action: 'replace',
    // origin-string is literal text: the dot must not match any character
    fields: { 'origin-string': 'listen = 0.0.0.0', 'dest-string': 'listen = 10.200.9.9' },
    kind: 'file-replace',
    effect: (p: string) => noatimeRead(p) === CONTENT.replace('listen = 0.0.0.0', 'listen = 10.200.9.9'),
  },
] as const

for (const fc of fileCases) {
  t.test(`file ${fc.action} (a superset of chaosd): the file changes, and DELETE restores it byte-identical with owner, mode and times`, opts, async (t) => {
    const c = await pair()
    const dir = tmpDir(t, 'fl-chaosd-file-')
    const file = join(dir, 'app.conf')
    const before = makeFile(file)
    const uid = randomUUID()
    const res = await c.attack('file', { uid, action: fc.action, 'file-name': file, ...fc.fields })
    t.equal(res.status, 200, JSON.stringify(res.body))
    t.match((await injectionsOf(c, uid))[0], { kind: fc.kind, status: 'active', fault: { path: file } })
    t.ok(fc.effect(file), `${fc.action}: visible on the file`)
    if (existsSync(file)) t.comment(`chaosd file ${fc.action}: ${before.size} -> ${statSync(file).size} bytes`)
    t.equal((await c.recover(uid)).status, 200)
    t.same(snapshot(file), before, 'sha256, size, mode, owner, atime and mtime as before')
    t.same(readdirSync(dir), ['app.conf'], 'nothing else left in the directory')
    t.equal((await c.recover(uid)).status, 404)
  })
}

t.test('file replace: an origin-string the file does not contain is refused, not a silent no-op', opts, async (t) => {
  const c = await pair()
  const dir = tmpDir(t, 'fl-chaosd-file-')
  const file = join(dir, 'app.conf')
  const before = makeFile(file)
  const uid = randomUUID()
  const res = await c.attack('file', { uid, action: 'replace', 'file-name': file, 'origin-string': 'listen = 0x0x0x0', 'dest-string': 'y' })
  t.comment(`answer: ${res.status} ${JSON.stringify(res.body)}`)
  t.equal(res.status, 400)
  t.match(res.body, chaosdError('error.api.invalid_request'))
  t.same(snapshot(file), before, 'the file is untouched')
})

// ---- process: kill by pid ---------------------------------------------------------------------

t.test('process kill by pid (SIGKILL): the process ends; the experiment list and DELETE say so sensibly', opts, async (t) => {
  const c = await pair()
  const s = sleeper(t)
  const uid = randomUUID()
  const body = { uid, process: String(s.pid), signal: 9 }
  t.same(await c.attack('process', body), { status: 200, body: { status: 200, message: 'attack successfully', uid } })
  await waitFor('killed', () => procState(s.pid) === undefined || procState(s.pid) === 'Z')
  const [inj] = await injectionsOf(c, uid)
  t.comment(`process-kill injection after the kill: status ${inj?.status}`)
  t.match(inj, { kind: 'process-kill', fault: { signal: 'KILL' }, resolved: { pid: s.pid } })
  const listed = (await c.api.inject({ method: 'GET', url: '/api/experiments/' })).json<{ uid: string; status: string; kind: string; action: string }[]>().find((e) => e.uid === uid)
  t.comment(`experiment after the kill: ${JSON.stringify(listed)}`)
  t.match(listed, { uid, kind: 'process', action: 'process', status: /^(success|destroyed)$/ }, 'listed as started (success) or done, never error')
  const del = await c.recover(uid)
  t.comment(`DELETE after the kill: ${del.status} ${JSON.stringify(del.body)}`)
  t.ok(del.status === 200 || del.status === 404, 'DELETE: 200 or 404, which Chaos Mesh both reads as recovered')
  t.not(procState(s.pid), 'S', 'nothing brought the process back (not recoverable, as in chaosd)')
  const again = await c.recover(uid)
  t.equal(again.status, 404, 'a second DELETE: 404')
  t.match((await c.api.inject({ method: 'GET', url: '/api/experiments/' })).json<{ uid: string; status: string }[]>().find((e) => e.uid === uid), { status: 'destroyed' }, 'then listed as destroyed')
  t.same((await injectionsOf(c, uid)).filter((i) => i.status === 'active' || i.status === 'recovering'), [], 'nothing open in the journal')
})

// ---- clock: CLOCK_MONOTONIC ---------------------------------------------------------------------

/**
 * test/fixtures/timeskew/clock.c, compiled into a temp dir: every 100 ms it prints its vDSO
 * realtime and monotonic clocks (what time-skew changes) and the realtime clock read by a raw
 * syscall (what it cannot change). It sleeps with a relative usleep, so a monotonic clock that
 * jumps back does not stall it (a Node child's timers would wait out the jump).
 */
function clockProgram(t: TestLike): { pid: number; skew(): { realtimeMs: number; monotonicMs: number } | undefined } {
  const dir = tmpDir(t, 'fl-chaosd-clock-')
  execFileSync('gcc', ['-O2', '-o', join(dir, 'clock'), join(repoRoot, 'test', 'fixtures', 'timeskew', 'clock.c')])
  const child = spawn(join(dir, 'clock'), ['chaosd'], { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => child.kill('SIGKILL'))
  let latest: number[] | undefined
  let base: number[] | undefined
  let partial = ''
  child.stdout.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n')
    partial = lines.pop() ?? ''
    const last = lines.at(-1)?.split(' ')
    if (!last || last.length < 6) return
    const [, rt, mono, raw] = last.map(Number) as [number, number, number, number]
    latest = [(rt - raw) / 1e6, (mono - raw) / 1e6]
    base ??= latest
  })
  return {
    pid: child.pid!,
    // what each clock is off by against the raw realtime, from the first reading
    skew: () => (latest && base ? { realtimeMs: latest[0]! - base[0]!, monotonicMs: latest[1]! - base[1]! } : undefined),
  }
}

const clockOpts = { skip: !root || process.arch !== 'x64' ? 'needs root and x86-64' : spawnSync('gcc', ['--version']).status === 0 ? false : 'needs gcc' }

t.test('clock with clock-ids-slice CLOCK_MONOTONIC: only the monotonic clock is off by the offset; back after DELETE', clockOpts, async (t) => {
  const c = await pair()
  const prog = clockProgram(t)
  await waitFor('first readings', () => prog.skew())
  await sleep(300)
  const near = (v: number, want: number) => Math.abs(v - want) < 5
  const cases = [
    { offset: '5m', slice: 'CLOCK_MONOTONIC', fault: { offset: '+5m', clocks: ['monotonic'] }, realtimeMs: 0, monotonicMs: 300_000 },
    { offset: '-90s', slice: 'CLOCK_REALTIME, CLOCK_MONOTONIC', fault: { offset: '-1m30s', clocks: ['realtime', 'monotonic'] }, realtimeMs: -90_000, monotonicMs: -90_000 },
  ]
  for (const k of cases) {
    const uid = randomUUID()
    const res = await c.attack('clock', { uid, pid: prog.pid, 'time-offset': k.offset, 'clock-ids-slice': k.slice })
    t.equal(res.status, 200, JSON.stringify(res.body))
    t.match((await injectionsOf(c, uid))[0], { kind: 'time-skew', status: 'active', fault: k.fault })
    const during = await waitFor(`skewed by ${k.offset}`, () => {
      const s = prog.skew()
      return s && near(s.realtimeMs, k.realtimeMs) && near(s.monotonicMs, k.monotonicMs) && s
    }, 5000).catch(() => prog.skew())
    t.comment(`chaosd clock ${k.offset} ${k.slice}: realtime off by ${during?.realtimeMs.toFixed(2)} ms, monotonic by ${during?.monotonicMs.toFixed(2)} ms (asked ${k.realtimeMs}, ${k.monotonicMs})`)
    t.ok(during && near(during.realtimeMs, k.realtimeMs), 'realtime as asked (± 5 ms)')
    t.ok(during && near(during.monotonicMs, k.monotonicMs), 'monotonic as asked (± 5 ms)')
    t.equal((await c.recover(uid)).status, 200)
    const after = await waitFor('back', () => {
      const s = prog.skew()
      return s && near(s.realtimeMs, 0) && near(s.monotonicMs, 0) && s
    }, 5000).catch(() => prog.skew())
    t.comment(`after DELETE: realtime ${after?.realtimeMs.toFixed(2)} ms, monotonic ${after?.monotonicMs.toFixed(2)} ms`)
    t.ok(after && near(after.realtimeMs, 0) && near(after.monotonicMs, 0), 'both clocks back (± 5 ms)')
  }
  const refused = await c.attack('clock', { uid: randomUUID(), pid: prog.pid, 'time-offset': '-5m', 'clock-ids-slice': 'CLOCK_MONOTONIC_RAW' })
  t.equal(refused.status, 400, 'a clock id it does not name is refused')
  t.match(refused.body, { ...chaosdError('error.api.invalid_request'), message: /clock id "CLOCK_MONOTONIC_RAW" is not supported/ })
})
