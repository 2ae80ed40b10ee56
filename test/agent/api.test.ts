// Needs root? No: signals to our own children only. Runs on the real kernel (/proc, pidfd).
import t from 'tap'
import type { Injection } from '../../protocol/injection.js'
import { procState, sleeper, testAgent, waitFor } from '../helpers.js'

const stop = (pid: number, extra: Record<string, unknown> = {}) => ({
  fault: { kind: 'process-stop' },
  target: { type: 'process', pid },
  duration: '60s',
  ...extra,
})

t.test('create, get, list, recover round trip', async (t) => {
  const app = await testAgent(t)
  const s = sleeper(t)

  const created = await app.inject({ method: 'POST', url: '/v1/injections', payload: stop(s.pid) })
  t.equal(created.statusCode, 201)
  const inj = created.json<Injection>()
  t.equal(inj.status, 'active')
  t.equal(inj.kind, 'process-stop')
  t.match(inj.resolved, { type: 'process', pid: s.pid, comm: 'sleep' })
  t.ok(inj.plan.steps.length >= 2, 'plan explains apply and recover')
  t.ok(new Date(inj.expiresAt).getTime() - new Date(inj.createdAt).getTime() === 60_000, 'deadline is created + duration')
  t.equal(procState(s.pid), 'T', 'the process is really stopped')

  const got = await app.inject({ method: 'GET', url: `/v1/injections/${inj.id}` })
  t.equal(got.statusCode, 200)
  t.equal(got.json<Injection>().id, inj.id)

  const listed = await app.inject({ method: 'GET', url: '/v1/injections?status=active' })
  t.same(listed.json<{ injections: Injection[] }>().injections.map((i) => i.id), [inj.id])

  const recovered = await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })
  t.equal(recovered.statusCode, 200)
  t.equal(recovered.json<Injection>().status, 'recovered')
  t.ok(recovered.json<Injection>().recoveredAt)
  t.equal(procState(s.pid), 'S', 'the process runs again')

  const again = await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })
  t.equal(again.statusCode, 200, 'recover is idempotent')
  t.equal(again.json<Injection>().status, 'recovered')

  const none = await app.inject({ method: 'GET', url: '/v1/injections?status=active' })
  t.same(none.json<{ injections: Injection[] }>().injections, [])
})

t.test('list is newest first', async (t) => {
  const app = await testAgent(t)
  const a = sleeper(t)
  const b = sleeper(t)
  const first = (await app.inject({ method: 'POST', url: '/v1/injections', payload: stop(a.pid) })).json<Injection>()
  const second = (await app.inject({ method: 'POST', url: '/v1/injections', payload: stop(b.pid) })).json<Injection>()
  const list = (await app.inject({ method: 'GET', url: '/v1/injections' })).json<{ injections: Injection[] }>()
  t.same(list.injections.map((i) => i.id), [second.id, first.id])
})

t.test('idempotent create with a client id', async (t) => {
  const app = await testAgent(t)
  const s = sleeper(t)
  const body = stop(s.pid, { id: 'web-freeze-1' })
  const first = await app.inject({ method: 'POST', url: '/v1/injections', payload: body })
  t.equal(first.statusCode, 201)
  t.equal(first.json<Injection>().id, 'web-freeze-1')

  const replay = await app.inject({ method: 'POST', url: '/v1/injections', payload: body })
  t.equal(replay.statusCode, 200, 'same id + same spec = 200')
  t.same(replay.json<Injection>().id, 'web-freeze-1')
  t.equal(replay.json<Injection>().createdAt, first.json<Injection>().createdAt, 'the existing injection, not a new one')

  const different = await app.inject({ method: 'POST', url: '/v1/injections', payload: { ...body, duration: '30s' } })
  t.equal(different.statusCode, 409)
  t.equal(different.json<{ code: string }>().code, 'FAULTLINE_ERR_ID_CONFLICT')

  const list = (await app.inject({ method: 'GET', url: '/v1/injections' })).json<{ injections: Injection[] }>()
  t.equal(list.injections.length, 1, 'no second injection was created')
})

t.test('concurrent identical requests with one id create one injection', async (t) => {
  const app = await testAgent(t)
  const s = sleeper(t)
  const body = stop(s.pid, { id: 'race-1' })
  const answers = await Promise.all(Array.from({ length: 8 }, () => app.inject({ method: 'POST', url: '/v1/injections', payload: body })))
  t.same(answers.map((a) => a.statusCode).sort(), [200, 200, 200, 200, 200, 200, 200, 201])
  const list = (await app.inject({ method: 'GET', url: '/v1/injections' })).json<{ injections: Injection[] }>()
  t.equal(list.injections.length, 1)
})

t.test('one target never carries two stops; racing creates do not interleave', async (t) => {
  const app = await testAgent(t)
  const s = sleeper(t)
  const answers = await Promise.all(Array.from({ length: 10 }, () => app.inject({ method: 'POST', url: '/v1/injections', payload: stop(s.pid) })))
  const codes = answers.map((a) => a.statusCode)
  t.equal(codes.filter((c) => c === 201).length, 1, 'exactly one wins')
  t.equal(codes.filter((c) => c === 409).length, 9)
  t.ok(answers.filter((a) => a.statusCode === 409).every((a) => a.json<{ code: string }>().code === 'FAULTLINE_ERR_TARGET_BUSY'))
  t.equal(procState(s.pid), 'T')
  const winner = answers.find((a) => a.statusCode === 201)!.json<Injection>()
  await app.inject({ method: 'DELETE', url: `/v1/injections/${winner.id}` })
  t.equal(procState(s.pid), 'S')
})

t.test('404s carry codes', async (t) => {
  const app = await testAgent(t)
  const missing = await app.inject({ method: 'GET', url: '/v1/injections/nope' })
  t.equal(missing.statusCode, 404)
  t.equal(missing.json<{ code: string }>().code, 'FAULTLINE_ERR_NOT_FOUND')
  const del = await app.inject({ method: 'DELETE', url: '/v1/injections/nope' })
  t.equal(del.statusCode, 404)
  const route = await app.inject({ method: 'GET', url: '/v2/whatever' })
  t.equal(route.statusCode, 404)
  t.equal(route.json<{ code: string }>().code, 'FAULTLINE_ERR_ROUTE_NOT_FOUND')
})

t.test('schema errors are 400 with a code and a useful message', async (t) => {
  const app = await testAgent(t)
  const s = sleeper(t)
  const cases: [string, unknown, string, RegExp][] = [
    ['extra field', { ...stop(s.pid), extra: 1 }, 'FAULTLINE_ERR_VALIDATION', /additional/],
    ['unknown kind', { ...stop(s.pid), fault: { kind: 'process-nap' } }, 'FAULTLINE_ERR_VALIDATION', /unknown fault kind "process-nap"; this agent knows: process-kill, process-stop/],
    ['unknown target type', { ...stop(s.pid), target: { type: 'vm', name: 'x' } }, 'FAULTLINE_ERR_VALIDATION', /unknown target type "vm"/],
    ['missing duration', { fault: { kind: 'process-stop' }, target: { type: 'process', pid: s.pid } }, 'FAULTLINE_ERR_VALIDATION', /duration/],
    ['bad duration', stop(s.pid, { duration: '5 minutes' }), 'FAULTLINE_ERR_BAD_DURATION', /duration/],
    ['duration too long', stop(s.pid, { duration: '2h' }), 'FAULTLINE_ERR_BAD_DURATION', /maximum of 1h/],
    ['duration too short', stop(s.pid, { duration: '10ms' }), 'FAULTLINE_ERR_BAD_DURATION', /minimum/],
    ['pid as string', { ...stop(s.pid), target: { type: 'process', pid: String(s.pid) } }, 'FAULTLINE_ERR_VALIDATION', /pid/],
    ['bad signal', { ...stop(s.pid), fault: { kind: 'process-kill', signal: 'STOP' } }, 'FAULTLINE_ERR_VALIDATION', /signal/],
  ]
  for (const [name, payload, code, message] of cases) {
    const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: payload as object })
    t.equal(res.statusCode, code === 'FAULTLINE_ERR_BAD_DURATION' ? 400 : 400, name)
    t.equal(res.json<{ code: string }>().code, code, `${name}: code`)
    t.match(res.json<{ message: string }>().message, message, `${name}: message`)
  }
  const bad = await app.inject({ method: 'POST', url: '/v1/injections', headers: { 'content-type': 'application/json' }, payload: '{"fault":' })
  t.equal(bad.json<{ code: string }>().code, 'FAULTLINE_ERR_BAD_JSON')
  const proto = await app.inject({ method: 'POST', url: '/v1/injections', headers: { 'content-type': 'application/json' }, payload: '{"__proto__":{"x":1}}' })
  t.equal(proto.statusCode, 400)
  t.equal(proto.json<{ code: string }>().code, 'FAULTLINE_ERR_FORBIDDEN_KEY')
  const text = await app.inject({ method: 'POST', url: '/v1/injections', headers: { 'content-type': 'text/plain' }, payload: 'stop it' })
  t.equal(text.statusCode, 415)
  t.equal(text.json<{ code: string }>().code, 'FAULTLINE_ERR_UNSUPPORTED_MEDIA_TYPE')
  const huge = await app.inject({ method: 'POST', url: '/v1/injections', payload: { ...stop(s.pid), pad: 'x'.repeat(100_000) } })
  t.equal(huge.statusCode, 413)
  t.equal(huge.json<{ code: string }>().code, 'FAULTLINE_ERR_PAYLOAD_TOO_LARGE')
  t.equal(procState(s.pid), 'S', 'nothing was stopped by any bad request')
})

t.test('targets that may not be faulted are refused with 422', async (t) => {
  const app = await testAgent(t)
  const post = (target: unknown) => app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'process-stop' }, target, duration: '5s' } })
  const init = await post({ type: 'process', pid: 1 })
  t.equal(init.statusCode, 422)
  t.equal(init.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_FORBIDDEN')
  t.match(init.json<{ message: string }>().message, /init process/)
  const self = await post({ type: 'process', pid: process.pid })
  t.equal(self.statusCode, 422)
  t.match(self.json<{ message: string }>().message, /agent itself/)
  const kthread = await post({ type: 'process', pid: 2 })
  t.equal(kthread.statusCode, 422, 'kernel threads (kthreadd is pid 2) are refused')
  const gone = await post({ type: 'process', pid: 4_194_000 })
  t.equal(gone.statusCode, 422)
  t.equal(gone.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_NOT_FOUND')
  const noname = await post({ type: 'process', name: 'no-such-proc' })
  t.equal(noname.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_NOT_FOUND')
  const host = await post({ type: 'host' })
  t.equal(host.statusCode, 422)
  t.equal(host.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_UNSUPPORTED')
  const unsafe = await post({ type: 'process', cmdline: '(a+)+$' })
  t.equal(unsafe.statusCode, 400)
  t.equal(unsafe.json<{ code: string }>().code, 'FAULTLINE_ERR_UNSAFE_PATTERN')
  const invalid = await post({ type: 'process', cmdline: '(' })
  t.equal(invalid.json<{ code: string }>().code, 'FAULTLINE_ERR_UNSAFE_PATTERN')
})

t.test('an already stopped process is refused: recovery would resume it', async (t) => {
  const app = await testAgent(t)
  const s = sleeper(t)
  process.kill(s.pid, 'SIGSTOP')
  await waitFor('stopped', () => procState(s.pid) === 'T')
  const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: stop(s.pid) })
  t.equal(res.statusCode, 422)
  t.equal(res.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_STATE')
  t.equal(procState(s.pid), 'T', 'left as it was')
})

t.test('a selector matching several processes gives one injection each', async (t) => {
  const app = await testAgent(t)
  const marker = `fl-multi-${process.pid}-${Date.now()}`
  // bash's exec -a puts the marker in argv[0], so only our three processes match
  const { spawn } = await import('node:child_process')
  const kids = [0, 1, 2].map(() => spawn('bash', ['-c', `exec -a ${marker} sleep 600`], { stdio: 'ignore' }))
  t.teardown(() => kids.forEach((k) => { try { process.kill(k.pid!, 'SIGCONT'); k.kill('SIGKILL') } catch { /* gone */ } }))
  await waitFor('three renamed sleepers', () => kids.every((k) => procState(k.pid!) === 'S'))
  // By default a selector may match one target: more is refused with the list of what matched.
  const byDefault = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'process-stop' }, target: { type: 'process', cmdline: `^${marker}` }, duration: '30s' },
  })
  t.equal(byDefault.statusCode, 422)
  const refusal = byDefault.json<{ code: string; message: string; details: { matched: number; maxTargets: number; targets: string[] } }>()
  t.equal(refusal.code, 'FAULTLINE_ERR_TOO_MANY_TARGETS')
  t.match(refusal.details, { matched: 3, maxTargets: 1 })
  t.same(refusal.details.targets.map((d) => Number(/process (\d+)/.exec(d)![1])).sort(), kids.map((k) => k.pid).sort(), 'the refusal lists each match')
  for (const k of kids) t.match(refusal.message, new RegExp(`process ${k.pid} \\(sleep, user root\\)`), 'with its pid, name and user')
  t.match(refusal.message, /faultline inject --all/)
  const tooMany = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'process-stop' }, target: { type: 'process', cmdline: `^${marker}` }, duration: '30s', maxTargets: 2 },
  })
  t.equal(tooMany.statusCode, 422)
  t.equal(tooMany.json<{ code: string }>().code, 'FAULTLINE_ERR_TOO_MANY_TARGETS')
  t.ok(kids.every((k) => procState(k.pid!) === 'S'), 'nothing stopped when the selector matched too many')
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'process-stop' }, target: { type: 'process', cmdline: `^${marker}` }, duration: '30s', id: 'multi', maxTargets: 3 },
  })
  t.equal(res.statusCode, 201)
  const { injections } = res.json<{ injections: Injection[] }>()
  t.equal(injections.length, 3)
  t.same(injections.map((i) => i.id).sort(), ['multi-1', 'multi-2', 'multi-3'])
  t.ok(injections.every((i) => i.requestId === 'multi'))
  t.same(injections.map((i) => (i.resolved as { pid: number }).pid).sort(), kids.map((k) => k.pid).sort())
  t.ok(kids.every((k) => procState(k.pid!) === 'T'), 'all three stopped')
  const replay = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'process-stop' }, target: { type: 'process', cmdline: `^${marker}` }, duration: '30s', id: 'multi', maxTargets: 3 },
  })
  t.equal(replay.statusCode, 200)
  t.equal(replay.json<{ injections: Injection[] }>().injections.length, 3)
  const halt = await app.inject({ method: 'DELETE', url: '/v1/injections' })
  t.equal(halt.statusCode, 200)
  t.equal(halt.json<{ injections: Injection[] }>().injections.length, 3)
  t.ok(kids.every((k) => procState(k.pid!) === 'S'), 'all three resumed by recover-all')
})

t.test('process by name', async (t) => {
  const app = await testAgent(t)
  const { spawn } = await import('node:child_process')
  const name = `fln${process.pid % 100000}`
  const kid = spawn('bash', ['-c', `exec -a ${name} sleep 600`], { stdio: 'ignore' })
  t.teardown(() => { try { process.kill(kid.pid!, 'SIGCONT'); kid.kill('SIGKILL') } catch { /* gone */ } })
  await waitFor('sleeper', () => procState(kid.pid!) === 'S')
  // exec -a changes argv[0], not comm (which stays "sleep"); a copy of sleep under that name
  // has it as its comm. Only the copy must match a name selector.
  const { copyFileSync, chmodSync } = await import('node:fs')
  const { tmpDir } = await import('../helpers.js')
  const dir = tmpDir(t)
  const bin = `${dir}/${name}`
  copyFileSync('/bin/sleep', bin)
  chmodSync(bin, 0o755)
  const named = spawn(bin, ['600'], { stdio: 'ignore' })
  t.teardown(() => { try { process.kill(named.pid!, 'SIGCONT'); named.kill('SIGKILL') } catch { /* gone */ } })
  await waitFor('named sleeper', () => procState(named.pid!) === 'S')
  const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'process-stop' }, target: { type: 'process', name }, duration: '30s' } })
  t.equal(res.statusCode, 201)
  t.equal(res.json<Injection>().resolved.type, 'process')
  t.equal((res.json<Injection>().resolved as { pid: number }).pid, named.pid)
  t.equal(procState(named.pid!), 'T')
  t.equal(procState(kid.pid!), 'S', 'a process merely called that in argv[0] is not matched by name')
})

t.test('process-kill delivers the signal and is recorded as not recoverable', async (t) => {
  const app = await testAgent(t)
  const s = sleeper(t)
  const exit = new Promise<NodeJS.Signals | null>((resolve) => s.child.on('exit', (_c, sig) => resolve(sig)))
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'process-kill', signal: 'TERM' }, target: { type: 'process', pid: s.pid }, duration: '5s' },
  })
  t.equal(res.statusCode, 201)
  const inj = res.json<Injection>()
  t.equal(inj.recoverable, false)
  t.equal(await exit, 'SIGTERM', 'the process died of SIGTERM')
  const rec = (await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })).json<Injection>()
  t.equal(rec.status, 'recovered')
  t.match(rec.notes.join('\n'), /not recoverable: SIGTERM was delivered/)
})

t.test('dry run returns the plan and changes nothing', async (t) => {
  const app = await testAgent(t)
  const s = sleeper(t)
  const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: stop(s.pid, { dryRun: true }) })
  t.equal(res.statusCode, 200)
  const inj = res.json<Injection>()
  t.equal(inj.dryRun, true)
  t.match(inj.plan.steps[0], { phase: 'apply', action: 'pidfd_send_signal' })
  t.match(inj.plan.steps[0]!.detail, new RegExp(`SIGSTOP to pid ${s.pid}`))
  t.equal(procState(s.pid), 'S', 'not stopped')
  const list = (await app.inject({ method: 'GET', url: '/v1/injections' })).json<{ injections: Injection[] }>()
  t.same(list.injections, [], 'nothing journaled')
})

t.test('capabilities, targets, healthz, metrics and docs', async (t) => {
  const app = await testAgent(t)
  const caps = await app.inject({ method: 'GET', url: '/v1/capabilities' })
  t.equal(caps.statusCode, 200)
  const body = caps.json<{ kinds: Record<string, { available: boolean }>; host: { agentPid: number } }>()
  t.equal(body.kinds['process-stop']?.available, true)
  t.equal(body.host.agentPid, process.pid)

  const s = sleeper(t)
  const targets = await app.inject({ method: 'GET', url: '/v1/targets?type=process' })
  const list = targets.json<{ targets: { pid: number }[] }>().targets
  t.ok(list.some((p) => p.pid === s.pid), 'our sleeper is listed')
  t.notOk(list.some((p) => p.pid === 1 || p.pid === process.pid), 'PID 1 and the agent are not offered')
  const badType = await app.inject({ method: 'GET', url: '/v1/targets?type=vm' })
  t.equal(badType.statusCode, 400)

  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).json<{ status: string }>().status, 'ok')

  await app.inject({ method: 'POST', url: '/v1/injections', payload: stop(s.pid) })
  const metrics = await app.inject({ method: 'GET', url: '/metrics' })
  t.match(metrics.body, /faultline_injections_total\{kind="process-stop",outcome="active"\} 1/)
  t.match(metrics.body, /faultline_injections_open\{kind="process-stop"\} 1/)
  t.match(metrics.body, /faultline_agent_process_resident_memory_bytes/)

  const docs = await app.inject({ method: 'GET', url: '/docs/json' })
  t.equal(docs.statusCode, 200)
  const spec = docs.json<{ openapi: string; paths: Record<string, unknown> }>()
  t.match(spec.openapi, /^3\./)
  t.ok(spec.paths['/v1/injections'] && spec.paths['/v1/injections/{id}'] && spec.paths['/v1/capabilities'])
})
