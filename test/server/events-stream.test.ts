// GET /v1/events/stream over a real listening server, read the way the dashboard reads it: fetch()
// streaming with the bearer header. Hello and cursor; a run's events live; resume after a
// disconnect with every missed fleet event and audit row exactly once, in order, a backlog of
// several pages included; no token.* events and no token secret for a viewer (nor a secret for
// an admin); revocation and expiry end the stream with signed-out; app.close() with open
// streams; a bad cursor; a reader that does not read is dropped.
import { connect } from 'node:net'
import t from 'tap'
import { buildServer, type ServerOptions } from '../../server/app.js'
import { connectFake } from './fake-agent.js'
import { sleep, tmpDir, waitFor, withBearer, type TestLike } from '../helpers.js'

const ADMIN = 'admin-token-for-stream-tests-0123456789'
const ENROL = 'enrol-token-for-stream-tests-0123456789'

async function server(t: TestLike, opts: Partial<ServerOptions> = {}) {
  const app = withBearer(await buildServer({ stateDir: tmpDir(t), adminToken: ADMIN, enrolToken: ENROL, leaseMs: 3_000, ...opts }), ADMIN)
  t.teardown(() => app.close())
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (!address || typeof address === 'string') throw new Error('no TCP address')
  return { app, base: `http://127.0.0.1:${address.port}`, port: address.port }
}

interface Message {
  id?: string
  event?: string
  data?: string
  comment?: string
}

/** An SSE reader on fetch(): every message parsed, and every byte kept. */
async function openStream(t: TestLike, base: string, token: string, opts: { lastEventId?: string; query?: string } = {}) {
  const abort = new AbortController()
  const res = await fetch(`${base}/v1/events/stream${opts.query ?? ''}`, {
    headers: { authorization: `Bearer ${token}`, ...(opts.lastEventId ? { 'last-event-id': opts.lastEventId } : {}) },
    signal: abort.signal,
  })
  const messages: Message[] = []
  let raw = ''
  let ended = false
  const done = (async () => {
    if (!res.body) return
    const decoder = new TextDecoder()
    let buffer = ''
    try {
      for await (const chunk of res.body) {
        const text = decoder.decode(chunk as Uint8Array, { stream: true })
        raw += text
        buffer += text
        for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
          const block = buffer.slice(0, i)
          buffer = buffer.slice(i + 2)
          const m: Message = {}
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) m.comment = line.slice(1).trim()
            else if (line.startsWith('id: ')) m.id = line.slice(4)
            else if (line.startsWith('event: ')) m.event = line.slice(7)
            else if (line.startsWith('data: ')) m.data = line.slice(6)
          }
          messages.push(m)
        }
      }
    } catch {
      /* aborted */
    }
    ended = true
  })()
  t.teardown(() => abort.abort())
  // sse: the message's id: line (the cursor); the rest is its data (which has its own id).
  const of = (event: string) => messages.filter((m) => m.event === event).map((m) => ({ sse: m.id!, ...(JSON.parse(m.data!) as Record<string, unknown>) }) as { sse: string; [key: string]: unknown })
  return {
    res,
    messages,
    raw: () => raw,
    ended: () => ended,
    done,
    close: () => abort.abort(),
    of,
    fleet: () => of('fleet') as unknown as { sse: string; id: number; type: string; message: string; at: string; runId?: string }[],
    audit: () => of('audit') as unknown as { sse: string; id: number; route: string; method: string; at: string }[],
    lastId: () => messages.filter((m) => m.id !== undefined).at(-1)?.id,
  }
}

const mint = async (app: Awaited<ReturnType<typeof server>>['app'], name: string, role: string, expiresIn?: string) => {
  const res = await app.inject({ method: 'POST', url: '/v1/tokens', payload: { name, role, ...(expiresIn ? { expiresIn } : {}) } })
  if (res.statusCode !== 201) throw new Error(res.body)
  return res.json() as { id: string; token: string; name: string }
}

t.test('hello first, with a cursor; a run reaches the stream live', async (t) => {
  const { app, base } = await server(t)
  app.fleet.event('test.before', 'before the stream')
  const s = await openStream(t, base, ADMIN)
  t.equal(s.res.status, 200)
  t.match(s.res.headers.get('content-type'), /^text\/event-stream/)
  const hello = await waitFor('hello', () => s.of('hello')[0])
  t.equal(s.messages[0]!.event, 'hello', 'the first message is hello')
  t.match(hello, { role: 'admin', who: 'admin-token' })
  t.match(hello.cursor as string, /^[0-9]+\.[0-9]+$/)
  t.equal(hello.sse, hello.cursor, 'its id is the cursor')
  const { eventId } = app.fleet.store.lastIds()
  t.equal(hello.cursor, `${eventId}.${app.fleet.store.lastIds().auditId}`, 'no cursor: the stream starts at the current end')

  const agent = await connectFake(app, { name: 'db-1', labels: { role: 'db' }, authorization: `Bearer ${ENROL}` })
  t.teardown(() => agent.ws.terminate())
  const applied = await app.inject({
    method: 'POST',
    url: '/v1/experiments',
    headers: { 'content-type': 'application/yaml' },
    payload: 'name: freeze\nhosts: { labels: { role: db } }\ntarget: { type: process, name: sleep }\nfault: { kind: process-stop }\nduration: 30s\n',
  })
  t.equal(applied.statusCode, 201, applied.body)
  const started = await app.inject({ method: 'POST', url: '/v1/experiments/freeze/runs' })
  t.equal(started.statusCode, 201)
  const runId = started.json().id as string
  await waitFor('the record to turn active on the stream', () => s.fleet().find((e) => e.type === 'record.active' && e.runId === runId))
  const types = s.fleet().map((e) => e.type)
  t.notOk(types.includes('test.before'), 'nothing from before the stream')
  t.ok(types.includes('agent.connected') && types.includes('experiment.applied') && types.includes('run.started'), types.join(', '))
  await waitFor('the audit rows of the apply and the run', () => s.audit().filter((a) => a.method === 'POST').length >= 2 || undefined)
  t.same(
    s.audit().map((a) => a.route),
    ['/v1/experiments', '/v1/experiments/:name/runs'],
  )
  // Each message's payload is the row exactly as the polling API gives it.
  const polled = (await app.inject({ method: 'GET', url: `/v1/events?runId=${runId}` })).json().events as { id: number }[]
  const streamed = s.fleet().filter((e) => e.runId === runId)
  t.same(
    streamed.map(({ sse: _cursor, ...e }) => e),
    polled.slice(0, streamed.length),
    'fleet messages are FleetEvents as GET /v1/events gives them',
  )
  const cursors = s.messages.filter((m) => m.id).map((m) => m.id!.split('.').map(Number))
  for (let i = 1; i < cursors.length; i++) t.ok(cursors[i]![0]! >= cursors[i - 1]![0]! && cursors[i]![1]! >= cursors[i - 1]![1]!, 'cursors never go back')
  await app.inject({ method: 'POST', url: `/v1/runs/${runId}/abort` })
})

t.test('resume: every missed event and audit row exactly once, in order, then live ones', async (t) => {
  const { app, base } = await server(t)
  const first = await openStream(t, base, ADMIN)
  await waitFor('hello', () => first.of('hello')[0])
  app.fleet.event('test.seen', 'seen before the disconnect')
  await app.inject({ method: 'DELETE', url: '/v1/experiments/nope' })
  await waitFor('both seen', () => (first.fleet().length === 1 && first.audit().length === 1) || undefined)
  const cursor = first.lastId()!
  first.close()
  await first.done

  // Missed: more than two pages of fleet events (a page is 200 rows) and some audit rows, interleaved.
  const N = 450
  const M = 25
  for (let i = 0; i < N; i++) {
    app.fleet.event('test.missed', `missed ${i}`)
    if (i % 18 === 0 && i / 18 < M) await app.inject({ method: 'DELETE', url: `/v1/experiments/missed-${i}` })
  }
  const [e0, a0] = cursor.split('.').map(Number) as [number, number]
  const missedEvents = app.fleet.store.events(e0, 10_000).map((e) => e.id)
  const missedAudit = app.fleet.store.auditAfter(a0, 10_000).map((a) => a.id)
  t.equal(missedEvents.length, N)
  t.equal(missedAudit.length, M)

  const again = await openStream(t, base, ADMIN, { lastEventId: cursor })
  // Live ones while the backlog is still going out.
  for (let i = 0; i < 20; i++) {
    app.fleet.event('test.live', `live ${i}`)
    if (i % 5 === 0) await app.inject({ method: 'DELETE', url: `/v1/experiments/live-${i}` })
    if (i % 7 === 0) await sleep(1)
  }
  await waitFor('every missed and live message', () => (again.fleet().length >= N + 20 && again.audit().length >= M + 4) || undefined)
  await sleep(200)
  const hello = again.of('hello')[0]!
  t.equal(hello.cursor, cursor, 'hello repeats the cursor it resumes from')
  const fleetIds = again.fleet().map((e) => e.id)
  const auditIds = again.audit().map((a) => a.id)
  t.same(
    again.fleet().map((e) => Number(e.sse.split('.')[0])),
    fleetIds,
    "each fleet message's cursor carries its id",
  )
  const allEvents = app.fleet.store.events(e0, 10_000).map((e) => e.id)
  const allAudit = app.fleet.store.auditAfter(a0, 10_000).map((a) => a.id)
  t.same(fleetIds, allEvents, 'every fleet event after the cursor, once, oldest first')
  t.same(auditIds, allAudit, 'every audit row after the cursor, once, oldest first')
  t.equal(new Set(fleetIds).size, fleetIds.length, 'no duplicate')
  t.same(
    again.fleet().filter((e) => e.type === 'test.missed').map((e) => e.message),
    Array.from({ length: N }, (_, i) => `missed ${i}`),
  )
  // Fleet events and audit rows are merged in time order.
  const ats = again.messages.filter((m) => m.event === 'fleet' || m.event === 'audit').map((m) => Date.parse((JSON.parse(m.data!) as { at: string }).at))
  t.ok(
    ats.every((at, i) => i === 0 || at >= ats[i - 1]!),
    'in time order',
  )
  // ?after= works as Last-Event-ID does.
  const byQuery = await openStream(t, base, ADMIN, { query: `?after=${cursor}` })
  await waitFor('the backlog by ?after', () => (byQuery.fleet().length >= N + 20 && byQuery.audit().length >= M + 4) || undefined)
  t.same(byQuery.fleet().map((e) => e.id).slice(0, N + 20), allEvents)
})

t.test('a viewer sees no token.* event; no stream carries a token secret', async (t) => {
  const { app, base } = await server(t)
  const viewer = await mint(app, 'dashboard', 'viewer')
  const vs = await openStream(t, base, viewer.token)
  const as = await openStream(t, base, ADMIN)
  await waitFor('hellos', () => (vs.of('hello')[0] && as.of('hello')[0]) || undefined)
  t.match(vs.of('hello')[0], { role: 'viewer', who: 'token:dashboard' })

  const secrets: string[] = []
  for (const [name, role] of [
    ['ci', 'operator'],
    ['ops', 'admin'],
  ]) {
    secrets.push((await mint(app, name!, role!, '8h')).token)
  }
  const listed = (await app.inject({ method: 'GET', url: '/v1/tokens' })).json().tokens as { id: string; name: string }[]
  await app.inject({ method: 'DELETE', url: `/v1/tokens/${listed.find((x) => x.name === 'ci')!.id}` })
  app.fleet.event('test.marker', 'after the tokens')
  await waitFor('the marker on both streams', () => (vs.fleet().some((e) => e.type === 'test.marker') && as.fleet().some((e) => e.type === 'test.marker')) || undefined)
  await waitFor('the audit rows on both', () => (vs.audit().length >= 3 && as.audit().length >= 3) || undefined)

  t.same(
    as.fleet().map((e) => e.type),
    ['token.created', 'token.created', 'token.revoked', 'test.marker'],
    'the admin sees token events',
  )
  t.same(
    vs.fleet().map((e) => e.type),
    ['test.marker'],
    'the viewer does not',
  )
  t.same(
    vs.audit().map((a) => `${a.method} ${a.route}`),
    ['POST /v1/tokens', 'POST /v1/tokens', 'DELETE /v1/tokens/:id'],
    'audit rows go to every role',
  )
  for (const secret of secrets) {
    t.notOk(vs.raw().includes(secret), "no secret in the viewer's bytes")
    t.notOk(as.raw().includes(secret), "no secret in the admin's bytes")
  }
  t.notMatch(vs.raw() + as.raw(), /flt_/, 'nothing that looks like a token at all')
  t.notOk(as.raw().includes(ADMIN), 'nor the admin token')
})

t.test('revoking or expiring the token ends its stream with signed-out', async (t) => {
  const { app, base } = await server(t)
  const viewer = await mint(app, 'alice', 'viewer')
  const other = await mint(app, 'bob', 'viewer')
  const s = await openStream(t, base, viewer.token)
  const o = await openStream(t, base, other.token)
  await waitFor('hello', () => (s.of('hello')[0] && o.of('hello')[0]) || undefined)
  t.equal((await app.inject({ method: 'DELETE', url: `/v1/tokens/${viewer.id}` })).statusCode, 200)
  await s.done
  const out = s.of('signed-out')
  t.equal(out.length, 1)
  t.match(out[0], { reason: 'revoked', message: /the API token alice was revoked/ })
  t.equal(s.messages.at(-1)!.event, 'signed-out', 'the last message')
  t.notOk(o.ended(), "another token's stream goes on")
  t.equal((await fetch(`${base}/v1/events/stream`, { headers: { authorization: `Bearer ${viewer.token}` } })).status, 401, 'and the token no longer opens one')

  const short = await mint(app, 'carol', 'operator', '1s')
  const e = await openStream(t, base, short.token)
  await waitFor('hello', () => e.of('hello')[0])
  const started = Date.now()
  await e.done
  t.ok(Date.now() - started < 3_000, 'ended at the expiry')
  t.match(e.of('signed-out')[0], { reason: 'expired', message: /^the API token carol expired at .*Z; ask an admin for a new one$/ })
  const refused = await fetch(`${base}/v1/events/stream`, { headers: { authorization: `Bearer ${short.token}` } })
  t.equal(refused.status, 401)
  t.equal(((await refused.json()) as { code: string }).code, 'FAULTLINE_ERR_TOKEN_EXPIRED')
  t.notOk(o.ended())
})

t.test('pings; a bad cursor is 400; app.close() ends every stream at once', async (t) => {
  const { app, base } = await server(t, { eventStreamPingMs: 50 })
  for (const [what, init] of [
    ['header', { headers: { authorization: `Bearer ${ADMIN}`, 'last-event-id': 'yesterday' } }],
    ['query', { headers: { authorization: `Bearer ${ADMIN}` } }],
  ] as const) {
    const res = await fetch(`${base}/v1/events/stream${what === 'query' ? '?after=12' : ''}`, init)
    t.equal(res.status, 400, what)
    t.equal(((await res.json()) as { code: string }).code, 'FAULTLINE_ERR_BAD_CURSOR')
  }
  t.equal((await fetch(`${base}/v1/events/stream`)).status, 401, 'no token, no stream')
  const ahead = await openStream(t, base, ADMIN, { lastEventId: '999999.999999' })
  await waitFor('hello', () => ahead.of('hello')[0])
  t.equal(ahead.of('hello')[0]!.cursor, `${app.fleet.store.lastIds().eventId}.${app.fleet.store.lastIds().auditId}`, 'a cursor past the end starts at the end')

  const streams = [ahead, await openStream(t, base, ADMIN), await openStream(t, base, ADMIN)]
  await waitFor('pings', () => streams.every((s) => s.messages.some((m) => m.comment === 'ping')) || undefined)
  t.equal(app.fleet.streams.size, 3)
  const metrics = await app.inject({ method: 'GET', url: '/metrics' })
  t.match(metrics.body, /^faultline_server_event_stream_clients 3$/m)
  const started = Date.now()
  await app.close()
  t.ok(Date.now() - started < 2_000, `app.close() returned in ${Date.now() - started} ms`)
  await Promise.all(streams.map((s) => s.done))
  t.ok(streams.every((s) => s.ended()))
})

t.test('a client that does not read is dropped, not buffered without bound', async (t) => {
  const { app, port } = await server(t, { eventStreamMaxPendingBytes: 256 * 1024 })
  // A raw connection that sends the request and never reads again.
  const socket = connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
  socket.write(`GET /v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${ADMIN}\r\n\r\n`)
  await new Promise<void>((resolve) => socket.once('data', () => resolve()))
  socket.pause()
  t.equal(app.fleet.streams.size, 1)
  const big = 'x'.repeat(16 * 1024)
  // Enough to fill the kernel's socket buffers on both sides, and then the limit.
  for (let i = 0; i < 4000 && app.fleet.streams.size > 0; i++) {
    app.fleet.event('test.big', big)
    if (i % 50 === 0) await sleep(1)
  }
  await waitFor('the slow client to be dropped', () => app.fleet.streams.size === 0 || undefined, 5_000)
  t.pass('dropped')
})
