// The agent link on the server, driven by fake agents over loopback WebSockets:
// enrolment and credentials, bad messages that harm nobody else, host selection per mode,
// and the reconciliation after a reconnect. Real agents: fleet.test.ts.
import t from 'tap'
import { LINK_PROTOCOL_VERSION, MAX_LINK_MESSAGE_BYTES } from '../../protocol/link.js'
import { buildServer } from '../../server/app.js'
import { tmpDir, waitFor, withBearer, type TestLike } from '../helpers.js'
import { connectFake, fakeInjection, openLink, type FakeAgent } from './fake-agent.js'

const ENROL = 'enrol-token-for-tests-0123456789'
const ADMIN = 'admin-token-for-tests-0123456789'
const enrol = `Bearer ${ENROL}`

async function server(t: TestLike, leaseMs = 3_000) {
  const app = withBearer(await buildServer({ stateDir: tmpDir(t), adminToken: ADMIN, enrolToken: ENROL, leaseMs }), ADMIN)
  t.teardown(() => app.close())
  await app.listen({ host: '127.0.0.1', port: 0 })
  return app
}

type App = Awaited<ReturnType<typeof server>>

async function apply(app: App, experiment: Record<string, unknown>) {
  const res = await app.inject({ method: 'POST', url: '/v1/experiments', payload: { target: { type: 'process', name: 'sleep' }, fault: { kind: 'process-stop' }, duration: '30s', ...experiment } })
  if (res.statusCode >= 300) throw new Error(res.body)
}

async function startRun(app: App, name: string): Promise<string> {
  const res = await app.inject({ method: 'POST', url: `/v1/experiments/${name}/runs` })
  if (res.statusCode !== 201) throw new Error(res.body)
  return res.json().id as string
}

type Run = { status: string; records: { agent: string; status: string; reason: string; error: { code: string } | null; injectionId: string }[] }
const getRun = async (app: App, id: string) => (await app.inject({ method: 'GET', url: `/v1/runs/${id}` })).json() as Run

t.test('enrolment: a token to join, then the agent\'s own credential', async (t) => {
  const app = await server(t)
  await t.rejects(openLink(app, {}), /401/, 'no credentials')
  await t.rejects(openLink(app, { authorization: 'Bearer wrong-wrong-wrong-wrong' }), /401/, 'wrong enrolment token')
  const first = await connectFake(app, { name: 'db-1', authorization: enrol })
  t.equal(first.id, 'db-1', 'the proposed name becomes the id')
  t.ok(first.credential && first.credential.length >= 32, 'a credential of its own')
  const twin = await connectFake(app, { name: 'db-1', authorization: enrol })
  t.match(twin.id, /^db-1-[0-9a-f]{6}$/, 'a second agent asking for the same name gets a suffix')
  first.ws.terminate()
  await waitFor('the server to notice', () => !app.fleet.hub.isReady('db-1'))
  const again = await connectFake(app, { name: 'ignored', authorization: `Agent db-1:${first.credential}` })
  t.equal(again.id, 'db-1')
  t.equal(again.credential, undefined, 'no new credential on reconnect')
  await t.rejects(openLink(app, { authorization: 'Agent db-1:not-the-secret' }), /401/)
  await t.rejects(openLink(app, { authorization: `Agent nobody:${first.credential}` }), /401/)
  const agents = (await app.inject({ method: 'GET', url: '/v1/agents' })).json().agents as { id: string; connected: boolean; kinds: string[] }[]
  t.same(agents.map((a) => [a.id, a.connected]).sort(), [['db-1', true], [twin.id, true]].sort())
  t.same(agents[0]!.kinds, ['process-stop'])
})

t.test('malformed, oversized and out-of-order messages are refused, counted, and harm no one else', async (t) => {
  const app = await server(t)
  const bad = await connectFake(app, { name: 'bad', authorization: enrol, autoHello: false, answer: false })
  const good = await connectFake(app, { name: 'good', authorization: enrol })
  await apply(app, { name: 'only-good', hosts: { names: ['good'] } })

  const errorAfter = async (send: () => void) => {
    const from = bad.received.length
    send()
    return bad.next('error', from)
  }
  t.match(await errorAfter(() => bad.send({ v: 1, type: 'heartbeat', at: new Date().toISOString() })), { code: 'FAULTLINE_ERR_LINK_ORDER' }, 'heartbeat before hello')
  bad.hello()
  await waitFor('hello', () => app.fleet.hub.isReady('bad'))
  const cases: [string, () => void, string][] = [
    ['not JSON', () => bad.send('{"v":1,"type":'), 'FAULTLINE_ERR_LINK_MALFORMED'],
    ['an array', () => bad.send('[1,2,3]'), 'FAULTLINE_ERR_LINK_MALFORMED'],
    ['__proto__', () => bad.send('{"v":1,"type":"heartbeat","__proto__":{"x":1}}'), 'FAULTLINE_ERR_LINK_MALFORMED'],
    ['another protocol version', () => bad.send({ v: 2, type: 'heartbeat', at: new Date().toISOString() }), 'FAULTLINE_ERR_LINK_VERSION'],
    ['an unknown type', () => bad.send({ v: 1, type: 'launch-missiles' }), 'FAULTLINE_ERR_LINK_MALFORMED'],
    ['a bad field', () => bad.send({ v: 1, type: 'heartbeat', at: 'yesterday' }), 'FAULTLINE_ERR_LINK_MALFORMED'],
    ['an extra field', () => bad.send({ v: 1, type: 'heartbeat', at: new Date().toISOString(), extra: true }), 'FAULTLINE_ERR_LINK_MALFORMED'],
    ['a binary frame', () => bad.send(Buffer.from([1, 2, 3])), 'FAULTLINE_ERR_LINK_MALFORMED'],
    ['a second hello', () => bad.hello(), 'FAULTLINE_ERR_LINK_ORDER'],
    ['an answer nobody asked for', () => bad.send({ v: 1, type: 'ack', requestId: 'never-sent' }), 'FAULTLINE_ERR_LINK_ORDER'],
    ['an oversized message', () => bad.send({ v: 1, type: 'heartbeat', at: 'x'.repeat(MAX_LINK_MESSAGE_BYTES + 10) }), 'FAULTLINE_ERR_LINK_TOO_LARGE'],
  ]
  for (const [what, send, code] of cases) {
    const error = await errorAfter(send)
    t.equal(error.code, code, `${what}: ${error.message}`)
  }
  const unknownAck = bad.received.find((m) => m.type === 'error' && m.requestId === 'never-sent')
  t.ok(unknownAck, 'the error names the requestId it is about')
  t.equal(bad.ws.readyState, bad.ws.OPEN, 'the connection is kept')
  const leases = bad.received.length
  await bad.next('lease', leases)
  t.pass('and still renewed')

  // Meanwhile the good agent runs an experiment as if nothing happened.
  const runId = await startRun(app, 'only-good')
  await waitFor('active', async () => (await getRun(app, runId)).records[0]?.status === 'active')
  await app.inject({ method: 'POST', url: `/v1/runs/${runId}/abort` })
  const ended = await waitFor('aborted', async () => {
    const run = await getRun(app, runId)
    return run.status === 'aborted' ? run : undefined
  })
  t.match(ended.records, [{ agent: 'good', status: 'aborted', reason: 'abort' }])
  const agents = (await app.inject({ method: 'GET', url: '/v1/agents' })).json().agents as { id: string; invalidMessages: number }[]
  t.equal(agents.find((a) => a.id === 'bad')?.invalidMessages, cases.length + 1, 'counted')

  // A flood crosses the limit: that connection alone is closed.
  for (let i = 0; i < 25; i++) bad.send('garbage')
  t.match(await bad.closed, { code: 1008, reason: 'too many invalid messages' })
  t.ok(app.fleet.hub.isReady('good'), 'the good agent is still connected')
  const from = good.received.length
  await good.next('lease', from)
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200)

  // Beyond 4x the limit the ws layer itself closes the connection (1009).
  const huge = await connectFake(app, { name: 'huge', authorization: enrol, answer: false })
  huge.send('x'.repeat(4 * MAX_LINK_MESSAGE_BYTES + 1))
  t.match(await huge.closed, { code: 1009 })
  // Speaking for another agent closes the connection at once.
  const liar = await connectFake(app, { name: 'liar', authorization: enrol, autoHello: false, answer: false })
  liar.hello({ agentId: 'good' })
  t.match(await liar.closed, { code: 1008, reason: 'agent id mismatch' })
  t.ok(app.fleet.hub.isReady('good'))
  const events = (await app.inject({ method: 'GET', url: '/v1/events?limit=1000' })).json().events as { type: string; agentId?: string }[]
  t.ok(events.some((e) => e.type === 'link.invalid' && e.agentId === 'bad'))
  t.ok(events.some((e) => e.type === 'link.closed' && e.agentId === 'bad'))
})

t.test('modes pick the right number of connected matching hosts; offline and unchosen hosts are recorded', async (t) => {
  const app = await server(t)
  const fleet: FakeAgent[] = []
  for (let i = 1; i <= 5; i++) fleet.push(await connectFake(app, { name: `db-${i}`, authorization: enrol, labels: { role: 'db' } }))
  await connectFake(app, { name: 'web-1', authorization: enrol, labels: { role: 'web' } })
  const gone = await connectFake(app, { name: 'db-offline', authorization: enrol, labels: { role: 'db' } })
  gone.ws.terminate()
  await waitFor('offline', () => !app.fleet.hub.isReady('db-offline'))

  const expectations: [unknown, number][] = [
    ['all', 5],
    ['one', 1],
    [{ fixed: 2 }, 2],
    [{ fixed: 9 }, 5],
    [{ percent: 50 }, 3],
    [{ percent: 10 }, 1],
  ]
  for (const [mode, chosen] of expectations) {
    await apply(app, { name: 'modes', hosts: { labels: { role: 'db' } }, mode })
    const runId = await startRun(app, 'modes')
    const run = await waitFor('every chosen host active', async () => {
      const r = await getRun(app, runId)
      return r.records.filter((x) => x.status === 'active').length === chosen ? r : undefined
    })
    const count = (status: string) => run.records.filter((r) => r.status === status).length
    t.equal(count('active'), chosen, `${JSON.stringify(mode)}: ${chosen} host(s)`)
    t.equal(count('skipped'), 5 - chosen, 'the other connected db hosts are skipped')
    t.equal(count('offline'), 1, 'the offline db host is recorded')
    t.notOk(run.records.some((r) => r.agent === 'web-1'), 'hosts of other labels are not part of the run')
    t.equal(new Set(run.records.map((r) => r.agent)).size, run.records.length, 'one record per host (one target each)')
    // End it the way the agents would at the deadline.
    for (const agent of fleet) {
      for (const inj of agent.open.values()) {
        agent.open.delete(inj.id)
        agent.send({ v: LINK_PROTOCOL_VERSION, type: 'injection-update', injection: { ...inj, status: 'recovered' }, reason: 'deadline' })
      }
    }
    const ended = await waitFor('the run to end', async () => {
      const r = await getRun(app, runId)
      return r.status !== 'running' ? r : undefined
    })
    t.equal(ended.status, 'completed')
    t.equal(ended.records.filter((r) => r.status === 'recovered').length, chosen)
  }
  const second = await startRun(app, 'modes')
  const refused = await app.inject({ method: 'POST', url: '/v1/experiments/modes/runs' })
  t.equal(refused.statusCode, 409, 'one run of an experiment at a time')
  t.equal(refused.json().code, 'FAULTLINE_ERR_RUN_ACTIVE')
  const halted = (await app.inject({ method: 'POST', url: '/v1/halt' })).json() as { agents: { agent: string; ok: boolean }[]; offline: string[]; runs: string[] }
  t.equal(halted.agents.length, 6, 'halt reaches every connected agent')
  t.ok(halted.agents.every((a) => a.ok))
  t.same(halted.offline, ['db-offline'])
  t.same(halted.runs, [second])
  const after = await waitFor('halted', async () => {
    const r = await getRun(app, second)
    return r.status !== 'running' ? r : undefined
  })
  t.equal(after.status, 'aborted')
  t.ok(after.records.filter((r) => r.status === 'aborted').every((r) => r.reason === 'halt'))
})

t.test('after a reconnect: injections of an aborted run are recovered, vanished ones are written off', async (t) => {
  const app = await server(t)
  const agent = await connectFake(app, { name: 'db-1', authorization: enrol })
  await apply(app, { name: 'reconnect', hosts: { names: ['db-1'] } })
  const runId = await startRun(app, 'reconnect')
  await waitFor('active', async () => (await getRun(app, runId)).records[0]?.status === 'active')
  const [injection] = [...agent.open.values()]
  agent.ws.terminate()
  await waitFor('offline', () => !app.fleet.hub.isReady('db-1'))
  await app.inject({ method: 'POST', url: `/v1/runs/${runId}/abort` })
  t.equal((await getRun(app, runId)).status, 'running', 'waits for the offline agent (or its lease)')

  // Back within the lease, still holding the injection: the server asks for it back.
  const back = await connectFake(app, { name: 'x', authorization: `Agent db-1:${agent.credential}`, autoHello: false })
  back.open.set(injection!.id, injection!)
  const from = back.received.length
  back.hello()
  const recover = await back.next('recover', from)
  t.same(recover.injectionIds, [injection!.id])
  const run = await waitFor('aborted', async () => {
    const r = await getRun(app, runId)
    return r.status === 'aborted' ? r : undefined
  })
  t.match(run.records, [{ agent: 'db-1', status: 'aborted', reason: 'abort' }])

  // A run whose injection the agent no longer has, without saying why.
  const second = await startRun(app, 'reconnect')
  await waitFor('active', async () => (await getRun(app, second)).records[0]?.status === 'active')
  back.ws.terminate()
  await waitFor('offline', () => !app.fleet.hub.isReady('db-1'))
  const third = await connectFake(app, { name: 'x', authorization: `Agent db-1:${agent.credential}` })
  t.ok(third)
  const lost = await waitFor('written off', async () => {
    const r = await getRun(app, second)
    return r.status !== 'running' ? r : undefined
  })
  t.match(lost.records, [{ status: 'aborted', reason: 'missing', error: { code: 'FAULTLINE_ERR_AGENT_OFFLINE' } }])
  t.ok(fakeInjection)
})

t.test('a schedule starts runs on its own; a tick while a run is in progress is skipped and recorded', async (t) => {
  const app = await server(t)
  await connectFake(app, { name: 'db-1', authorization: enrol })
  // Every second (six-field cron); the runs last 30 s, so the ticks after the first are skipped.
  await apply(app, { name: 'ticking', hosts: { names: ['db-1'] }, schedule: '* * * * * *' })
  const run = await waitFor('a scheduled run', async () => {
    const runs = (await app.inject({ method: 'GET', url: '/v1/runs?experiment=ticking' })).json().runs as { id: string; trigger: string; startedBy: string }[]
    return runs[0]
  }, 10_000, 50)
  t.equal(run.trigger, 'schedule')
  t.equal(run.startedBy, 'schedule')
  await waitFor('active', async () => (await getRun(app, run.id)).records[0]?.status === 'active', 10_000)
  const skipped = await waitFor('a skipped tick', async () => {
    const events = (await app.inject({ method: 'GET', url: '/v1/events?limit=1000' })).json().events as { type: string; message: string }[]
    return events.find((e) => e.type === 'schedule.skipped')
  }, 10_000, 50)
  t.match(skipped.message, /ticking.*already has run/)
  const runs = (await app.inject({ method: 'GET', url: '/v1/runs?experiment=ticking' })).json().runs as unknown[]
  t.equal(runs.length, 1, 'no overlapping run')
  // Removing the schedule stops the ticks.
  await apply(app, { name: 'ticking', hosts: { names: ['db-1'] } })
  await app.inject({ method: 'POST', url: `/v1/runs/${run.id}/abort` })
  await waitFor('aborted', async () => (await getRun(app, run.id)).status === 'aborted', 10_000)
  await new Promise((r) => setTimeout(r, 2_500))
  t.equal(((await app.inject({ method: 'GET', url: '/v1/runs?experiment=ticking' })).json().runs as unknown[]).length, 1, 'no run after the schedule was removed')
})
