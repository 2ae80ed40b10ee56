// Bad input: hundreds of generated malformed bodies. Every answer must be a 4xx with a
// FAULTLINE_ERR_* code, the agent must stay alive, and nothing may change on the host.
import { readdirSync, readFileSync } from 'node:fs'
import t from 'tap'
import { sleeper, testAgent } from '../helpers.js'

/** Pids of every stopped process on the host: the host-wide "did anything change" check. */
function stoppedPids(): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const state = stat.slice(stat.lastIndexOf(')') + 2)[0]
      if (state === 'T' || state === 't') out.push(Number(name))
    } catch {
      /* exited meanwhile */
    }
  }
  return out.sort((a, b) => a - b)
}

interface BadCase {
  name: string
  /** A JS value sent as JSON, or a raw string body. */
  body?: unknown
  raw?: string
  contentType?: string
}

function generateCases(pid: number): BadCase[] {
  const valid = { fault: { kind: 'process-stop' }, target: { type: 'process', pid }, duration: '30s' }
  const cases: BadCase[] = []
  const wrongTypes: unknown[] = [null, true, false, 0, -1, 1.5, '', 'x', [], [1, 2], {}, { a: 1 }, 'x'.repeat(10_000)]
  const shell = ['; rm -rf /', '$(reboot)', '`id`', '| nc 10.0.0.1 1', '&& halt', '\n/bin/sh', "'\"", '../../../../etc/shadow', '\u0000', '%s%n', '${IFS}']

  // 1. every field of the valid body given every wrong type
  for (const field of ['fault', 'target', 'duration', 'id', 'dryRun'] as const) {
    for (const v of wrongTypes) {
      if (field === 'id' && typeof v === 'string' && /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(v)) continue // a valid id
      if (field === 'dryRun' && typeof v === 'boolean') continue
      cases.push({ name: `${field} = ${JSON.stringify(v)?.slice(0, 30)}`, body: { ...valid, [field]: v } })
    }
  }
  // 2. nested fields with wrong types
  for (const v of wrongTypes) {
    cases.push({ name: `fault.kind = ${JSON.stringify(v)?.slice(0, 30)}`, body: { ...valid, fault: { kind: v } } })
    cases.push({ name: `target.type = ${JSON.stringify(v)?.slice(0, 30)}`, body: { ...valid, target: { type: v, pid } } })
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
      cases.push({ name: `target.pid = ${JSON.stringify(v)?.slice(0, 30)}`, body: { ...valid, target: { type: 'process', pid: v } } })
    }
    if (typeof v !== 'string' || v === '' || v.length > 15) {
      cases.push({ name: `target.name = ${JSON.stringify(v)?.slice(0, 30)}`, body: { ...valid, target: { type: 'process', name: v } } })
    }
    cases.push({ name: `process-kill signal = ${JSON.stringify(v)?.slice(0, 30)}`, body: { ...valid, fault: { kind: 'process-kill', signal: v } } })
  }
  // 3. missing fields
  for (const field of ['fault', 'target', 'duration'] as const) {
    const { [field]: _dropped, ...rest } = valid
    cases.push({ name: `missing ${field}`, body: rest })
  }
  cases.push({ name: 'fault without kind', body: { ...valid, fault: {} } })
  cases.push({ name: 'process target without selector', body: { ...valid, target: { type: 'process' } } })
  cases.push({ name: 'two selectors at once', body: { ...valid, target: { type: 'process', pid, name: 'sleep' } } })
  // 4. unknown kinds and target types
  for (const kind of ['process-nap', 'PROCESS-STOP', 'process-stop ', 'network-delay', 'time-skew', '__proto__', 'constructor', 'toString', '../process-stop']) {
    cases.push({ name: `kind ${kind}`, body: { ...valid, fault: { kind } } })
  }
  for (const type of ['vm', 'container', 'netns', 'cgroup', 'HOST', '__proto__']) {
    cases.push({ name: `target type ${type}`, body: { ...valid, target: { type, name: 'x' } } })
  }
  // 5. durations: negative, zero, absurd, malformed
  for (const duration of ['-5s', '0s', '0ms', '999ms', '1y', '2h', '99999999h', '999999999h999999999m', '5', '5 s', '1h1h', '1s1m', 's', 'ms', '1.5s', '1e3s', 'PT30S', '30s;reboot', '', ' 30s']) {
    cases.push({ name: `duration ${JSON.stringify(duration)}`, body: { ...valid, duration } })
  }
  // 6. pids: out of range or absurd
  for (const p of [0, -1, -4242, 1.5, 2 ** 31, 2 ** 53, 1e308, 4_194_305]) {
    cases.push({ name: `pid ${p}`, body: { ...valid, target: { type: 'process', pid: p } } })
  }
  // 7. shell metacharacters in every string field (selectors that cannot match a real process)
  for (const s of shell) {
    cases.push({ name: `name with ${JSON.stringify(s)}`, body: { ...valid, target: { type: 'process', name: `zz${s}`.slice(0, 15) } } })
    cases.push({ name: `cmdline with ${JSON.stringify(s)}`, body: { ...valid, target: { type: 'process', cmdline: `^zz-no-such-process${s.replace(/\|/g, '')}` } } })
    cases.push({ name: `id with ${JSON.stringify(s)}`, body: { ...valid, id: `id${s}` } })
    cases.push({ name: `duration with ${JSON.stringify(s)}`, body: { ...valid, duration: `30s${s}` } })
    cases.push({ name: `kind with ${JSON.stringify(s)}`, body: { ...valid, fault: { kind: `process-stop${s}` } } })
    cases.push({ name: `signal with ${JSON.stringify(s)}`, body: { ...valid, fault: { kind: 'process-kill', signal: `KILL${s}` } } })
  }
  // 8. catastrophic or invalid regular expressions
  // and patterns that match the empty command line, i.e. every process on the host
  for (const re of ['(a+)+$', '(x+x+)+y', '(.*a){20}', '(', '[', '(?<', '\\', '*', '(a|a)*$', '.*', '|', 'a|', '^', '$', 'x*']) {
    cases.push({ name: `cmdline regex ${re}`, body: { ...valid, target: { type: 'process', cmdline: re } } })
  }
  // 9. prototype pollution attempts (raw JSON: JSON.stringify would drop __proto__)
  const base = `"target":{"type":"process","pid":${pid}},"duration":"30s"`
  cases.push({ name: '__proto__ at top', raw: `{"__proto__":{"polluted":1},"fault":{"kind":"process-stop"},${base}}` })
  cases.push({ name: '__proto__ in fault', raw: `{"fault":{"kind":"process-stop","__proto__":{"polluted":1}},${base}}` })
  cases.push({ name: '__proto__ in target', raw: `{"fault":{"kind":"process-stop"},"target":{"type":"process","pid":${pid},"__proto__":{"x":1}},"duration":"30s"}` })
  cases.push({ name: 'constructor.prototype at top', raw: `{"constructor":{"prototype":{"polluted":1}},"fault":{"kind":"process-stop"},${base}}` })
  cases.push({ name: 'constructor.prototype in fault', raw: `{"fault":{"kind":"process-stop","constructor":{"prototype":{"x":1}}},${base}}` })
  cases.push({ name: 'constructor key', body: { ...valid, constructor: 'x' } })
  // 10. not an object, not JSON, wrong media types, oversized
  for (const raw of ['[]', '"string"', '123', 'null', 'true', '{', '{"fault":', '{}', '{"a":1}', '\u0000', 'NaN', '{"fault":{"kind":"process-stop"},' + base + ',}']) {
    cases.push({ name: `raw ${JSON.stringify(raw).slice(0, 30)}`, raw })
  }
  cases.push({ name: 'deep nesting', raw: '{"fault":' + '{"a":'.repeat(2000) + '1' + '}'.repeat(2000) + '}' })
  cases.push({ name: 'text/plain', raw: JSON.stringify(valid), contentType: 'text/plain' })
  cases.push({ name: 'form', raw: 'fault=process-stop', contentType: 'application/x-www-form-urlencoded' })
  cases.push({ name: 'no content type', raw: JSON.stringify(valid), contentType: '' })
  cases.push({ name: 'oversized', body: { ...valid, pad: 'x'.repeat(200_000) } })
  // 11. extra fields at every level
  cases.push({ name: 'extra top', body: { ...valid, extra: 1 } })
  cases.push({ name: 'extra in fault', body: { ...valid, fault: { kind: 'process-stop', signal: 'KILL' } } })
  cases.push({ name: 'extra in target', body: { ...valid, target: { type: 'process', pid, ns: 'net' } } })
  cases.push({ name: 'host target with extra', body: { ...valid, target: { type: 'host', pid } } })
  // 12. valid shape, refused semantics (PID 1, own pid, kernel thread, kind on wrong target)
  cases.push({ name: 'pid 1', body: { ...valid, target: { type: 'process', pid: 1 } } })
  cases.push({ name: 'pid 2 (kthreadd)', body: { ...valid, target: { type: 'process', pid: 2 } } })
  cases.push({ name: 'own pid', body: { ...valid, target: { type: 'process', pid: process.pid } } })
  cases.push({ name: 'stop on host', body: { ...valid, target: { type: 'host' } } })
  cases.push({ name: 'kill on host', body: { ...valid, fault: { kind: 'process-kill' }, target: { type: 'host' } } })
  return cases
}

t.test('hundreds of malformed bodies: 4xx with a code, agent alive, host unchanged', async (t) => {
  const app = await testAgent(t)
  const s = sleeper(t)
  const cases = generateCases(s.pid)
  t.ok(cases.length >= 200, `${cases.length} generated cases`)
  const stoppedBefore = stoppedPids()

  const failures: string[] = []
  for (const c of cases) {
    const headers: Record<string, string> = {}
    let payload: string
    if (c.raw !== undefined) {
      payload = c.raw
      if (c.contentType !== '') headers['content-type'] = c.contentType ?? 'application/json'
    } else {
      payload = JSON.stringify(c.body)
      headers['content-type'] = 'application/json'
    }
    const res = await app.inject({ method: 'POST', url: '/v1/injections', headers, payload })
    let code: unknown
    try {
      code = res.json<{ code?: unknown }>().code
    } catch {
      code = undefined
    }
    if (res.statusCode < 400 || res.statusCode >= 500 || typeof code !== 'string' || !code.startsWith('FAULTLINE_ERR_')) {
      failures.push(`${c.name}: ${res.statusCode} ${res.body.slice(0, 200)}`)
    }
  }
  t.same(failures, [], 'every malformed body got a 4xx with a FAULTLINE_ERR_* code')

  // The same malformed ids and junk on the other routes.
  for (const url of ['/v1/injections/%00', `/v1/injections/${'x'.repeat(200)}`, '/v1/injections/..%2F..%2Fetc', '/v1/injections?status=nope', '/v1/injections?limit=-1', '/v1/capabilities?refresh=maybe', '/v1/targets?type=%3Breboot']) {
    const res = await app.inject({ method: url.startsWith('/v1/injections/') ? 'DELETE' : 'GET', url })
    t.ok(res.statusCode >= 400 && res.statusCode < 500, `${url}: ${res.statusCode}`)
    t.match(res.json<{ code: string }>().code, /^FAULTLINE_ERR_/)
  }

  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'the agent is alive')
  const list = await app.inject({ method: 'GET', url: '/v1/injections' })
  t.same(list.json<{ injections: unknown[] }>().injections, [], 'nothing was journaled')
  t.same(stoppedPids(), stoppedBefore, 'no process on the host changed state')
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype is untouched')
})
