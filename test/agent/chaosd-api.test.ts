// The chaosd-compatible API (agent/chaosd) in process: bodies exactly as Chaos Mesh's
// PhysicalMachineChaos controller sends them (spec.<action> flattened, uid and the sub-action
// added, no duration), applied on the real kernel through the agent's Injector and measured,
// then DELETE leaves nothing. Needs root (signals to its own processes, cgroups, ptrace).
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { procState, sleeper, sleep, tmpDir, waitFor } from '../helpers.js'
import { chaosdError, chaosdPair, namedSleepers, stressorsOf } from './chaosd.js'

const root = process.getuid?.() === 0
const opts = { skip: root ? false : 'needs root' }

t.test('process: SIGSTOP by pid stops it, DELETE resumes it, a second DELETE is 404', opts, async (t) => {
  const c = await chaosdPair(t)
  const s = sleeper(t)
  const uid = randomUUID()
  const res = await c.attack('process', { uid, process: String(s.pid), signal: 19 })
  t.same(res, { status: 200, body: { status: 200, message: 'attack successfully', uid } })
  await waitFor('stopped', () => procState(s.pid) === 'T')
  const [inj] = await c.injections()
  t.match(inj, { id: uid, requestId: uid, kind: 'process-stop', status: 'active', resolved: { pid: s.pid } }, 'journaled as an injection with the uid as its id')
  t.ok(Date.parse(inj!.expiresAt) - Date.parse(inj!.createdAt) === 600_000, 'the default duration is the deadline')

  const list = await c.api.inject({ method: 'GET', url: '/api/experiments/' })
  t.match(list.json(), [{ uid, status: 'success', kind: 'process', action: 'process', launch_mode: 'svr', recover_command: JSON.stringify({ uid, process: String(s.pid), signal: 19 }) }])
  const runs = await c.api.inject({ method: 'GET', url: `/api/experiments/${uid}/runs` })
  t.match(runs.json(), [{ uid, status: 'success', experiment: { uid } }])

  t.same(await c.recover(uid), { status: 200, body: { status: 200, message: 'attack recover successfully', uid } })
  t.not(procState(s.pid), 'T', 'resumed')
  t.match((await c.api.inject({ method: 'GET', url: '/api/experiments' })).json(), [{ uid, status: 'destroyed' }])
  const again = await c.recover(uid)
  t.equal(again.status, 404, 'second DELETE: 404, which Chaos Mesh reads as recovered')
  t.match(again.body, chaosdError('error.api.resource_not_found'))
  t.equal((await c.recover('never-heard-of-it')).status, 404)
  const replay = await c.attack('process', { uid, process: String(s.pid), signal: 19 })
  t.equal(replay.status, 400, 'a recovered uid is not started again')
  t.not(procState(s.pid), 'T')
})

t.test('process by name: every process of that name, as chaosd does; SIGTERM ends them', opts, async (t) => {
  const c = await chaosdPair(t)
  const name = `flcd${process.pid.toString(36)}`
  const pids = namedSleepers(t, name, 3)
  await waitFor('started', () => pids.every((p) => procState(p) === 'S'))
  const uid = randomUUID()
  t.equal((await c.attack('process', { uid, process: name, signal: 19 })).status, 200)
  await waitFor('all three stopped', () => pids.every((p) => procState(p) === 'T'))
  t.equal((await c.injections()).length, 3, 'one injection per process, ids uid-1..3')
  t.equal((await c.recover(uid)).status, 200)
  t.ok(pids.every((p) => procState(p) !== 'T'), 'all resumed')

  const killUid = randomUUID()
  t.equal((await c.attack('process', { uid: killUid, process: name, signal: 15 })).status, 200)
  await waitFor('all three gone', () => pids.every((p) => procState(p) === undefined || procState(p) === 'Z'))
  const del = await c.recover(killUid)
  t.ok(del.status === 200 || del.status === 404, `DELETE of a kill answers ${del.status}, never 5xx`)
})

t.test('bad bodies are 400 in chaosd\'s error shape and change nothing', opts, async (t) => {
  const c = await chaosdPair(t)
  const s = sleeper(t)
  const bad: [string, unknown, RegExp][] = [
    ['network', { uid: randomUUID(), action: 'teleport', device: 'lo', percent: '10' }, /unknown network action "teleport"/],
    ['network', { uid: randomUUID(), action: 'loss', device: 'lo', percent: '150' }, /percent "150" not valid/],
    ['network', { uid: randomUUID(), action: 'loss', device: 'lo', percent: 'ten' }, /percent "ten" not valid/],
    ['network', { uid: randomUUID(), action: 'flood', 'ip-address': '10.200.0.2', rate: '1mbps', duration: '10s', port: '80' }, /flood/],
    ['stress', { uid: randomUUID() }, /needs "action"/],
    ['process', { uid: '', process: String(s.pid), signal: 19 }, /uid/],
    ['process', { uid: randomUUID(), process: '1', signal: 19 }, /init process/],
    ['process', { uid: randomUUID(), process: String(s.pid), signal: 19, recoverCmd: 'rm -rf /' }, /recoverCmd/],
    ['process', { uid: randomUUID(), process: String(s.pid), signal: 18 }, /signal 18 is not supported/],
    ['process', { uid: randomUUID(), process: String(s.pid), signal: 19, schedule: '@every 1m' }, /schedule/],
    ['clock', { uid: randomUUID(), pid: 1, 'time-offset': '-5m' }, /init process/],
    ['clock', { uid: randomUUID(), pid: s.pid, 'time-offset': '5 minutes' }, /time-offset/],
    ['clock', { uid: randomUUID(), pid: s.pid, 'time-offset': '-5m', 'clock-ids-slice': 'CLOCK_TAI' }, /CLOCK_TAI/],
    ['disk', { uid: randomUUID(), action: 'fill', path: '/etc/passwd', size: '1M' }, /existing file/],
    ['stress', { uid: randomUUID(), action: 'cpu', load: 10, options: ['--cpu-method', 'all'] }, /options/],
  ]
  for (const [kind, body, message] of bad) {
    const res = await c.attack(kind, body)
    t.equal(res.status, 400, `${kind} ${JSON.stringify(body)}`)
    t.match(res.body, { ...chaosdError('error.api.invalid_request'), message })
  }
  const notJson = await c.api.inject({ method: 'POST', url: '/api/attack/process', headers: { 'content-type': 'application/json' }, payload: '{"uid":' })
  t.equal(notJson.statusCode, 400)
  t.match(notJson.json(), chaosdError('error.api.invalid_request'))
  t.same(await c.injections(), [], 'nothing journaled')
  t.equal(procState(s.pid), 'S', 'the process was never touched')
  t.same((await c.api.inject({ method: 'GET', url: '/api/experiments/' })).json(), [])
  t.match((await c.api.inject({ method: 'GET', url: '/api/system/health' })).json(), { status: 0 })
  t.match((await c.api.inject({ method: 'GET', url: '/api/system/version' })).json(), { gitVersion: String, platform: String })
})

t.test('stress cpu and mem: stressors run, and are gone after DELETE', opts, async (t) => {
  const c = await chaosdPair(t)
  const uid = randomUUID()
  t.equal((await c.attack('stress', { uid, action: 'cpu', load: 20, workers: 1 })).status, 200)
  const [inj] = await c.injections()
  t.match(inj, { kind: 'stress-cpu', fault: { load: 20, workers: 1 }, resolved: { type: 'host' } })
  const running = await waitFor('a stressor', () => stressorsOf(uid).length > 0 && stressorsOf(uid))
  t.ok(running.length >= 1, `stressors running: ${running.join(', ')}`)
  t.equal((await c.recover(uid)).status, 200)
  await waitFor('stressors gone', () => stressorsOf(uid).length === 0)
  t.pass('no stressor left')

  const mem = randomUUID()
  t.equal((await c.attack('stress', { uid: mem, action: 'mem', size: '64MB' })).status, 200)
  t.match((await c.injections()).find((i) => i.id === mem), { kind: 'stress-memory', fault: { size: '64MB' } })
  await waitFor('a memory stressor', () => stressorsOf(mem).length > 0)
  t.equal((await c.recover(mem)).status, 200)
  await waitFor('memory stressor gone', () => stressorsOf(mem).length === 0)
  t.pass('memory stressor gone')
})

t.test('disk fill: the file is created with the size asked for, and removed', opts, async (t) => {
  const c = await chaosdPair(t)
  const dir = tmpDir(t, 'fl-chaosd-disk-')
  const uid = randomUUID()
  const res = await c.attack('disk', { uid, action: 'fill', path: join(dir, 'fill-file'), size: '16M', 'fill-by-fallocate': true })
  t.equal(res.status, 200, JSON.stringify(res.body))
  const files = readdirSync(dir)
  t.equal(files.length, 1, `one fill file: ${files.join(', ')}`)
  t.equal(statSync(join(dir, files[0]!)).size, 16 * 1024 * 1024, '16M = 16 MiB, as dd counts')
  t.equal((await c.recover(uid)).status, 200)
  t.same(readdirSync(dir), [], 'removed')
})

t.test('file modify (a superset of chaosd): mode changed, and restored', opts, async (t) => {
  const c = await chaosdPair(t)
  const dir = tmpDir(t, 'fl-chaosd-file-')
  const file = join(dir, 'app.conf')
  writeFileSync(file, 'x=1\n', { mode: 0o644 })
  const uid = randomUUID()
  const res = await c.attack('file', { uid, action: 'modify', 'file-name': file, privilege: 0 })
  t.equal(res.status, 200, JSON.stringify(res.body))
  t.equal(statSync(file).mode & 0o777, 0, 'mode 000')
  t.equal((await c.recover(uid)).status, 200)
  t.equal(statSync(file).mode & 0o777, 0o644, 'mode restored')
  const refused = await c.attack('file', { uid: randomUUID(), action: 'create', 'file-name': join(dir, 'new') })
  t.equal(refused.status, 400)
  t.notOk(existsSync(join(dir, 'new')))
  mkdirSync(join(dir, 'd'))
})

t.test('clock: the process reads a clock off by the offset, and back after DELETE', { skip: root && process.arch === 'x64' ? false : 'needs root and x86-64' }, async (t) => {
  const c = await chaosdPair(t)
  // Node's Date.now() reads CLOCK_REALTIME through the vDSO; performance.now() the monotonic clock.
  const child = spawn(process.execPath, ['-e', 'const base = Date.now() - performance.now(); setInterval(() => console.log(Date.now() - performance.now() - base), 20)'], { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => child.kill('SIGKILL'))
  let latest = NaN
  child.stdout.on('data', (chunk: Buffer) => {
    const lines = chunk.toString().trim().split('\n')
    latest = Number(lines.at(-1))
  })
  await waitFor('first reading', () => Number.isFinite(latest))
  await sleep(300)
  const uid = randomUUID()
  const res = await c.attack('clock', { uid, pid: child.pid, 'time-offset': '-5m', 'clock-ids-slice': 'CLOCK_REALTIME' })
  t.equal(res.status, 200, JSON.stringify(res.body))
  t.match((await c.injections())[0], { kind: 'time-skew', fault: { offset: '-5m', clocks: ['realtime'] } })
  await waitFor('skewed', () => Math.abs(latest + 300_000) < 50, 5000)
  t.comment(`skew read by the process: ${latest.toFixed(1)} ms (asked -300000)`)
  t.ok(Math.abs(latest + 300_000) < 50)
  t.equal((await c.recover(uid)).status, 200)
  await waitFor('back', () => Math.abs(latest) < 50, 5000)
  t.comment(`after DELETE: ${latest.toFixed(1)} ms`)
  t.ok(Math.abs(latest) < 50)
})
