// What the dashboard needs from the server's API besides the event stream (events-stream.test.ts):
// whoami, tokens that expire (and the schema migration that adds them), /metrics, checking YAML
// with positions, audit filters and newest-first paging, event filters, runs by status with
// paging, "run again" from an archived run, and the fleet view's unavailable kinds and open
// injections. In process, with fake agents over a real loopback socket where agents are needed.
import Database from 'better-sqlite3'
import { join } from 'node:path'
import t from 'tap'
import { LINK_PROTOCOL_VERSION } from '../../protocol/link.js'
import { buildServer } from '../../server/app.js'
import { Store } from '../../server/store.js'
import { connectFake, fakeCapabilities } from './fake-agent.js'
import { writeFileSync } from 'node:fs'
import { runCli, tmpDir, waitFor, withBearer, type TestLike } from '../helpers.js'

const ADMIN = 'admin-token-for-dashboard-api-0123456789'
const ENROL = 'enrol-token-for-dashboard-api-0123456789'

async function server(t: TestLike, opts: { listen?: boolean; stateDir?: string } = {}) {
  const app = withBearer(await buildServer({ stateDir: opts.stateDir ?? tmpDir(t), adminToken: ADMIN, enrolToken: ENROL, leaseMs: 3_000 }), ADMIN)
  t.teardown(() => app.close())
  if (opts.listen) await app.listen({ host: '127.0.0.1', port: 0 })
  // In an object: Fastify is thenable, so an async function returning it would hand back the
  // instance without the bearer proxy.
  return { app }
}
type App = Awaited<ReturnType<typeof server>>['app']

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

async function mint(app: App, name: string, role: string, expiresIn?: string) {
  const res = await app.inject({ method: 'POST', url: '/v1/tokens', payload: { name, role, ...(expiresIn ? { expiresIn } : {}) } })
  if (res.statusCode !== 201) throw new Error(res.body)
  return res.json() as { id: string; token: string; expiresAt?: string }
}

const freeze = (name = 'freeze') => `name: ${name}\nhosts: { labels: { role: db } }\ntarget: { type: process, name: sleep }\nfault: { kind: process-stop }\nduration: 30s\n`

async function apply(app: App, yaml: string) {
  const res = await app.inject({ method: 'POST', url: '/v1/experiments', headers: { 'content-type': 'application/yaml' }, payload: yaml })
  if (res.statusCode >= 300) throw new Error(res.body)
}

t.test('whoami for the admin token and an API token', async (t) => {
  const { app } = await server(t)
  const admin = await app.inject({ method: 'GET', url: '/v1/whoami' })
  t.equal(admin.statusCode, 200)
  t.same(Object.keys(admin.json()).sort(), ['role', 'version', 'who'])
  t.match(admin.json(), { who: 'admin-token', role: 'admin', version: /^[0-9]+\.[0-9]+\.[0-9]+/ })
  const op = await mint(app, 'ci', 'operator', '8h')
  const me = (await app.inject({ method: 'GET', url: '/v1/whoami', headers: bearer(op.token) })).json()
  t.match(me, { who: 'token:ci', role: 'operator', tokenId: op.id, expiresAt: op.expiresAt })
  const left = Date.parse(me.expiresAt) - Date.now()
  t.ok(left > 8 * 3_600_000 - 60_000 && left <= 8 * 3_600_000, 'expires in 8h')
  const viewer = await mint(app, 'v', 'viewer')
  const vme = (await app.inject({ method: 'GET', url: '/v1/whoami', headers: bearer(viewer.token) })).json()
  t.match(vme, { role: 'viewer', tokenId: viewer.id }, 'any role')
  t.notOk('expiresAt' in vme, 'no expiry: no expiresAt')
})

t.test('GET /v1/events: token.* events for admins only, as on the stream', async (t) => {
  const { app } = await server(t)
  const viewer = await mint(app, 'watcher', 'viewer')
  const operator = await mint(app, 'runner', 'operator')
  await mint(app, 'later', 'operator')
  const types = async (headers: Record<string, string> = {}, q = '') =>
    ((await app.inject({ method: 'GET', url: `/v1/events${q}`, headers })).json().events as { type: string }[]).map((e) => e.type)
  t.same((await types()).filter((x) => x === 'token.created').length, 3, 'the admin sees every token event')
  t.same((await types(bearer(viewer.token))).filter((x) => x.startsWith('token.')), [], 'a viewer sees none')
  t.same((await types(bearer(operator.token), '?after=0')).filter((x) => x.startsWith('token.')), [], 'nor an operator, also when paging')
  t.same(await types(bearer(viewer.token), '?type=token.'), [], 'asking for them by type gives none either')
})

t.test('tokens that expire: 401 FAULTLINE_ERR_TOKEN_EXPIRED, listed with expiresAt, range checked', async (t) => {
  const { app } = await server(t)
  const tok = await mint(app, 'temp', 'operator', '1h')
  t.equal((await app.inject({ method: 'GET', url: '/v1/agents', headers: bearer(tok.token) })).statusCode, 200)
  const past = Date.now() - 1_000
  app.fleet.store.db.prepare('UPDATE tokens SET expires_at = ? WHERE id = ?').run(past, tok.id)
  const refused = await app.inject({ method: 'GET', url: '/v1/agents', headers: bearer(tok.token) })
  t.equal(refused.statusCode, 401)
  t.equal(refused.json().code, 'FAULTLINE_ERR_TOKEN_EXPIRED')
  t.equal(refused.json().message, `the API token temp expired at ${new Date(past).toISOString()}; ask an admin for a new one`)
  const post = await app.inject({ method: 'POST', url: '/v1/halt', headers: bearer(tok.token) })
  t.equal(post.statusCode, 401)
  const audit = (await app.inject({ method: 'GET', url: '/v1/audit?order=desc&limit=1' })).json().entries[0]
  t.match(audit, { who: 'token:temp', outcome: 'unauthenticated', route: '/v1/halt' }, 'the refusal is audited, naming the token')

  const listed = (await app.inject({ method: 'GET', url: '/v1/tokens' })).json().tokens as { name: string; expiresAt?: string }[]
  t.equal(listed.find((x) => x.name === 'temp')!.expiresAt, new Date(past).toISOString())
  for (const bad of ['8761h', '0s', '500ms', 'soon']) {
    const res = await app.inject({ method: 'POST', url: '/v1/tokens', payload: { name: 'x', role: 'viewer', expiresIn: bad } })
    t.equal(res.statusCode, 400, bad)
    t.match(res.json().code, /FAULTLINE_ERR_(BAD_DURATION|VALIDATION)/)
  }
  t.equal((await app.inject({ method: 'POST', url: '/v1/tokens', payload: { name: 'year', role: 'viewer', expiresIn: '8760h' } })).statusCode, 201, 'a year is the most')
})

t.test('the schema migration adds token expiry and keeps what was there', async (t) => {
  const stateDir = tmpDir(t)
  const store = new Store(stateDir)
  const tokenId = store.insertToken('tok-1', 'old', 'viewer', 'flt_old-secret-0123456789', 'admin-token').id
  store.addEvent('test.old', 'from before')
  store.close()
  // Back to schema 2, as a server of the previous version left it.
  const db = new Database(join(stateDir, 'server.sqlite'))
  db.exec('DROP INDEX events_run; DROP INDEX events_agent; ALTER TABLE tokens DROP COLUMN expires_at; PRAGMA user_version = 2;')
  db.close()
  const { app } = await server(t, { stateDir })
  t.equal(app.fleet.store.db.pragma('user_version', { simple: true }), 3)
  t.match(app.fleet.store.getToken(tokenId), { name: 'old', role: 'viewer', expiresAt: null })
  t.equal((await app.inject({ method: 'GET', url: '/v1/whoami', headers: bearer('flt_old-secret-0123456789') })).json().who, 'token:old', 'the old token still works')
  t.equal(app.fleet.store.events(0, 10)[0]!.type, 'test.old')
})

t.test('POST /v1/experiments/check: positions of every problem; stores nothing; not audited', async (t) => {
  const { app } = await server(t)
  const check = async (yaml: string, token = ADMIN) => app.inject({ method: 'POST', url: '/v1/experiments/check', headers: bearer(token), payload: { yaml } })
  const at = (yaml: string, needle: string, occurrence = 0) => {
    let index = -1
    for (let i = 0; i <= occurrence; i++) index = yaml.indexOf(needle, index + 1)
    const before = yaml.slice(0, index).split('\n')
    return { line: before.length, column: before.at(-1)!.length + 1 }
  }

  const valid = await check(freeze())
  t.equal(valid.statusCode, 200)
  t.match(valid.json(), { valid: true, experiment: { name: 'freeze', duration: '30s', fault: { kind: 'process-stop' } }, warnings: [] })

  const outOfRange = 'name: cpu\nhosts: { labels: { role: db } }\ntarget: { type: host }\nfault: { kind: stress-cpu, load: 150 }\nduration: 30s\n'
  const r1 = (await check(outOfRange)).json()
  t.equal(r1.valid, false)
  t.equal(r1.issues.length, 1)
  t.match(r1.issues[0], { path: 'fault.load', message: /load 150 is above the maximum 100/, ...at(outOfRange, '150'), endLine: 4 })
  t.equal(r1.issues[0].endColumn, at(outOfRange, '150').column + 3, 'ends after the value')

  const schemaRange = `${freeze()}maxTargets: 0\n`
  t.match((await check(schemaRange)).json().issues, [{ path: 'maxTargets', message: /maxTargets must be >= 1/, ...at(schemaRange, '0', 1) }])

  const unknownParam = 'name: stop\nhosts: { all: true }\ntarget: { type: process, name: sleep }\nfault:\n  kind: process-stop\n  signl: KILL\nduration: 30s\n'
  t.match((await check(unknownParam)).json().issues, [{ path: 'fault.signl', message: /has no parameter "signl"/, line: 6, column: 3, endLine: 6, endColumn: 8 }], 'an unknown parameter: its key')
  const unknownField = `${freeze()}colour: red\n`
  t.match((await check(unknownField)).json().issues, [{ path: 'colour', message: /has no field "colour"/, line: 6, column: 1, endColumn: 7 }], 'an unknown field: its key')

  const union = freeze().replace('labels: { role: db }', 'label: { role: db }')
  t.match((await check(union)).json().issues, [{ path: 'hosts', message: 'hosts needs one of labels, names, all', ...at(union, '{ label') }], 'a union: one issue naming its forms')

  // mode is a union of four forms: a problem inside one is one issue on that field, with every form allowed.
  const mode = freeze().replace('duration: 30s', 'mode: { fixed: 0 }\nduration: 30s')
  const modeIssues = (await check(mode)).json().issues
  t.equal(modeIssues.length, 1, `mode: one issue, not one per form: ${JSON.stringify(modeIssues)}`)
  t.match(modeIssues[0], { path: 'mode.fixed', message: /^mode\.fixed: fixed 0 is below the minimum 1 — allowed: .*a whole number from 1 to 100000/, ...at(mode, '0 }') })
  const badModes: [string, string, RegExp][] = [
    ['some', 'mode', /unknown mode "some"; did you mean one\? — allowed: "all" .*"one" .*\{ fixed: N \} .*\{ percent: P \}/],
    ['{ fixd: 2 }', 'mode.fixd', /mode has no field "fixd"; did you mean "fixed"\?/],
    ['{ fixed: 2, percent: 50 }', 'mode', /takes one of fixed, percent, not fixed and percent/],
    ['{ percent: 150 }', 'mode.percent', /percent 150 is above the maximum 100/],
    ['5', 'mode', /must be "all", "one" or an object, not 5/],
  ]
  for (const [value, path, message] of badModes) {
    const issues = (await check(freeze().replace('duration: 30s', `mode: ${value}\nduration: 30s`))).json().issues
    t.match(issues, [{ path, message }], `mode: ${value}`)
    t.equal(issues.length, 1, `mode: ${value}: one issue`)
  }
  // Apply (faultline exp apply) says the same, in one line.
  const applied = await app.inject({ method: 'POST', url: '/v1/experiments', headers: { ...bearer(ADMIN), 'content-type': 'application/yaml' }, payload: mode })
  t.equal(applied.statusCode, 400)
  t.match(applied.json(), { code: 'FAULTLINE_ERR_VALIDATION', message: /^mode\.fixed: fixed 0 is below the minimum 1 — allowed: / })

  const missing = 'name: stop\nhosts: { all: true }\ntarget: { type: process, name: sleep }\nfault: { kind: process-stop }\n'
  t.match((await check(missing)).json().issues, [{ path: '', message: /required property 'duration'/, line: 1, column: 1 }], 'a missing field: its nearest parent')

  const syntax = 'name: stop\nhosts: { all: true\ntarget: x\n'
  const r2 = (await check(syntax)).json()
  t.equal(r2.valid, false)
  t.ok(r2.issues.length >= 1)
  t.match(r2.issues[0], { path: '', line: Number, column: Number })
  t.ok(r2.issues[0].line >= 2, `a syntax error at its place: ${JSON.stringify(r2.issues[0])}`)

  const applyCheck = `${freeze().replace('30s', '30s\nschedule: "every tuesday"')}`
  t.match((await check(applyCheck)).json().issues, [{ path: 'schedule', message: /not a cron expression/, ...at(applyCheck, '"every tuesday"') }], 'checks made at apply too')

  const huge = await check(`description: ${'x'.repeat(70_000)}\n`)
  t.equal(huge.statusCode, 400, 'at most 64 KiB')

  const operator = await mint(app, 'op', 'operator')
  const viewer = await mint(app, 'viewer', 'viewer')
  t.equal((await check(freeze(), operator.token)).statusCode, 200, 'operator may')
  t.equal((await check(freeze(), viewer.token)).statusCode, 403, 'viewer may not')
  t.equal((await app.inject({ method: 'GET', url: '/v1/experiments' })).json().experiments.length, 0, 'nothing stored')
  const rows = (await app.inject({ method: 'GET', url: '/v1/audit?limit=1000' })).json().entries as { route: string; outcome: string }[]
  t.same(
    rows.filter((r) => r.route === '/v1/experiments/check').map((r) => r.outcome),
    ['forbidden'],
    'checks are not audited; the refused one is',
  )
})

t.test('audit: filters and newest-first paging', async (t) => {
  const { app } = await server(t)
  const viewer = await mint(app, 'watcher', 'viewer')
  for (let i = 0; i < 5; i++) await app.inject({ method: 'DELETE', url: `/v1/experiments/e${i}` })
  await app.inject({ method: 'POST', url: '/v1/halt', headers: bearer(viewer.token) })
  await app.inject({ method: 'GET', url: '/v1/agents', headers: bearer('wrong-token-0123456789') })
  const get = async (q: string) => {
    const res = await app.inject({ method: 'GET', url: `/v1/audit${q}` })
    t.equal(res.statusCode, 200, `${q}: ${res.body}`)
    return res.json().entries as { id: number; who: string; method: string; outcome: string; route: string }[]
  }
  const all = await get('?limit=1000')
  t.equal(all.length, 8)
  t.same(
    all.map((e) => e.id),
    [...all.map((e) => e.id)].sort((a, b) => a - b),
    'oldest first by default',
  )
  t.same(
    (await get('?who=watch')).map((e) => `${e.method} ${e.route} ${e.outcome}`),
    ['POST /v1/halt forbidden'],
    'who: a substring',
  )
  t.equal((await get('?outcome=error')).length, 5)
  t.same(
    (await get('?outcome=unauthenticated')).map((e) => e.method),
    ['GET'],
  )
  t.equal((await get('?method=DELETE')).length, 5)
  t.equal((await get('?method=DELETE&outcome=ok')).length, 0)
  const page1 = await get('?order=desc&limit=3')
  t.same(
    page1.map((e) => e.id),
    all.slice(-3).map((e) => e.id).reverse(),
    'newest first',
  )
  const page2 = await get(`?order=desc&limit=3&before=${page1.at(-1)!.id}`)
  t.same(
    page2.map((e) => e.id),
    all.slice(-6, -3).map((e) => e.id).reverse(),
    'before pages on',
  )
  const deletes = await get(`?order=desc&method=DELETE&limit=2&before=${all[4]!.id}`)
  t.same(
    deletes.map((e) => e.id),
    [all[3]!.id, all[2]!.id],
    'filters and paging together',
  )
  t.equal((await app.inject({ method: 'GET', url: '/v1/audit?outcome=maybe' })).statusCode, 400)
  t.equal((await app.inject({ method: 'GET', url: '/v1/audit?before=3' })).statusCode, 400, 'before needs order=desc')
})

t.test('with agents: events filters, runs by status and paging, run again, the fleet view, /metrics', async (t) => {
  const { app } = await server(t, { listen: true })
  const a1 = await connectFake(app, { name: 'db-1', labels: { role: 'db' }, authorization: `Bearer ${ENROL}`, autoHello: false })
  t.teardown(() => a1.ws.terminate())
  a1.hello({
    capabilities: {
      ...fakeCapabilities,
      kinds: {
        ...fakeCapabilities.kinds,
        'network-delay': { available: false, reason: 'kernel lacks sch_netem: install kernel-modules-extra', requires: ['qdisc:netem'], targets: ['host'], recoverable: true },
      },
    },
  })
  await waitFor('the agent', () => app.fleet.hub.isReady(a1.id) || undefined)
  const a2 = await connectFake(app, { name: 'db-2', labels: { role: 'db' }, authorization: `Bearer ${ENROL}` })
  t.teardown(() => a2.ws.terminate())

  await apply(app, freeze())
  const ids: string[] = []
  for (let i = 0; i < 3; i++) {
    const res = await app.inject({ method: 'POST', url: '/v1/experiments/freeze/runs' })
    t.equal(res.statusCode, 201, res.body)
    ids.push(res.json().id)
    await waitFor('active', () => app.fleet.store.records(ids[i]!).every((r) => r.status === 'active') || undefined)
    if (i < 2) {
      await app.inject({ method: 'POST', url: `/v1/runs/${ids[i]}/abort` })
      await waitFor('the run to end', () => app.fleet.store.getRun(ids[i]!)!.status === 'aborted' || undefined)
    }
  }

  // The fleet view: what is unavailable and why; open injections per agent.
  const agents = (await app.inject({ method: 'GET', url: '/v1/agents' })).json().agents as { id: string; unavailable: Record<string, string>; injections: unknown[]; kinds: string[] }[]
  const v1 = agents.find((a) => a.id === a1.id)!
  t.same(v1.unavailable, { 'network-delay': 'kernel lacks sch_netem: install kernel-modules-extra' })
  t.same(v1.kinds, ['process-stop'])
  t.same(agents.find((a) => a.id === a2.id)!.unavailable, {})
  for (const agent of [a1, a2]) {
    const rec = app.fleet.store.records(ids[2]!).find((r) => r.agentId === agent.id)!
    t.same(agents.find((a) => a.id === agent.id)!.injections, [
      { runId: ids[2], experiment: 'freeze', injectionId: rec.injectionId, kind: 'process-stop', target: 'process 4242 (sleep)', status: 'active' },
    ])
  }

  // Runs by status, and paging by run id.
  const runs = async (q: string) => ((await app.inject({ method: 'GET', url: `/v1/runs${q}` })).json().runs as { id: string; status: string }[]).map((r) => r.id)
  t.same(await runs('?status=open'), [ids[2]])
  t.same(await runs('?status=finished'), [ids[1], ids[0]])
  t.same(await runs('?limit=1'), [ids[2]])
  t.same(await runs(`?limit=1&before=${ids[2]}`), [ids[1]])
  t.same(await runs(`?before=${ids[1]}`), [ids[0]])
  t.same(await runs(`?status=finished&before=${ids[1]}&experiment=freeze`), [ids[0]])
  t.equal((await app.inject({ method: 'GET', url: '/v1/runs?before=nope' })).statusCode, 404)
  t.equal((await app.inject({ method: 'GET', url: '/v1/runs?status=sideways' })).statusCode, 400)

  // Events by run, agent and type prefix.
  const events = async (q: string) => (await app.inject({ method: 'GET', url: `/v1/events${q}` })).json().events as { type: string; runId?: string; agentId?: string }[]
  const ofRun = await events(`?runId=${ids[0]}&limit=1000`)
  t.ok(ofRun.length >= 4 && ofRun.every((e) => e.runId === ids[0]), 'runId')
  const records = await events('?type=record.&limit=1000')
  t.ok(records.length >= 6 && records.every((e) => e.type.startsWith('record.')), 'type prefix')
  const ofAgent = await events(`?agentId=${a1.id}&type=agent.&limit=1000`)
  t.same(
    ofAgent.map((e) => e.type),
    ['agent.enrolled', 'agent.connected'],
  )
  const after = await events(`?runId=${ids[0]}&after=${(ofRun[1] as unknown as { id: number }).id}&limit=2`)
  t.same(
    after.map((e) => (e as unknown as { id: number }).id),
    ofRun.slice(2, 4).map((e) => (e as unknown as { id: number }).id),
    'with after and limit',
  )

  // Run again from the archive, with the experiment changed and then deleted since.
  await app.inject({ method: 'POST', url: `/v1/runs/${ids[2]}/abort` })
  await waitFor('the run to end', () => app.fleet.store.getRun(ids[2]!)!.status === 'aborted' || undefined)
  await apply(app, freeze().replace('30s', '45s'))
  t.equal((await app.inject({ method: 'DELETE', url: '/v1/experiments/freeze' })).statusCode, 200)
  const viewer = await mint(app, 'v', 'viewer')
  t.equal((await app.inject({ method: 'POST', url: `/v1/runs/${ids[0]}/rerun`, headers: bearer(viewer.token) })).statusCode, 403)
  t.equal((await app.inject({ method: 'POST', url: '/v1/runs/nope/rerun' })).statusCode, 404)
  const again = await app.inject({ method: 'POST', url: `/v1/runs/${ids[0]}/rerun` })
  t.equal(again.statusCode, 201, again.body)
  const rerun = app.fleet.store.getRun(again.json().id)!
  t.match(rerun, { experiment: 'freeze', trigger: 'api', startedBy: 'admin-token' })
  t.equal(rerun.spec.duration, '30s', 'the spec as that run had it')
  await waitFor('the re-run active on both hosts', () => app.fleet.store.records(rerun.id).filter((r) => r.status === 'active').length === 2 || undefined)
  const started = (await events(`?runId=${rerun.id}&type=run.started`))[0] as unknown as { message: string; data: { rerunOf: string } }
  t.match(started.message, new RegExp(`a re-run of ${ids[0]}`))
  t.equal(started.data.rerunOf, ids[0])
  t.equal((await app.inject({ method: 'POST', url: `/v1/runs/${ids[0]}/rerun` })).statusCode, 409, 'one run of an experiment at a time')

  // Metrics (viewer role), after a halt and an invalid link message.
  a1.send('this is not JSON')
  await a1.next('error')
  const halt = await app.inject({ method: 'POST', url: '/v1/halt' })
  t.equal(halt.statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: 'Bearer nope-nope-nope-nope' } })).statusCode, 401)
  await waitFor('the halted run to end', () => app.fleet.store.getRun(rerun.id)!.status !== 'running' || undefined)
  const metrics = await app.inject({ method: 'GET', url: '/metrics', headers: bearer(viewer.token) })
  t.equal(metrics.statusCode, 200)
  t.match(metrics.headers['content-type'], /^text\/plain/)
  const body = metrics.body
  const value = (series: string) => {
    const m = new RegExp(`^${series.replace(/[{}"]/g, '\\$&')} ([0-9.e+-]+)$`, 'm').exec(body)
    return m ? Number(m[1]) : undefined
  }
  t.equal(value('faultline_server_agents_connected'), 2)
  t.equal(value('faultline_server_agents_known'), 2)
  t.equal(value('faultline_server_runs{status="aborted"}'), 4)
  t.equal(value('faultline_server_runs{status="running"}'), 0)
  t.equal(value('faultline_server_runs{status="completed"}'), 0, 'every status has a series')
  t.equal(value('faultline_server_records{status="aborted"}'), 8)
  t.ok(value('faultline_server_link_messages_total{direction="in"}')! > 10)
  t.ok(value('faultline_server_link_messages_total{direction="out"}')! > 10)
  t.equal(value('faultline_server_link_messages_rejected_total'), 1)
  t.equal(value('faultline_server_halt_duration_seconds_count'), 1)
  t.equal(value('faultline_server_event_stream_clients'), 0)
  t.match(body, /^faultline_server_process_cpu_seconds_total /m, 'default metrics, with the prefix')
  t.ok(a1.received.some((m) => m.type === 'halt') && a1.received.every((m) => m.v === LINK_PROTOCOL_VERSION))
})

t.test('/healthz is public; unknown routes still want a token; public routes are not audited', async (t) => {
  const { app } = await server(t)
  t.equal((await app.inject({ method: 'GET', url: '/healthz', headers: { authorization: 'Bearer wrong-but-ignored' } })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/healthz', headers: { authorization: '' } })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/v1/nothing-here', headers: { authorization: '' } })).statusCode, 401)
  const rows = (await app.inject({ method: 'GET', url: '/v1/audit' })).json().entries as { route: string }[]
  t.notOk(rows.some((r) => r.route === '/healthz'))
})

t.test('faultline tokens create --expires-in; tokens ls shows when', async (t) => {
  const { app } = await server(t, { listen: true })
  const address = app.server.address()
  if (!address || typeof address === 'string') throw new Error('no TCP address')
  const tokenFile = join(tmpDir(t), 'admin.token')
  writeFileSync(tokenFile, `${ADMIN}\n`, { mode: 0o600 })
  const common = ['--server', `http://127.0.0.1:${address.port}`, '--token-file', tokenFile]
  const created = await runCli(['tokens', 'create', '--name', 'alice', '--role', 'viewer', '--expires-in', '2h', ...common])
  t.equal(created.code, 0, created.stderr)
  t.match(created.stdout.trim(), /^flt_/)
  t.match(created.stderr, /\(alice, viewer, expires 20[0-9-]+T/)
  const listed = await runCli(['tokens', 'ls', ...common])
  t.equal(listed.code, 0, listed.stderr)
  t.match(listed.stdout, /EXPIRES/)
  t.match(listed.stdout, /alice\s+viewer.*in (1h59m|2h)/)
  const bad = await runCli(['tokens', 'create', '--name', 'bob', '--role', 'viewer', '--expires-in', '2 days', ...common])
  t.not(bad.code, 0)
  t.match(bad.stderr, /duration|expiresIn/)
})
