// The server with a fleet of real agents (`faultline agent` processes, separate state dirs),
// over TLS with a throwaway CA. Each agent runs in its own PID namespace (unshare --pid
// --mount-proc) with its own `sleep` to fault, so the agents are as separate as hosts: the same
// target selector finds a different process on each. One agent also has its own network
// namespace, joined to the server by a veth pair in 10.200.0.0/16. The server is a real process
// too, so it can be killed with SIGKILL.
//
// Covered: modes all / one / fixed 2 / percent pick the right number of hosts, with process-stop
// on real processes; a failing guard on one host; halt-all; viewer 403, wrong token 401 and an
// audit row per mutation; a fake agent sending garbage during a run; a partitioned agent that
// recovers on its own and reports it on reconnect; kill -9 of the server (recovery within
// lease + 1 s on every agent).
import { spawnSync } from 'node:child_process'
import { randomBytes, randomInt } from 'node:crypto'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import WebSocket from 'ws'
import { LINK_PROTOCOL_VERSION, MAX_LINK_MESSAGE_BYTES } from '../../protocol/link.js'
import { cliEntry, makePki, procState, spawnLogged, tmpDir, waitFor, type LoggedProcess, type TestLike } from '../helpers.js'

const LEASE_MS = 3_000
const ADMIN = `admin-${randomBytes(16).toString('hex')}`
const ENROL = `enrol-${randomBytes(16).toString('hex')}`

if (process.getuid?.() !== 0) {
  t.plan(0, 'needs root (network and PID namespaces)')
  process.exit(0)
}

// ---- fixtures ------------------------------------------------------------------------------------

function sh(argv: string[]): void {
  const res = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' })
  if (res.status !== 0) throw new Error(`${argv.join(' ')} failed: ${res.stderr}`)
}

/** A network namespace joined to this one by a veth pair: host side .1, namespace side .2. */
function hostNs(t: TestLike) {
  const tag = `${process.pid.toString(36)}${randomBytes(2).toString('hex')}`
  const subnet = randomInt(150, 250)
  const ns = { name: `fl-srv-${tag}`, path: `/var/run/netns/fl-srv-${tag}`, hostDev: `flsv${tag}h`.slice(-15), nsDev: `flsv${tag}n`.slice(-15), hostIp: `10.200.${subnet}.1`, nsIp: `10.200.${subnet}.2` }
  t.teardown(() => {
    // Deleting the namespace deletes its veth end, and with it the host end.
    spawnSync('ip', ['netns', 'del', ns.name])
    spawnSync('ip', ['link', 'del', ns.hostDev], { stdio: 'ignore' })
  })
  sh(['ip', 'netns', 'add', ns.name])
  sh(['ip', 'link', 'add', ns.hostDev, 'type', 'veth', 'peer', 'name', ns.nsDev, 'netns', ns.name])
  sh(['ip', 'addr', 'add', `${ns.hostIp}/24`, 'dev', ns.hostDev])
  sh(['ip', 'link', 'set', ns.hostDev, 'up'])
  sh(['ip', '-n', ns.name, 'addr', 'add', `${ns.nsIp}/24`, 'dev', ns.nsDev])
  sh(['ip', '-n', ns.name, 'link', 'set', ns.nsDev, 'up'])
  sh(['ip', '-n', ns.name, 'link', 'set', 'lo', 'up'])
  return ns
}

type Proc = LoggedProcess

/** /proc/PID of the process whose command line is exactly argv (host view), if any. */
function findProcess(argv: string[]): number | undefined {
  const want = argv.join('\0') + '\0'
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8') === want) return Number(entry)
    } catch {
      /* gone */
    }
  }
  return undefined
}

// ---- the fleet -----------------------------------------------------------------------------------

const dir = tmpDir(t, 'fl-fleet-')
const ns = hostNs(t)
const pki = makePki(dir, ns.hostIp)
writeFileSync(join(dir, 'admin-token'), ADMIN, { mode: 0o600 })
writeFileSync(join(dir, 'enrol-token'), ENROL, { mode: 0o600 })
const serverState = join(dir, 'server')

let server: Proc
let base = ''

async function startServer(port = 0): Promise<void> {
  server = spawnLogged(t, [
    process.execPath, '--import', 'tsx', cliEntry, 'server',
    '--listen', `${ns.hostIp}:${port}`, '--state-dir', serverState, '--lease', `${LEASE_MS / 1000}s`,
    '--admin-token-file', join(dir, 'admin-token'), '--enrol-token-file', join(dir, 'enrol-token'),
    '--tls-cert', pki('server.crt'), '--tls-key', pki('server.key'), '--log-level', 'info',
  ])
  const ready = await waitFor('the server to be ready', () => {
    if (!server.running()) throw new Error(`server exited: ${server.stderr()}`)
    return server.logs.find((l) => l.msg === 'faultline server ready')
  }, 60_000, 100)
  base = String(ready.url)
}

interface Agent {
  name: string
  proc: Proc
  sleeperArgv: string[]
  /** Host pid of the agent's own `sleep`. */
  sleeper: number
}

function startAgent(name: string, netns?: string): Proc & { sleeperArgv: string[] } {
  const sleeperArgv = ['sleep', `${randomInt(3000, 3600)}.${process.pid}${randomInt(1000, 9999)}`]
  const state = join(dir, `agent-${name}`)
  const argv = [
    'unshare', '--pid', '--fork', '--mount-proc', '--kill-child',
    // The agent's own "host process": a sleep in its PID namespace, then the agent (PID 1 there).
    'sh', '-c', 'sleep "$0" & exec "$@"', sleeperArgv[1]!,
    process.execPath, '--import', 'tsx', cliEntry, 'agent', '--listen', '127.0.0.1:0', '--state-dir', state, '--log-level', 'info',
    '--server', `wss://${ns.hostIp}:${new URL(base).port}`, '--enrol-token-file', join(dir, 'enrol-token'), '--server-ca', pki('ca.crt'),
    '--labels', 'role=db', '--name', name,
  ]
  if (netns) argv.unshift('nsenter', `--net=${netns}`, '--')
  return { ...spawnLogged(t, argv), sleeperArgv }
}

async function api<T = Record<string, unknown>>(method: string, path: string, token = ADMIN, body?: unknown): Promise<{ status: number; body: T }> {
  const { Agent: UndiciAgent, fetch: undiciFetch } = await import('undici')
  const dispatcher = new UndiciAgent({ connect: { ca: readFileSync(pki('ca.crt')) } })
  try {
    const res = await undiciFetch(`${base}${path}`, {
      method,
      dispatcher,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    })
    const text = await res.text()
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T }
  } finally {
    await dispatcher.close()
  }
}

type Run = { id: string; status: string; records: { agent: string; status: string; reason: string; error: { code: string; message: string } | null; injectionId: string; target: string }[] }
const getRun = async (id: string) => (await api<Run>('GET', `/v1/runs/${id}`)).body

async function apply(experiment: Record<string, unknown>): Promise<void> {
  const res = await api('POST', '/v1/experiments', ADMIN, {
    hosts: { labels: { role: 'db' } },
    target: { type: 'process', name: 'sleep' },
    fault: { kind: 'process-stop' },
    duration: '60s',
    ...experiment,
  })
  if (res.status >= 300) throw new Error(JSON.stringify(res.body))
}

async function startRun(name: string): Promise<string> {
  const res = await api<{ id: string }>('POST', `/v1/experiments/${name}/runs`)
  if (res.status !== 201) throw new Error(JSON.stringify(res.body))
  return res.body.id
}

const runEnded = (id: string, timeoutMs = 30_000) =>
  waitFor(`run ${id} to end`, async () => {
    const run = await getRun(id)
    return run.status !== 'running' ? run : undefined
  }, timeoutMs, 100)

const agents: Agent[] = []
const stopped = () => agents.filter((a) => procState(a.sleeper) === 'T').map((a) => a.name).sort()

t.before(async () => {
  await startServer()
  const specs: [string, string | undefined][] = [
    ['db-1', undefined],
    ['db-2', undefined],
    ['db-3', undefined],
    ['db-ns', ns.path],
  ]
  const procs = specs.map(([name, netns]) => ({ name, proc: startAgent(name, netns) }))
  await waitFor('four agents connected', async () => {
    for (const { name, proc } of procs) if (!proc.running()) throw new Error(`agent ${name} exited: ${proc.stderr()}`)
    const res = await api<{ agents: { id: string; connected: boolean }[] }>('GET', '/v1/agents')
    return res.body.agents.filter((a) => a.connected).length === 4 || undefined
  }, 90_000, 250)
  for (const { name, proc } of procs) {
    const sleeper = findProcess(proc.sleeperArgv)
    if (!sleeper) throw new Error(`no sleeper for ${name}`)
    agents.push({ name, proc, sleeperArgv: proc.sleeperArgv, sleeper })
  }
})

// ---- tests ---------------------------------------------------------------------------------------

t.test('the agents enrolled with their labels; the one in its namespace came through the veth', async (t) => {
  const res = await api<{ agents: { id: string; connected: boolean; labels: Record<string, string>; address?: string; kinds: string[] }[] }>('GET', '/v1/agents')
  t.same(res.body.agents.map((a) => a.id).sort(), ['db-1', 'db-2', 'db-3', 'db-ns'])
  for (const a of res.body.agents) {
    t.same(a.labels, { role: 'db' })
    t.ok(a.kinds.includes('process-stop'), `${a.id} can stop processes`)
  }
  t.equal(res.body.agents.find((a) => a.id === 'db-ns')?.address, ns.nsIp, 'db-ns dialled from its own namespace')
  t.same(stopped(), [], 'no sleeper stopped before any run')
})

t.test('modes all / one / fixed 2 / percent pick the right number of hosts, on real processes', async (t) => {
  const cases: [string, unknown, number][] = [
    ['mode-all', 'all', 4],
    ['mode-one', 'one', 1],
    ['mode-fixed', { fixed: 2 }, 2],
    ['mode-percent', { percent: 75 }, 3],
  ]
  for (const [name, mode, chosen] of cases) {
    await apply({ name, mode, duration: '2s' })
    const id = await startRun(name)
    const active = await waitFor(`${name}: ${chosen} host(s) active`, async () => {
      const run = await getRun(id)
      return run.records.filter((r) => r.status === 'active').length === chosen ? run : undefined
    }, 30_000, 50)
    const activeHosts = active.records.filter((r) => r.status === 'active').map((r) => r.agent).sort()
    t.same(stopped(), activeHosts, `${name}: exactly the chosen hosts' sleepers are stopped (${activeHosts.join(', ')})`)
    t.equal(active.records.filter((r) => r.status === 'skipped').length, 4 - chosen, `${name}: the others are skipped`)
    for (const r of active.records.filter((x) => x.status === 'active')) {
      t.match(r.target, /sleep/, 'the record names the process')
      t.match(r.injectionId, /\S/, 'and the injection id')
    }
    const ended = await runEnded(id)
    t.equal(ended.status, 'completed', `${name}: completed at its deadline`)
    t.same(ended.records.filter((r) => r.status === 'recovered').map((r) => r.agent).sort(), activeHosts, `${name}: recovered where it ran`)
    await waitFor('every sleeper running again', () => stopped().length === 0, 10_000)
    t.pass(`${name}: every sleeper runs again`)
  }
})

t.test('a failing guard aborts and recovers that host while the others continue', async (t) => {
  // A TCP guard on loopback: the agents in this network namespace reach the test's listener,
  // db-ns has a loopback of its own where nothing listens.
  const listener = createServer((s) => s.destroy())
  await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => listener.close(() => r())))
  const port = (listener.address() as { port: number }).port
  await apply({ name: 'guarded', mode: 'all', duration: '60s', guards: [{ tcp: { host: '127.0.0.1', port, timeout: '1s' }, every: '300ms' }] })
  const id = await startRun('guarded')
  // The guards are checked once before anything is applied: on db-ns it fails at once, so the
  // fault is never applied there (not applied for one guard interval and then recovered).
  const run = await waitFor('the guard to fail on db-ns', async () => {
    const r = await getRun(id)
    return r.records.find((x) => x.agent === 'db-ns')?.status === 'failed' ? r : undefined
  }, 30_000, 100)
  const nsRecord = run.records.find((x) => x.agent === 'db-ns')!
  t.equal(nsRecord.reason, 'guard')
  t.equal(nsRecord.error?.code, 'FAULTLINE_ERR_GUARD_FAILED')
  t.match(nsRecord.error?.message, /before the fault was applied, so nothing was applied: .*tcp 127\.0\.0\.1/, 'the record says which check failed, and that nothing was applied')
  t.equal(nsRecord.injectionId, '', 'no injection was made on db-ns')
  await waitFor('the others active', async () => (await getRun(id)).records.filter((r) => r.status === 'active').length === 3 || undefined, 30_000, 100)
  t.equal(procState(agents.find((a) => a.name === 'db-ns')!.sleeper), 'S', "db-ns's process was never stopped")
  t.same(stopped(), ['db-1', 'db-2', 'db-3'], 'the others continue')
  t.equal((await getRun(id)).status, 'running')
  const events = (await api<{ events: { type: string; agentId?: string; runId?: string }[] }>('GET', '/v1/events?limit=1000')).body.events
  t.ok(events.some((e) => e.type === 'guard.failed' && e.agentId === 'db-ns' && e.runId === id), 'the guard failure is an event')
  t.equal((await api('POST', `/v1/runs/${id}/abort`)).status, 200)
  const ended = await runEnded(id)
  t.equal(ended.status, 'aborted')
  t.same(stopped(), [])
})

t.test('roles and audit: viewer 403, wrong token 401, halt-all by an operator, a row per mutation', async (t) => {
  const viewer = await api<{ token: string }>('POST', '/v1/tokens', ADMIN, { name: 'fleet-viewer', role: 'viewer' })
  const operator = await api<{ token: string }>('POST', '/v1/tokens', ADMIN, { name: 'fleet-operator', role: 'operator' })
  t.equal(viewer.status, 201)
  const experiment = { name: 'rbac', hosts: { labels: { role: 'db' } }, target: { type: 'process', name: 'sleep' }, fault: { kind: 'process-stop' }, duration: '60s' }
  t.equal((await api('GET', '/v1/agents', viewer.body.token)).status, 200, 'a viewer reads')
  t.equal((await api('POST', '/v1/experiments', viewer.body.token, experiment)).status, 403, 'a viewer cannot apply')
  t.equal((await api('POST', '/v1/halt', viewer.body.token)).status, 403, 'a viewer cannot halt')
  t.equal((await api('POST', '/v1/halt', 'not-a-token-not-a-token-0000')).status, 401, 'a wrong token is 401')
  t.equal((await api('POST', '/v1/tokens', operator.body.token, { name: 'x', role: 'admin' })).status, 403, 'an operator cannot mint tokens')
  t.equal((await api('POST', '/v1/experiments', operator.body.token, experiment)).status, 201, 'an operator applies')
  const run = await api<{ id: string }>('POST', '/v1/experiments/rbac/runs', operator.body.token)
  t.equal(run.status, 201)
  await waitFor('all active', async () => (await getRun(run.body.id)).records.filter((r) => r.status === 'active').length === 4 || undefined, 30_000, 100)
  t.same(stopped(), ['db-1', 'db-2', 'db-3', 'db-ns'])
  const halt = await api<{ agents: { agent: string; ok: boolean }[]; offline: string[]; runs: string[] }>('POST', '/v1/halt', operator.body.token)
  t.equal(halt.status, 200)
  t.equal(halt.body.agents.length, 4)
  t.ok(halt.body.agents.every((a) => a.ok), 'every agent acknowledged the halt')
  t.same(halt.body.runs, [run.body.id])
  t.same(stopped(), [], 'every sleeper runs again when halt answers')
  const ended = await runEnded(run.body.id)
  t.equal(ended.status, 'aborted')
  t.ok(ended.records.every((r) => r.status === 'aborted' && r.reason === 'halt'), 'records say halt')

  const audit = (await api<{ entries: { who: string; method: string; url: string; status: number; outcome: string; source: string }[] }>('GET', '/v1/audit?limit=1000')).body.entries
  const expected: [string, string, string, number][] = [
    ['admin-token', 'POST', '/v1/tokens', 201],
    ['token:fleet-viewer', 'POST', '/v1/experiments', 403],
    ['token:fleet-viewer', 'POST', '/v1/halt', 403],
    ['anonymous', 'POST', '/v1/halt', 401],
    ['token:fleet-operator', 'POST', '/v1/tokens', 403],
    ['token:fleet-operator', 'POST', '/v1/experiments', 201],
    ['token:fleet-operator', 'POST', '/v1/experiments/rbac/runs', 201],
    ['token:fleet-operator', 'POST', '/v1/halt', 200],
  ]
  for (const [who, method, url, status] of expected) {
    t.ok(audit.some((e) => e.who === who && e.method === method && e.url === url && e.status === status && e.source === ns.hostIp), `audited: ${who} ${method} ${url} ${status}`)
  }
  // Every mutation of the earlier tests too (admin applies, runs and aborts).
  t.ok(audit.filter((e) => e.who === 'admin-token' && e.url === '/v1/experiments').length >= 5, 'admin applies audited')
  t.ok(audit.some((e) => e.who === 'admin-token' && /^\/v1\/runs\/.+\/abort$/.test(e.url)), 'abort audited')
  t.notOk(audit.some((e) => e.method === 'GET'), 'reads are not audited')
})

t.test('a fake agent sending malformed, oversized and out-of-order messages harms no one', async (t) => {
  await apply({ name: 'garbage', mode: 'all', duration: '60s' })
  const id = await startRun('garbage')
  await waitFor('all active', async () => (await getRun(id)).records.filter((r) => r.status === 'active').length === 4 || undefined, 30_000, 100)

  const ws = new WebSocket(`wss://${ns.hostIp}:${new URL(base).port}/v1/agents/connect`, {
    headers: { authorization: `Bearer ${ENROL}`, 'x-faultline-agent-name': 'evil' },
    ca: readFileSync(pki('ca.crt')),
  })
  t.teardown(() => ws.terminate())
  const received: { type: string; code?: string }[] = []
  ws.on('message', (d: Buffer) => received.push(JSON.parse(d.toString()) as { type: string; code?: string }))
  const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)))
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  await waitFor('welcome', () => received.some((m) => m.type === 'welcome'))
  const errorsAfter = async (payload: string | Buffer, code: string) => {
    const from = received.length
    ws.send(payload)
    const e = await waitFor(`error ${code}`, () => received.slice(from).find((m) => m.type === 'error'), 10_000)
    t.equal(e.code, code, `${String(payload).slice(0, 40)} -> ${code}`)
  }
  await errorsAfter(JSON.stringify({ v: LINK_PROTOCOL_VERSION, type: 'heartbeat', at: new Date().toISOString() }), 'FAULTLINE_ERR_LINK_ORDER')
  await errorsAfter('{"v":1,', 'FAULTLINE_ERR_LINK_MALFORMED')
  await errorsAfter(JSON.stringify({ v: LINK_PROTOCOL_VERSION, type: 'ack', requestId: 'x' }), 'FAULTLINE_ERR_LINK_ORDER')
  await errorsAfter(JSON.stringify({ v: LINK_PROTOCOL_VERSION, type: 'heartbeat', at: 'x'.repeat(MAX_LINK_MESSAGE_BYTES) }), 'FAULTLINE_ERR_LINK_TOO_LARGE')
  // An injection update for another agent's injection, out of the blue.
  const run = await getRun(id)
  await errorsAfter(JSON.stringify({ v: LINK_PROTOCOL_VERSION, type: 'injection-update', injection: { id: run.records[0]!.injectionId }, reason: 'abort' }), 'FAULTLINE_ERR_LINK_MALFORMED')
  for (let i = 0; i < 30; i++) ws.send(randomBytes(64))
  t.equal(await closed, 1008, 'the flood closes that connection')

  const after = await getRun(id)
  t.equal(after.status, 'running')
  t.equal(after.records.filter((r) => r.status === 'active').length, 4, 'every real agent still active')
  t.same(stopped(), ['db-1', 'db-2', 'db-3', 'db-ns'])
  const listed = (await api<{ agents: { id: string; connected: boolean }[] }>('GET', '/v1/agents')).body.agents
  t.same(listed.filter((a) => a.connected).map((a) => a.id).sort(), ['db-1', 'db-2', 'db-3', 'db-ns'], 'the real agents stay connected')
  t.equal(server.running(), true, 'the server is alive')
  await api('POST', `/v1/runs/${id}/abort`)
  t.equal((await runEnded(id)).status, 'aborted')
  await waitFor('every sleeper running', () => stopped().length === 0, 10_000)
})

t.test('an agent cut off from the server recovers on its own and reports it on reconnect', async (t) => {
  await apply({ name: 'partition', mode: 'all', duration: '60s' })
  const id = await startRun('partition')
  await waitFor('all active', async () => (await getRun(id)).records.filter((r) => r.status === 'active').length === 4 || undefined, 30_000, 100)
  const nsAgent = agents.find((a) => a.name === 'db-ns')!
  t.equal(procState(nsAgent.sleeper), 'T')
  // Cut db-ns's namespace off: its end of the veth goes down.
  sh(['ip', '-n', ns.name, 'link', 'set', ns.nsDev, 'down'])
  let up = false
  t.teardown(() => {
    if (!up) spawnSync('ip', ['-n', ns.name, 'link', 'set', ns.nsDev, 'up'])
  })
  const cutAt = Date.now()
  await waitFor('db-ns to recover its process on its own', () => procState(nsAgent.sleeper) !== 'T', LEASE_MS + 15_000, 20)
  const took = Date.now() - cutAt
  t.comment(`db-ns recovered ${took} ms after the cut (lease ${LEASE_MS} ms)`)
  t.ok(took <= LEASE_MS + 1_000, `recovered within lease + 1 s (${took} ms)`)
  t.same(stopped(), ['db-1', 'db-2', 'db-3'], 'the connected agents keep their injections')
  sh(['ip', '-n', ns.name, 'link', 'set', ns.nsDev, 'up'])
  up = true
  const reported = await waitFor('db-ns to report on reconnect', async () => {
    const run = await getRun(id)
    const rec = run.records.find((r) => r.agent === 'db-ns')
    return rec && rec.status === 'aborted' ? rec : undefined
  }, 45_000, 200)
  t.equal(reported.reason, 'lease')
  t.equal(reported.error?.code, 'FAULTLINE_ERR_LEASE_EXPIRED')
  await waitFor('db-ns connected again', async () => (await api<{ agents: { id: string; connected: boolean }[] }>('GET', '/v1/agents')).body.agents.find((a) => a.id === 'db-ns')?.connected, 30_000, 200)
  await api('POST', `/v1/runs/${id}/abort`)
  t.equal((await runEnded(id)).status, 'aborted')
  await waitFor('every sleeper running', () => stopped().length === 0, 10_000)
})

t.test('kill -9 of the server during a run: every agent recovers within lease + 1 s, and says so when it is back', async (t) => {
  await apply({ name: 'orphaned', mode: 'all', duration: '60s' })
  const id = await startRun('orphaned')
  await waitFor('all active', async () => (await getRun(id)).records.filter((r) => r.status === 'active').length === 4 || undefined, 30_000, 100)
  t.same(stopped(), ['db-1', 'db-2', 'db-3', 'db-ns'])
  const port = Number(new URL(base).port)
  server.child.kill('SIGKILL')
  const killedAt = Date.now()
  await server.exited
  const recoveredAt = new Map<string, number>()
  await waitFor('every agent to recover on its own', () => {
    for (const a of agents) if (!recoveredAt.has(a.name) && procState(a.sleeper) !== 'T') recoveredAt.set(a.name, Date.now() - killedAt)
    return recoveredAt.size === agents.length || undefined
  }, LEASE_MS + 20_000, 20)
  t.comment(`recovered after the kill (ms): ${JSON.stringify(Object.fromEntries(recoveredAt))}`)
  for (const [name, ms] of recoveredAt) t.ok(ms <= LEASE_MS + 1_000, `${name} recovered within lease + 1 s (${ms} ms)`)

  // The server comes back on the same address: every agent reconnects and reports.
  await startServer(port)
  const ended = await runEnded(id, 60_000)
  t.equal(ended.status, 'aborted', 'the run ends: every host stopped early')
  for (const r of ended.records) {
    t.equal(r.status, 'aborted', `${r.agent}: aborted`)
    t.equal(r.reason, 'lease', `${r.agent}: by its lease`)
  }
})
