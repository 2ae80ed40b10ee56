// The agent's end of the link (agent/link), in process: an agent built with `link` dials a server
// listening on loopback. Enrolment and the saved credential, a server injection on a real
// process with its lease, the lease running out when the server is gone, the report on
// reconnect, and the pieces on their own (LeaseWatch, normaliseServerUrl).
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { buildAgent } from '../../../agent/app.js'
import { credentialPath } from '../../../agent/link/credential.js'
import { LeaseWatch } from '../../../agent/link/lease.js'
import { normaliseServerUrl } from '../../../agent/link/link.js'
import { buildServer } from '../../../server/app.js'
import { procState, sleep, sleeper, tmpDir, waitFor, withBearer, type TestLike } from '../../helpers.js'

const ENROL = 'enrol-token-for-the-link-test-0123456789'
const ADMIN = 'admin-token-for-the-link-test-0123456789'

t.test('normaliseServerUrl: the link path is added, http(s) become ws(s), other schemes are refused', async (t) => {
  t.equal(normaliseServerUrl('wss://fl.example:7071'), 'wss://fl.example:7071/v1/agents/connect')
  t.equal(normaliseServerUrl('https://fl.example:7071/'), 'wss://fl.example:7071/v1/agents/connect')
  t.equal(normaliseServerUrl('http://127.0.0.1:7071'), 'ws://127.0.0.1:7071/v1/agents/connect')
  t.equal(normaliseServerUrl('wss://fl.example/custom/path'), 'wss://fl.example/custom/path')
  t.throws(() => normaliseServerUrl('ftp://fl.example'), /must be a wss:\/\/ URL/)
})

t.test('LeaseWatch: expires once after leaseMs without renewal; a renewal pushes it back', async (t) => {
  let expired = 0
  const lease = new LeaseWatch(() => expired++)
  t.teardown(() => lease.stop())
  t.ok(lease.expired, 'no lease before the first renewal')
  lease.renew(300)
  t.notOk(lease.expired)
  t.ok(lease.expiresAt > Date.now() && lease.expiresAt <= Date.now() + 300)
  await sleep(150)
  lease.renew(300)
  await sleep(200)
  t.equal(expired, 0, 'renewed in time: not expired')
  await waitFor('expiry', () => expired === 1 || undefined, 5_000)
  t.ok(lease.expired)
  await sleep(400)
  t.equal(expired, 1, 'expires once, not again and again')
})

async function startServer(t: TestLike, stateDir: string, leaseMs: number, port = 0): Promise<{ app: FastifyInstance; url: string; port: number }> {
  const app = withBearer(await buildServer({ stateDir, adminToken: ADMIN, enrolToken: ENROL, leaseMs }), ADMIN)
  t.teardown(() => app.close())
  await app.listen({ host: '127.0.0.1', port })
  const bound = (app.server.address() as { port: number }).port
  return { app, url: `ws://127.0.0.1:${bound}`, port: bound }
}

/** The server's agent list, once every agent it knows is connected (its side of the handshake). */
async function connectedAgents(app: FastifyInstance): Promise<{ id: string; connected: boolean }[]> {
  return waitFor('the server to see the agent connected', async () => {
    const agents = (await app.inject({ method: 'GET', url: '/v1/agents' })).json().agents as { id: string; connected: boolean }[]
    return agents.length > 0 && agents.every((a) => a.connected) ? agents : undefined
  }, 10_000, 50)
}

async function startAgent(t: TestLike, stateDir: string, server: string, enrolToken?: string): Promise<FastifyInstance> {
  const agent = await buildAgent({
    stateDir,
    maxDurationMs: 3_600_000,
    link: { server, name: 'link-test', labels: { role: 'test' }, backoff: { initialMs: 100, maxMs: 500 }, ...(enrolToken ? { enrolToken } : {}) },
  })
  t.teardown(() => agent.close())
  agent.link!.start()
  return agent
}

t.test('enrols once, keeps its credential, runs a server injection on a real process and recovers it when the lease runs out', async (t) => {
  const dir = tmpDir(t, 'fl-link-')
  const leaseMs = 1_500
  const srv = await startServer(t, join(dir, 'server'), leaseMs)
  const agentState = join(dir, 'agent')
  const agent = await startAgent(t, agentState, srv.url, ENROL)
  await waitFor('the link to be ready', () => agent.link!.state === 'ready' || undefined, 20_000)
  t.equal(agent.link!.agentId, 'link-test')
  const file = credentialPath(agentState)
  t.ok(existsSync(file), 'credential saved in the state dir')
  t.equal(statSync(file).mode & 0o077, 0, 'readable by the agent only')
  t.notMatch(readFileSync(file, 'utf8'), ENROL, 'the enrolment token is not stored')
  t.ok(agent.link!.status().leaseExpiresAt, 'a lease is held')

  const target = sleeper(t)
  const put = await srv.app.inject({
    method: 'POST',
    url: '/v1/experiments',
    payload: { name: 'one-process', hosts: { names: ['link-test'] }, target: { type: 'process', pid: target.pid }, fault: { kind: 'process-stop' }, duration: '10m' },
  })
  t.equal(put.statusCode, 201, put.body)
  const runId = (await srv.app.inject({ method: 'POST', url: '/v1/experiments/one-process/runs' })).json().id as string
  await waitFor('the process stopped', () => procState(target.pid) === 'T' || undefined, 20_000)
  const open = agent.injector.openWithOrigin().filter((o) => o.origin?.who === 'server')
  t.equal(open.length, 1)
  t.match(open[0]!.origin, { who: 'server', lease: true, runId }, 'bound to the lease and the run')

  // The server goes away: no renewal; the agent recovers by itself after about one lease.
  await srv.app.close()
  const gone = Date.now()
  await waitFor('the lease to run out', () => procState(target.pid) !== 'T' || undefined, leaseMs + 10_000)
  t.ok(Date.now() - gone <= leaseMs + 2_000, `recovered ${Date.now() - gone} ms after the server went away`)
  t.equal(agent.injector.openWithOrigin().length, 0)

  // The server is back (same state, same port): the agent reconnects with its credential and
  // reports the recovery; the run ends.
  const again = await startServer(t, join(dir, 'server'), leaseMs, srv.port)
  const run = await waitFor('the run to end', async () => {
    const r = (await again.app.inject({ method: 'GET', url: `/v1/runs/${runId}` })).json() as { status: string; records: { status: string; reason: string; error: { code: string } | null }[] }
    return r.status !== 'running' ? r : undefined
  }, 30_000, 100)
  t.equal(run.status, 'aborted')
  t.match(run.records, [{ status: 'aborted', reason: 'lease', error: { code: 'FAULTLINE_ERR_LEASE_EXPIRED' } }])
  const agents = await connectedAgents(again.app)
  t.same(agents.map((a) => [a.id, a.connected]), [['link-test', true]], 'the same id, no second enrolment')
})

t.test('an agent restarted without the enrolment token reconnects with its saved credential', async (t) => {
  const dir = tmpDir(t, 'fl-link-')
  const srv = await startServer(t, join(dir, 'server'), 5_000)
  const first = await startAgent(t, join(dir, 'agent'), srv.url, ENROL)
  await waitFor('ready', () => first.link!.state === 'ready' || undefined, 20_000)
  await first.close()
  const second = await startAgent(t, join(dir, 'agent'), srv.url)
  await waitFor('ready again', () => second.link!.state === 'ready' || undefined, 20_000)
  t.equal(second.link!.agentId, 'link-test')
  const agents = await connectedAgents(srv.app)
  t.same(agents.map((a) => [a.id, a.connected]), [['link-test', true]])
})
