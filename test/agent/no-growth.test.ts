// No growth: 1000 sequential process-stop inject/recover pairs through the real agent (in
// process, real journal on disk, real signals to a real `sleep`) leave every open-injection
// structure at its starting size. Needs root? No: signals to our own child only.
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import type { Injection } from '../../protocol/injection.js'
import { procState, sleeper, testAgent } from '../helpers.js'

const PAIRS = 1000

/** The sum of faultline_injections_open over its kinds, as /metrics shows it. */
async function openGauge(app: FastifyInstance): Promise<number> {
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
  let sum = 0
  for (const line of text.split('\n')) {
    const m = /^faultline_injections_open(?:\{[^}]*\})? (\S+)$/.exec(line)
    if (m) sum += Number(m[1])
  }
  return sum
}

/** SIGCONT is delivered when recover returns; the target leaves state T a moment later. */
async function untilRunning(pid: number): Promise<void> {
  for (let i = 0; procState(pid) === 'T'; i++) {
    if (i > 100_000) throw new Error(`pid ${pid} is still stopped after its recovery`)
    await new Promise((resolve) => setImmediate(resolve))
  }
}

t.test(`${PAIRS} inject/recover pairs leave the journal's open rows, the open gauge and the keyed lock as they were`, async (t) => {
  const app = await testAgent(t)
  const s = sleeper(t)
  const injector = app.injector
  const body = { fault: { kind: 'process-stop' }, target: { type: 'process', pid: s.pid }, duration: '60s' }

  const before = injector.stats
  const openBefore = injector.openWithOrigin().length
  const gaugeBefore = await openGauge(app)
  const rowsBefore = injector.list(undefined, PAIRS * 10).length
  t.equal(openBefore, 0, 'nothing open at start')

  for (let i = 0; i < PAIRS; i++) {
    const created = await app.inject({ method: 'POST', url: '/v1/injections', payload: body })
    if (created.statusCode !== 201 || created.json<Injection>().status !== 'active') {
      t.fail(`pair ${i}: POST answered ${created.statusCode} ${created.body}`)
      return
    }
    const id = created.json<Injection>().id
    const recovered = await app.inject({ method: 'DELETE', url: `/v1/injections/${encodeURIComponent(id)}` })
    if (recovered.statusCode !== 200 || recovered.json<Injection>().status !== 'recovered') {
      t.fail(`pair ${i}: DELETE answered ${recovered.statusCode} ${recovered.body}`)
      return
    }
    await untilRunning(s.pid)
  }

  const after = injector.stats
  t.equal(injector.openWithOrigin().length, openBefore, 'no open journal rows (needs_undo = 1) are left')
  t.equal(await openGauge(app), gaugeBefore, 'faultline_injections_open is back to its starting value')
  t.equal(after.lockedTargets, before.lockedTargets, 'the keyed-lock map is back to its starting size')
  t.equal(after.deadlines, before.deadlines, 'no deadline is left scheduled')
  t.equal(after.retries, before.retries, 'no recovery retry is left')
  t.equal(after.claims, before.claims, 'no claim is left held')
  t.equal(after.inflight, before.inflight, 'no create request is left in flight')

  // The agent keeps the history of recovered injections (GET /v1/injections, the chaosd API's
  // experiment list): nothing prunes it, so it grows by exactly one row per pair, each closed.
  const rows = injector.list(undefined, PAIRS * 10)
  t.equal(rows.length, rowsBefore + PAIRS, 'one history row per pair, no more')
  t.ok(rows.every((r) => r.status === 'recovered'), 'every row is recovered')
  t.equal(procState(s.pid), 'S', 'the target runs')

  const commits = (after.journalCommits - before.journalCommits) / PAIRS
  const synced = (after.journalSyncedCommits - before.journalSyncedCommits) / PAIRS
  t.comment(`journal commits per pair: ${commits}, of which fsynced: ${synced}`)
  t.ok(synced <= 2, 'a pair fsyncs the journal at most twice: the pending row before the signal, recovered before the answer')
})
