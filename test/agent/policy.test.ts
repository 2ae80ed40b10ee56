// The host policy (--policy): each rule refuses what it should (403 FAULTLINE_ERR_POLICY, naming
// the rule) and lets through what it should, through the agent's API and through a server run
// (the refusal lands in the run's record); a policy file that is wrong stops the agent at start.
// Requests that pass the policy are dry runs where they would touch the network or the disk.
import { chmodSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { HostPolicyCheck } from '../../agent/policy.js'
import { buildServer } from '../../server/app.js'
import { buildAgent } from '../../agent/app.js'
import { procState, runCli, sleeper, testAgent, tmpDir, waitFor, withBearer, type TestLike } from '../helpers.js'

const root = process.getuid?.() === 0

function policyFile(t: TestLike, yaml: string, mode = 0o644): string {
  const file = join(tmpDir(t, 'fl-policy-'), 'policy.yaml')
  writeFileSync(file, yaml)
  chmodSync(file, mode)
  return file
}

async function agentWith(t: TestLike, yaml: string): Promise<FastifyInstance> {
  return testAgent(t, { policy: HostPolicyCheck.load(policyFile(t, yaml)) })
}

const post = (app: FastifyInstance, fault: Record<string, unknown>, target: Record<string, unknown> = { type: 'host' }, extra: Record<string, unknown> = {}) =>
  app.inject({ method: 'POST', url: '/v1/injections', payload: { fault, target, duration: '1m', ...extra } })

async function refused(t: Test, app: FastifyInstance, rule: RegExp, fault: Record<string, unknown>, target?: Record<string, unknown>, extra?: Record<string, unknown>) {
  const res = await post(app, fault, target, extra)
  t.equal(res.statusCode, 403, `${JSON.stringify(fault)}: ${res.body}`)
  t.match(res.json(), { code: 'FAULTLINE_ERR_POLICY', details: { rule } })
  return res.json<{ message: string }>().message
}

async function allowed(t: Test, app: FastifyInstance, fault: Record<string, unknown>, target?: Record<string, unknown>, extra: Record<string, unknown> = { dryRun: true }) {
  const res = await post(app, fault, target, extra)
  t.not(res.json<{ code?: string }>().code, 'FAULTLINE_ERR_POLICY', `${JSON.stringify(fault)} passes the policy`)
  t.ok(res.statusCode < 300, `${JSON.stringify(fault)}: ${res.statusCode} ${res.body.slice(0, 300)}`)
  return res
}

t.test('kinds: only those listed; the others are unavailable in capabilities, with the policy shown', async (t) => {
  const app = await agentWith(t, 'kinds: [process-stop]\n')
  const s = sleeper(t)
  t.match(await refused(t, app, /^kinds$/, { kind: 'process-kill' }, { type: 'process', pid: s.pid }), /process-kill is not among the kinds allowed \(process-stop\)/)
  t.equal(procState(s.pid), 'S', 'the process was not touched')
  const res = await allowed(t, app, { kind: 'process-stop' }, { type: 'process', pid: s.pid }, {})
  t.equal(res.statusCode, 201)
  t.equal(procState(s.pid), 'T', 'an allowed kind really runs')
  await app.inject({ method: 'DELETE', url: '/v1/injections' })
  const caps = (await app.inject({ method: 'GET', url: '/v1/capabilities' })).json<{ kinds: Record<string, { available: boolean; reason?: string }>; policy: { file: string; rules: unknown } }>()
  t.match(caps.policy, { rules: { kinds: ['process-stop'] } }, 'the policy in force')
  t.equal(caps.kinds['process-kill']?.available, false)
  t.match(caps.kinds['process-kill']?.reason, /not allowed by the host policy/)
  t.equal(caps.kinds['process-stop']?.available, true)
})

t.test('targets: only the processes, containers, netns or host a rule names', async (t) => {
  const app = await agentWith(t, 'targets:\n  - { type: process, names: [sleep] }\n')
  const s = sleeper(t)
  await allowed(t, app, { kind: 'process-stop' }, { type: 'process', pid: s.pid })
  t.match(await refused(t, app, /^targets$/, { kind: 'process-stop' }, { type: 'process', pid: process.ppid }), /matches none of the targets allowed/)
  await refused(t, app, /^targets$/, { kind: 'disk-fill', path: '/tmp', size: '1MiB' }, { type: 'host' })
})

t.test('maxDuration', async (t) => {
  const app = await agentWith(t, 'maxDuration: 1m\n')
  const s = sleeper(t)
  await allowed(t, app, { kind: 'process-stop' }, { type: 'process', pid: s.pid }, { dryRun: true, duration: '60s' })
  t.match(await refused(t, app, /^maxDuration$/, { kind: 'process-stop' }, { type: 'process', pid: s.pid }, { duration: '61s' }), /duration 61s is longer than 1m/)
})

t.test('limits: numbers, durations, sizes, percentages, rates and offsets, each in its own grammar', async (t) => {
  const app = await agentWith(
    t,
    [
      'limits:',
      '  network-loss: { percent: 30 }',
      '  network-delay: { latency: 200ms }',
      '  stress-cpu: { load: 50, workers: 2 }',
      '  stress-memory: { size: 64MiB }',
      '  network-bandwidth: { rate: { min: 1mbit } }',
      '  time-skew: { offset: 1h }',
    ].join('\n'),
  )
  const s = sleeper(t)
  const proc = { type: 'process', pid: s.pid }
  await allowed(t, app, { kind: 'network-loss', percent: 30 })
  t.match(await refused(t, app, /^limits\.network-loss\.percent$/, { kind: 'network-loss', percent: 30.01 }), /percent 30\.01 is not at most 30/)
  await allowed(t, app, { kind: 'network-delay', latency: '200ms' })
  await refused(t, app, /^limits\.network-delay\.latency$/, { kind: 'network-delay', latency: '1s' })
  await allowed(t, app, { kind: 'stress-cpu', load: 50, workers: 2 }, proc)
  t.match(await refused(t, app, /^limits\.stress-cpu\.load$/, { kind: 'stress-cpu', workers: 1 }, proc), /give load explicitly/, 'a limited parameter must be given')
  await refused(t, app, /^limits\.stress-cpu\.workers$/, { kind: 'stress-cpu', load: 10, workers: 3 }, proc)
  await allowed(t, app, { kind: 'stress-memory', size: '64MiB' }, proc)
  await refused(t, app, /^limits\.stress-memory\.size$/, { kind: 'stress-memory', size: '65MiB' }, proc)
  t.match(await refused(t, app, /^limits\.stress-memory\.size$/, { kind: 'stress-memory', size: '10%' }, proc), /must be given as a size/)
  await allowed(t, app, { kind: 'network-bandwidth', rate: '2mbit' })
  t.match(await refused(t, app, /^limits\.network-bandwidth\.rate$/, { kind: 'network-bandwidth', rate: '500kbit' }), /is not at least 1000000 bit\/s/)
  await refused(t, app, /^limits\.time-skew\.offset$/, { kind: 'time-skew', offset: '-2h' }, proc)
  await refused(t, app, /^limits\.time-skew\.offset$/, { kind: 'time-skew', offset: '+1h1s' }, proc)
})

t.test('paths: file, disk and stress-io faults stay in the directories allowed, and never through a link', { skip: root ? false : 'needs root (openat2)' }, async (t) => {
  const dir = tmpDir(t)
  const allowedDir = join(dir, 'app')
  mkdirSync(allowedDir)
  writeFileSync(join(allowedDir, 'app.conf'), 'listen 80\n')
  writeFileSync(join(dir, 'other.conf'), 'listen 80\n')
  symlinkSync(dir, join(allowedDir, 'up'))
  const app = await agentWith(t, `paths: [${allowedDir}/]\n`)
  await allowed(t, app, { kind: 'file-append', path: join(allowedDir, 'app.conf'), text: 'x' })
  t.match(await refused(t, app, /^paths$/, { kind: 'file-append', path: join(dir, 'other.conf'), text: 'x' }), /is not in/)
  const dotted = await post(app, { kind: 'file-append', path: `${allowedDir}/../other.conf`, text: 'x' })
  t.equal(dotted.statusCode, 400, 'a path with .. is refused before the policy sees it')
  t.match(dotted.json(), { code: 'FAULTLINE_ERR_VALIDATION', message: /not in normal form.*write it as/ })
  t.match(await refused(t, app, /^paths$/, { kind: 'file-append', path: join(allowedDir, 'up', 'other.conf'), text: 'x' }), /is a symbolic link on the way/)
  t.match(await refused(t, app, /^paths$/, { kind: 'stress-io' }, { type: 'host' }), /give path explicitly/)
  await allowed(t, app, { kind: 'disk-fill', path: allowedDir, size: '1MiB' })
  t.equal(readFileSync(join(dir, 'other.conf'), 'utf8'), 'listen 80\n', 'nothing outside was touched')
})

t.test('networks: network faults name their peers, none in a protected network', async (t) => {
  const app = await agentWith(t, 'networks: [10.0.0.0/8, "fd00::/8"]\n')
  t.match(await refused(t, app, /^networks$/, { kind: 'network-partition' }), /without peers would touch every network/)
  await refused(t, app, /^networks$/, { kind: 'network-loss', percent: 10, peers: ['10.1.2.3'] })
  await refused(t, app, /^networks$/, { kind: 'network-loss', percent: 10, peers: ['0.0.0.0/0'] })
  await refused(t, app, /^networks$/, { kind: 'network-delay', latency: '10ms', peers: ['fd12::1'] })
  t.match(await refused(t, app, /^networks$/, { kind: 'network-loss', percent: 10, peers: ['db.internal'] }), /must be IP addresses or CIDRs/)
  await allowed(t, app, { kind: 'network-loss', percent: 10, peers: ['192.0.2.0/24'] })
  await allowed(t, app, { kind: 'process-stop' }, { type: 'process', pid: sleeper(t).pid }, { dryRun: true })
})

t.test('a wrong policy file stops the agent at start, saying what is wrong', async (t) => {
  const cases: [string, RegExp, number?][] = [
    ['kinds: [process-melt]\n', /kinds: unknown fault kind "process-melt"/],
    ['limits:\n  stress-cpu: { heat: 5 }\n', /limits\.stress-cpu\.heat: stress-cpu has no parameter "heat"/],
    ['limits:\n  network-loss: { percent: lots }\n', /limits\.network-loss\.percent\.max: "lots" is not a number/],
    ['limits:\n  network-loss: { ports: 5 }\n', /only numbers, durations, sizes, rates and offsets can be bounded/],
    ['networks: [10.0.0.0/33]\n', /networks: "10\.0\.0\.0\/33" is not an IP address or a CIDR/],
    ['kinds: [process-stop\n', /is not valid YAML/],
    ['kindz: [process-stop]\n', /unknown rule "kindz"; the rules are kinds, targets, paths, maxDuration, limits, networks/],
    ['kinds: [process-stop]\n', /writable by others/, 0o666],
  ]
  for (const [yaml, message, mode] of cases) {
    t.throws(() => HostPolicyCheck.load(policyFile(t, yaml, mode)), { name: 'ConfigError', message }, yaml.trim())
  }
  const res = await runCli(['agent', '--policy', policyFile(t, 'maxDuration: soon\n'), '--state-dir', tmpDir(t), '--listen', '127.0.0.1:0'])
  t.equal(res.code, 2, 'faultline agent exits 2')
  t.match(res.stderr, /host policy .*maxDuration/)
  t.notMatch(res.stderr, /\n\s+at /, 'one clear line, no stack trace')
})

t.test('through a server run: a kind the policy forbids is refused at apply; a refused path lands in the run record, with the rule', async (t) => {
  const dir = tmpDir(t, 'fl-policy-run-')
  const files = tmpDir(t)
  const target = join(files, 'app.conf')
  writeFileSync(target, 'listen 80\n')
  const ADMIN = 'admin-token-for-the-policy-test-0123'
  const ENROL = 'enrol-token-for-the-policy-test-0123'
  const server = withBearer(await buildServer({ stateDir: join(dir, 'server'), adminToken: ADMIN, enrolToken: ENROL, leaseMs: 10_000 }), ADMIN)
  t.teardown(() => server.close())
  await server.listen({ host: '127.0.0.1', port: 0 })
  const url = `ws://127.0.0.1:${(server.server.address() as { port: number }).port}`
  const agent = await buildAgent({
    stateDir: join(dir, 'agent'),
    maxDurationMs: 3_600_000,
    policy: HostPolicyCheck.load(policyFile(t, `kinds: [process-stop, file-append]\npaths: [${join(files, 'allowed')}/]\n`)),
    link: { server: url, name: 'guarded', labels: {}, enrolToken: ENROL, backoff: { initialMs: 100, maxMs: 500 } },
  })
  t.teardown(() => agent.close())
  agent.link!.start()
  await waitFor('the link', () => agent.link!.state === 'ready' || undefined, 20_000)
  const s = sleeper(t)
  const kill = await server.inject({
    method: 'POST',
    url: '/v1/experiments',
    payload: { name: 'kill-it', hosts: { names: ['guarded'] }, target: { type: 'process', pid: s.pid }, fault: { kind: 'process-kill' }, duration: '1m' },
  })
  t.equal(kill.statusCode, 422, kill.body)
  t.match(kill.json(), { code: 'FAULTLINE_ERR_UNSUPPORTED', message: /guarded: not allowed by the host policy .*kinds: process-stop, file-append/ })
  t.equal(procState(s.pid), 'S', 'the process lives')

  const put = await server.inject({
    method: 'POST',
    url: '/v1/experiments',
    payload: { name: 'append-it', hosts: { names: ['guarded'] }, target: { type: 'host' }, fault: { kind: 'file-append', path: target, text: 'x' }, duration: '1m' },
  })
  t.equal(put.statusCode, 201, put.body)
  const runId = (await server.inject({ method: 'POST', url: '/v1/experiments/append-it/runs' })).json().id as string
  const run = await waitFor('the run to end', async () => {
    const r = (await server.inject({ method: 'GET', url: `/v1/runs/${runId}` })).json() as { status: string; records: { agent: string; status: string; reason: string; error: { code: string; message: string } | null }[] }
    return r.status !== 'running' ? r : undefined
  }, 20_000)
  t.equal(run.status, 'failed')
  t.match(run.records, [{ agent: 'guarded', status: 'failed', reason: 'policy', error: { code: 'FAULTLINE_ERR_POLICY', message: /paths/ } }])
  t.equal(readFileSync(target, 'utf8'), 'listen 80\n', 'the file is untouched')
})
