// Faults on real containers (containerd, dockerd and podman as started by
// scripts/test-runtimes.sh; CI starts them): process-stop through the cgroup freezer in each
// runtime, kill -9 of the agent while a container is frozen, network-loss into a container's own
// namespace, and stale containers (removed, or restarted with a new namespace). Needs root.
// Containers come from test/containers.ts: a missing runtime skips its tests with the reason,
// except under FAULTLINE_TEST_REQUIRE_RUNTIMES=1 (CI), where it fails them.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import t from 'tap'
import { freeze, freezerFor, freezerState, thaw } from '../../../agent/faults/shared/freezer.js'
import { readCgroupMounts } from '../../../agent/targets/cgroupfs.js'
import { discoverContainers } from '../../../agent/targets/containers/index.js'
import { defaultRuntimeSockets } from '../../../agent/capabilities/probe.js'
import type { Injection } from '../../../protocol/injection.js'
import { removeContainer, runContainer, skipUnlessRuntime, testRuntimes, type TestRuntime } from '../../containers.js'
import { http, sleep, startAgentProcess, testAgent, tmpDir, waitFor, type TestLike } from '../../helpers.js'
import { background, netnsPair, tool, type TestNs } from '../../net.js'

t.setTimeout(300_000)
const opts = { skip: skipUnlessRuntime('docker') }

interface Container {
  runtime: TestRuntime
  id: string
  name: string
  pid: number
  /** Its fl-case label: the case name and this test process's pid, so no other run matches. */
  case: string
}

/**
 * A container ticking a counter into /tick every 100 ms, labelled fl-case=<name>-<pid>; removed
 * at teardown. Resolves once the first tick is written.
 */
async function ticker(t: TestLike, name: string, runtime: TestRuntime = 'docker'): Promise<Container> {
  const label = `${name}-${process.pid}`
  const c = await runContainer(t, runtime, {
    labels: { 'fl-case': label },
    command: ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i > /tick; sleep 0.1; done'],
  })
  await waitFor('the ticker', () => existsSync(`/proc/${c.pid}/root/tick`))
  return { runtime, id: c.id, name: c.name, pid: c.pid, case: label }
}

/** The init pid docker reports for a container now. */
const dockerPid = (name: string) => Number(execFileSync('docker', ['inspect', '-f', '{{.State.Pid}}', name], { encoding: 'utf8' }).trim())

const tick = (c: Container) => Number(readFileSync(`/proc/${c.pid}/root/tick`, 'utf8').trim())

/** Whether the counter advances within `withinMs` (it ticks every 100 ms when running). */
async function isTicking(c: Container, withinMs = 3000): Promise<boolean> {
  const first = tick(c)
  const deadline = Date.now() + withinMs
  while (Date.now() < deadline) {
    await sleep(100)
    if (tick(c) > first) return true
  }
  return false
}

/** Every process of a v1 freezer cgroup is frozen, as each task shows it (state D, or T). */
function allFrozen(cgroupDir: string): boolean {
  const pids = readFileSync(`${cgroupDir}/cgroup.procs`, 'utf8').split('\n').filter(Boolean)
  return pids.length > 0 && pids.every((pid) => /^State:\s+[TtD]/m.test(readFileSync(`/proc/${pid}/status`, 'utf8')))
}

for (const runtime of testRuntimes) {
  t.test(`${runtime}: process-stop freezes every process of a container; recovery thaws it`, { skip: skipUnlessRuntime(runtime) }, async (t) => {
    const app = await testAgent(t)
    const c = await ticker(t, 'freeze', runtime)
    t.ok(await isTicking(c), 'ticking before')
    const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'process-stop' }, target: { type: 'container', name: c.name, runtime }, duration: '60s' } })
    t.equal(res.statusCode, 201, `created (${res.statusCode})`)
    const inj = res.json<Injection>()
    t.match(inj.resolved, { type: 'container', id: c.id, runtime, name: c.name, initPid: c.pid })
    t.match(inj.plan, { mechanism: 'freezer' })
    const { version, dir } = (inj.plan as { freezer?: { version?: string; dir?: string } }).freezer ?? {}
    t.ok(dir && dir.includes(c.id), `the freezer is the container's own cgroup (${dir})`)
    if (version === 'v1') t.ok(allFrozen(dir!), 'every process in that cgroup is frozen')
    else t.match(readFileSync(`${dir}/cgroup.events`, 'utf8'), /^frozen 1$/m, 'cgroup.events: frozen 1')
    t.notOk(await isTicking(c, 1000), 'not one tick while frozen')
    const again = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'process-stop' }, target: { type: 'container', id: runtime === 'containerd' ? c.id : c.id.slice(0, 12) }, duration: '60s' } })
    t.equal(again.statusCode, 409, 'a frozen container is not frozen twice')
    const rec = await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })
    t.equal(rec.json<Injection>().status, 'recovered')
    t.ok(await isTicking(c), 'ticking again after recovery')
  })
}

// The agent prefers a v1 freezer hierarchy when there is one (as on this hybrid host), so
// process-stop above runs the v1 path. cgroup.freeze is core cgroup v2 and works in the unified
// hierarchy of a hybrid host too: the v2 path, run directly on a real container.
const v2Mount = readCgroupMounts('/proc').v2
t.test('the cgroup v2 freezer (cgroup.freeze) freezes a real container and thaws it', { skip: skipUnlessRuntime('docker') || (v2Mount ? false : 'no cgroup2 mount') }, async (t) => {
  const c = await ticker(t, 'freeze-v2')
  const ctx = { paths: { procRoot: '/proc', netnsDir: '/var/run/netns', containerdTaskDir: '/run/containerd/io.containerd.runtime.v2.task' }, selfPid: process.pid, hostname: 'test', runtimeSockets: defaultRuntimeSockets }
  const resolved = (await discoverContainers(ctx)).containers.find((r) => r.id === c.id)
  t.ok(resolved?.cgroupPaths.unified?.includes(c.id), `its unified cgroup path is known (${resolved?.cgroupPaths.unified})`)
  const f = freezerFor(resolved!, { v1: new Map(), v2: v2Mount! })
  t.match(f, { version: 'v2', dir: `${v2Mount}${resolved!.cgroupPaths.unified}` })
  t.teardown(() => thaw(f))
  t.equal(freezerState(f), 'thawed')
  t.equal(await freeze(f), true, 'frozen within the timeout')
  // v2 tasks sleep in the signal path when frozen ("S"), so the kernel's own word is the check.
  t.match(readFileSync(`${f.dir}/cgroup.events`, 'utf8'), /^frozen 1$/m, 'cgroup.events: frozen 1 (every task of the cgroup is frozen)')
  t.notOk(await isTicking(c, 1000), 'not one tick while frozen')
  t.same(thaw(f), {})
  t.equal(freezerState(f), 'thawed')
  t.ok(await isTicking(c), 'ticking again after the thaw')
})

t.test('a container frozen by someone else (docker pause) is refused', opts, async (t) => {
  const app = await testAgent(t)
  const c = await ticker(t, 'paused')
  execFileSync('docker', ['pause', c.name])
  t.teardown(() => spawnSync('docker', ['unpause', c.name]))
  const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'process-stop' }, target: { type: 'container', name: c.name }, duration: '60s' } })
  t.equal(res.statusCode, 422)
  t.equal(res.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_STATE')
})

t.test('kill -9 of the agent while a container is frozen; the restart thaws it', opts, async (t) => {
  const stateDir = tmpDir(t)
  const c = await ticker(t, 'crash')
  const agent = await startAgentProcess(t, stateDir)
  const res = await http<Injection>(`${agent.url}/v1/injections`, {
    method: 'POST',
    body: { fault: { kind: 'process-stop' }, target: { type: 'container', labels: { 'fl-case': c.case } }, duration: '10m' },
  })
  t.equal(res.status, 201, JSON.stringify(res.body))
  t.notOk(await isTicking(c, 1000), 'frozen')
  agent.child.kill('SIGKILL')
  await agent.exited
  t.notOk(await isTicking(c, 1000), 'still frozen while the agent is dead')
  const restarted = await startAgentProcess(t, stateDir)
  t.ok(await isTicking(c), 'thawed by the time the restarted agent answers')
  t.equal((await http<Injection>(`${restarted.url}/v1/injections/${res.body.id}`)).body.status, 'recovered')
})

t.test('process-kill on a container signals its init', opts, async (t) => {
  const app = await testAgent(t)
  const c = await ticker(t, 'kill')
  const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'process-kill' }, target: { type: 'container', id: c.id.slice(0, 10) }, duration: '5s' } })
  t.equal(res.statusCode, 201, `created (${res.statusCode})`)
  await waitFor('the container to stop', () => execFileSync('docker', ['inspect', '-f', '{{.State.Running}}', c.name], { encoding: 'utf8' }).trim() === 'false', 10_000)
  t.pass('the container stopped')
})

/** Joins a container's namespace to a test namespace with a veth pair, addressed 10.200.7.0/24. */
function wire(t: TestLike, c: Container, peer: TestNs): { ip: string } {
  const tag = (process.pid % 100000).toString(36) + Math.floor(Math.random() * 1e4).toString(36)
  const inside = `flc${tag}i`.slice(0, 15)
  const outside = `flc${tag}o`.slice(0, 15)
  execFileSync('ip', ['link', 'add', outside, 'netns', peer.name, 'type', 'veth', 'peer', 'name', inside])
  execFileSync('ip', ['link', 'set', inside, 'netns', String(c.pid)])
  const inC = (...argv: string[]) => execFileSync('nsenter', [`--net=/proc/${c.pid}/ns/net`, '--', ...argv])
  inC('ip', 'addr', 'add', '10.200.7.2/24', 'dev', inside)
  inC('ip', 'link', 'set', inside, 'up')
  inC('ip', 'link', 'set', 'lo', 'up')
  execFileSync('ip', ['-n', peer.name, 'addr', 'add', '10.200.7.1/24', 'dev', outside])
  execFileSync('ip', ['-n', peer.name, 'link', 'set', outside, 'up'])
  t.teardown(() => spawnSync('ip', ['-n', peer.name, 'link', 'del', outside]))
  return { ip: '10.200.7.2' }
}

/** The container's network namespace as a TestNs, so the traffic tools run in it. */
const containerNs = (c: Container): TestNs => ({ name: c.name, path: `/proc/${c.pid}/ns/net`, ip: '10.200.7.2', dev: '' })

function containerSnapshot(c: Container): string {
  const inC = (...argv: string[]) => execFileSync('nsenter', [`--net=/proc/${c.pid}/ns/net`, '--', ...argv], { encoding: 'utf8' })
  return [inC('nft', 'list', 'ruleset'), inC('tc', 'qdisc', 'show'), inC('ip', '-o', 'link', 'show'), inC('iptables-legacy', '-t', 'mangle', '-S')].join('\n')
}

t.test("network-loss into a container's own namespace, measured; recovery leaves it as before", opts, async (t) => {
  const app = await testAgent(t)
  const c = await ticker(t, 'loss')
  const { b } = netnsPair(t)
  wire(t, c, b)
  const cns = containerNs(c)
  const before = containerSnapshot(c)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'network-loss', percent: 30, direction: 'egress', protocol: 'udp', ports: [9100] }, target: { type: 'container', name: c.name }, duration: '5m' },
  })
  t.equal(res.statusCode, 201, `created (${res.statusCode})`)
  const sink = await background(t, { ...b, ip: '10.200.7.1' }, 'udp-sink', 9100, 1500)
  await tool(cns, 'udp-blast', '10.200.7.1', 9100, 3000, 150)
  const { received } = (await sink.result) as { received: number }
  const loss = 1 - received / 3000
  t.comment(`requested 30 %, measured ${(loss * 100).toFixed(2)} % out of the container`)
  t.ok(loss >= 0.26 && loss <= 0.34, 'within 4 points of 30 % (about 5 standard deviations at 3000 datagrams)')
  await app.inject({ method: 'DELETE', url: `/v1/injections/${res.json<Injection>().id}` })
  t.equal(containerSnapshot(c), before, "the container's namespace reads as before")
})

t.test('a container removed during an injection: recovery succeeds with a note', opts, async (t) => {
  const app = await testAgent(t)
  const frozen = await ticker(t, 'gone-freeze')
  const netted = await ticker(t, 'gone-net')
  const stop = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'process-stop' }, target: { type: 'container', name: frozen.name }, duration: '5m' } })
  const part = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'network-partition' }, target: { type: 'container', name: netted.name }, duration: '5m' } })
  t.equal(stop.statusCode, 201, `process-stop created (${stop.statusCode})`)
  t.equal(part.statusCode, 201, `network-partition created (${part.statusCode})`)
  await Promise.all([removeContainer('docker', frozen.name), removeContainer('docker', netted.name)])
  await waitFor('both inits to be gone', () => !existsSync(`/proc/${frozen.pid}`) && !existsSync(`/proc/${netted.pid}`), 10_000)
  const res = await app.inject({ method: 'DELETE', url: '/v1/injections' })
  t.equal(res.statusCode, 200, 'recovery answers without error')
  const recovered = res.json<{ injections: Injection[]; failed: unknown[] }>()
  t.same(recovered.failed, [], 'nothing failed')
  t.equal(recovered.injections.length, 2)
  for (const inj of recovered.injections) {
    t.equal(inj.status, 'recovered', `${inj.kind} recovered`)
    t.match(inj.notes.join(' '), /gone/, `${inj.kind}: a note says the container was gone`)
  }
})

t.test('a container restarted with a new namespace: its injection is recovered with a note, never re-applied', opts, async (t) => {
  const app = await testAgent(t)
  const c = await ticker(t, 'restart')
  const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'network-partition' }, target: { type: 'container', name: c.name }, duration: '5m' } })
  t.equal(res.statusCode, 201, `created (${res.statusCode})`)
  execFileSync('docker', ['restart', '-t', '0', c.name])
  const after = { pid: dockerPid(c.name) }
  t.not(after.pid, c.pid, 'a new init')
  const rec = (await app.inject({ method: 'DELETE', url: `/v1/injections/${res.json<Injection>().id}` })).json<Injection>()
  t.equal(rec.status, 'recovered')
  t.match(rec.notes.join('\n'), /gone|different namespace/)
  const ruleset = execFileSync('nsenter', [`--net=/proc/${after.pid}/ns/net`, '--', 'nft', 'list', 'ruleset'], { encoding: 'utf8' })
  t.notMatch(ruleset, /faultline_/, 'nothing was applied to the new namespace')
})
