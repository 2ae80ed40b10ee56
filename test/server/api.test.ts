// The server's HTTP API in process (app.inject): authentication, roles, the audit log, and
// experiments in JSON and YAML. No agent is connected here (see link.test.ts and fleet.test.ts).
import t from 'tap'
import { buildServer } from '../../server/app.js'
import { tmpDir, type TestLike } from '../helpers.js'

const ADMIN = 'admin-token-for-tests-0123456789'
const ENROL = 'enrol-token-for-tests-0123456789'

async function server(t: TestLike) {
  const app = await buildServer({ stateDir: tmpDir(t), adminToken: ADMIN, enrolToken: ENROL })
  t.teardown(() => app.close())
  return app
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

const experimentYaml = `
name: db-latency
description: stop the sleepers
hosts: { labels: { role: db } }
mode: { fixed: 2 }
target: { type: process, name: sleep }
fault: { kind: process-stop }
duration: 30s
guards:
  - { tcp: { host: 127.0.0.1, port: 5432 }, every: 5s, failures: 2 }
`

t.test('401 without a token or with a wrong one; /healthz is open', async (t) => {
  const app = await server(t)
  const none = await app.inject({ method: 'GET', url: '/v1/agents' })
  t.equal(none.statusCode, 401)
  t.equal(none.json().code, 'FAULTLINE_ERR_UNAUTHORIZED')
  const wrong = await app.inject({ method: 'POST', url: '/v1/halt', headers: bearer('not-the-token-at-all-000000') })
  t.equal(wrong.statusCode, 401)
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/v1/agents', headers: bearer(ADMIN) })).statusCode, 200)
})

t.test('roles: viewer reads, operator runs experiments, admin manages tokens and agents', async (t) => {
  const app = await server(t)
  const mint = async (name: string, role: string) => {
    const res = await app.inject({ method: 'POST', url: '/v1/tokens', headers: bearer(ADMIN), payload: { name, role } })
    t.equal(res.statusCode, 201, res.body)
    return res.json() as { id: string; token: string; role: string }
  }
  const viewer = await mint('dashboard', 'viewer')
  const operator = await mint('ci', 'operator')
  t.match(viewer.token, /^flt_/, 'the secret is returned once')

  const listed = await app.inject({ method: 'GET', url: '/v1/tokens', headers: bearer(ADMIN) })
  t.equal(listed.statusCode, 200)
  t.same(
    listed.json().tokens.map((x: { name: string; role: string }) => [x.name, x.role]),
    [
      ['dashboard', 'viewer'],
      ['ci', 'operator'],
    ],
  )
  t.notMatch(listed.body, viewer.token, 'no secret in the listing')
  t.notMatch(listed.body, /flt_/)

  const as = (token: string, method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown) =>
    app.inject({ method, url, headers: { ...bearer(token), ...(typeof payload === 'string' ? { 'content-type': 'application/yaml' } : {}) }, ...(payload !== undefined ? { payload: payload as string } : {}) })

  for (const url of ['/v1/agents', '/v1/experiments', '/v1/runs', '/v1/events', '/v1/audit']) {
    t.equal((await as(viewer.token, 'GET', url)).statusCode, 200, `viewer GET ${url}`)
  }
  const denied = [
    await as(viewer.token, 'POST', '/v1/experiments', experimentYaml),
    await as(viewer.token, 'POST', '/v1/experiments/db-latency/runs'),
    await as(viewer.token, 'POST', '/v1/runs/nope/abort'),
    await as(viewer.token, 'POST', '/v1/halt'),
    await as(viewer.token, 'DELETE', '/v1/experiments/db-latency'),
    await as(viewer.token, 'GET', '/v1/tokens'),
    await as(operator.token, 'POST', '/v1/tokens', undefined),
    await as(operator.token, 'DELETE', '/v1/agents/some-agent'),
    await as(operator.token, 'GET', '/v1/tokens'),
  ]
  for (const res of denied) {
    t.equal(res.statusCode, 403, res.body)
    t.equal(res.json().code, 'FAULTLINE_ERR_FORBIDDEN')
  }

  const applied = await as(operator.token, 'POST', '/v1/experiments', experimentYaml)
  t.equal(applied.statusCode, 201, applied.body)
  const noHosts = await as(operator.token, 'POST', '/v1/experiments/db-latency/runs')
  t.equal(noHosts.statusCode, 422, 'the operator may start runs; none can start without agents')
  t.equal(noHosts.json().code, 'FAULTLINE_ERR_NO_HOSTS')
  t.equal((await as(operator.token, 'POST', '/v1/halt')).statusCode, 200, 'the operator may halt')
  t.equal((await as(ADMIN, 'DELETE', '/v1/agents/some-agent')).statusCode, 404, 'admin may remove agents (none here)')
  const revoked = await as(ADMIN, 'DELETE', `/v1/tokens/${viewer.id}`)
  t.equal(revoked.statusCode, 200)
  t.equal((await as(viewer.token, 'GET', '/v1/agents')).statusCode, 401, 'a revoked token no longer works')
})

t.test('every mutating call is audited: who, what, when, from where, outcome', async (t) => {
  const app = await server(t)
  const op = (await app.inject({ method: 'POST', url: '/v1/tokens', headers: bearer(ADMIN), payload: { name: 'alice', role: 'operator' } })).json() as { token: string }
  const viewer = (await app.inject({ method: 'POST', url: '/v1/tokens', headers: bearer(ADMIN), payload: { name: 'bob', role: 'viewer' } })).json() as { token: string }
  const calls: [string, string, Record<string, string>, string | undefined, number][] = [
    ['POST', '/v1/experiments', { ...bearer(op.token), 'content-type': 'application/yaml' }, experimentYaml, 201],
    ['POST', '/v1/experiments', { ...bearer(viewer.token), 'content-type': 'application/yaml' }, experimentYaml, 403],
    ['POST', '/v1/halt', bearer('wrong-token-wrong-token-000'), undefined, 401],
    ['DELETE', '/v1/experiments/db-latency', bearer(op.token), undefined, 200],
    ['POST', '/v1/runs/nope/abort', bearer(op.token), undefined, 404],
  ]
  for (const [method, url, headers, payload, status] of calls) {
    const res = await app.inject({ method: method as 'POST', url, headers, remoteAddress: '10.200.9.9', ...(payload ? { payload } : {}) })
    t.equal(res.statusCode, status, `${method} ${url}: ${res.body}`)
  }
  const { entries } = (await app.inject({ method: 'GET', url: '/v1/audit', headers: bearer(ADMIN) })).json() as {
    entries: { who: string; method: string; url: string; route: string; status: number; outcome: string; source: string; at: string }[]
  }
  const mine = entries.filter((e) => e.source === '10.200.9.9')
  t.same(
    mine.map((e) => [e.who, e.method, e.url, e.status, e.outcome]),
    [
      ['token:alice', 'POST', '/v1/experiments', 201, 'ok'],
      ['token:bob', 'POST', '/v1/experiments', 403, 'forbidden'],
      ['anonymous', 'POST', '/v1/halt', 401, 'unauthenticated'],
      ['token:alice', 'DELETE', '/v1/experiments/db-latency', 200, 'ok'],
      ['token:alice', 'POST', '/v1/runs/nope/abort', 404, 'error'],
    ],
  )
  for (const e of mine) t.ok(Date.parse(e.at) > Date.now() - 60_000, 'when')
  t.ok(entries.some((e) => e.url === '/v1/tokens' && e.who === 'admin-token'), 'token creation is audited too')
  t.notMatch(JSON.stringify(entries), /flt_/, 'no secret ever reaches the audit log')
})

t.test('experiments: YAML or JSON, create 201 then replace 200, validation with clear errors', async (t) => {
  const app = await server(t)
  const post = (payload: string, type = 'application/yaml') => app.inject({ method: 'POST', url: '/v1/experiments', headers: { ...bearer(ADMIN), 'content-type': type }, payload })
  const created = await post(experimentYaml)
  t.equal(created.statusCode, 201, created.body)
  t.match(created.json(), { name: 'db-latency', spec: { mode: { fixed: 2 }, guards: [{ tcp: { port: 5432 }, failures: 2 }] }, updatedBy: 'admin-token' })
  const asJson = JSON.stringify({ name: 'db-latency', hosts: { names: ['db-1', 'db-2'] }, mode: 'one', target: { type: 'process', name: 'sleep' }, fault: { kind: 'process-stop' }, duration: '1m', schedule: '*/30 * * * *' })
  const replaced = await post(asJson, 'application/json')
  t.equal(replaced.statusCode, 200, 'the same name replaces')
  t.match(replaced.json(), { spec: { mode: 'one', hosts: { names: ['db-1', 'db-2'] } } })
  t.ok(Date.parse(replaced.json().nextRunAt) > Date.now(), 'a schedule gives a next run')
  const list = (await app.inject({ method: 'GET', url: '/v1/experiments', headers: bearer(ADMIN) })).json()
  t.equal(list.experiments.length, 1)
  t.equal((await app.inject({ method: 'GET', url: '/v1/experiments/db-latency', headers: bearer(ADMIN) })).statusCode, 200)

  const bad: [string, string, string, RegExp][] = [
    ['name: [unclosed', 'application/yaml', 'FAULTLINE_ERR_BAD_YAML', /not valid YAML/],
    [experimentYaml.replace('process-stop', 'process-melt'), 'application/yaml', 'FAULTLINE_ERR_VALIDATION', /unknown fault kind "process-melt"/],
    [experimentYaml + 'schedule: "every tuesday"\n', 'application/yaml', 'FAULTLINE_ERR_BAD_SCHEDULE', /not a cron expression/],
    [experimentYaml.replace('duration: 30s', 'duration: 30 seconds'), 'application/yaml', 'FAULTLINE_ERR_BAD_DURATION', /duration/],
    [experimentYaml.replace('{ fixed: 2 }', '{ percent: 0 }'), 'application/yaml', 'FAULTLINE_ERR_VALIDATION', /mode/],
    [experimentYaml.replace('name: db-latency', 'name: DB Latency'), 'application/yaml', 'FAULTLINE_ERR_VALIDATION', /name/],
    ['{"__proto__": {"x": 1}}', 'application/json', 'FAULTLINE_ERR_FORBIDDEN_KEY', /__proto__/],
    ['name: x', 'text/plain', 'FAULTLINE_ERR_UNSUPPORTED_MEDIA_TYPE', /./],
  ]
  for (const [payload, type, code, message] of bad) {
    const res = await post(payload, type)
    t.equal(res.json().code, code, `${code}: ${res.body}`)
    t.match(res.json().message, message)
    t.ok(res.statusCode >= 400 && res.statusCode < 500)
  }
  t.equal((await app.inject({ method: 'GET', url: '/v1/experiments/nope', headers: bearer(ADMIN) })).json().code, 'FAULTLINE_ERR_EXPERIMENT_NOT_FOUND')
  t.equal((await app.inject({ method: 'GET', url: '/v1/runs/nope', headers: bearer(ADMIN) })).json().code, 'FAULTLINE_ERR_RUN_NOT_FOUND')
  t.equal((await app.inject({ method: 'DELETE', url: '/v1/experiments/db-latency', headers: bearer(ADMIN) })).statusCode, 200)
  t.equal((await app.inject({ method: 'DELETE', url: '/v1/experiments/db-latency', headers: bearer(ADMIN) })).statusCode, 404)
  const events = (await app.inject({ method: 'GET', url: '/v1/events', headers: bearer(ADMIN) })).json().events as { type: string }[]
  t.same(events.map((e) => e.type), ['experiment.applied', 'experiment.applied', 'experiment.deleted'])
})

t.test('no unauthenticated mode: without a token every route but /healthz is 401, also for a loopback caller', async (t) => {
  const app = await server(t)
  for (const [method, url] of [['POST', '/v1/tokens'], ['GET', '/v1/agents'], ['POST', '/v1/halt'], ['GET', '/v1/audit']] as const) {
    const res = await app.inject({ method, url, remoteAddress: '127.0.0.1', ...(method === 'POST' ? { payload: { name: 'x', role: 'admin' } } : {}) })
    t.equal(res.statusCode, 401, `${method} ${url}`)
  }
  const viewer = (await app.inject({ method: 'POST', url: '/v1/tokens', headers: bearer(ADMIN), payload: { name: 'x', role: 'viewer' } })).json().token as string
  t.equal((await app.inject({ method: 'POST', url: '/v1/halt', headers: bearer(viewer) })).statusCode, 403, 'a token carries its role')
})
