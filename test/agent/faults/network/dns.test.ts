// network-dns on the real kernel, inside namespace pairs the test creates (10.200.0.0/16): the
// upstream is tool.mjs's dns-server in B, lookups run in A against B's address only. Needs root
// (ip netns add). The unit tests of the resolver's answers at the top need nothing.
import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { decide } from '../../../../agent/faults/network-dns/answer.js'
import { conntrackZone, resolverGid, type AnswerRules } from '../../../../agent/faults/network-dns/config.js'
import { listPids, readCmdline, readStat } from '../../../../agent/targets/procfs.js'
import type { Injection } from '../../../../protocol/injection.js'
import { http, repoRoot, startAgentProcess, testAgent, tmpDir, waitFor, type TestLike } from '../../../helpers.js'
import { background, enter, inNs, netSnapshot, netnsPair, tool, type TestNs } from '../../../net.js'

const root = process.getuid?.() === 0
const opts = { skip: root ? false : 'needs root (ip netns add)' }

// dns-packet has no bundled types; the few calls the unit tests need.
const dnsPacket = createRequire(import.meta.url)('dns-packet') as {
  encode(p: object): Buffer
  decode(b: Buffer): { id: number; rcode: string; flags: number; flag_ra: boolean; flag_rd: boolean; questions: { name: string; type: string }[]; answers: { type: string; name: string; data: string; ttl: number }[]; additionals: { type: string }[] }
  RECURSION_DESIRED: number
}

const upstreamRecords = { 'api.example.com': '10.200.77.1', 'db.example.com': '10.200.77.2', 'other.test': '10.200.77.3', 'x.svc.test': '10.200.77.4' }

interface DnsPlan {
  table: string
  script: string
  port: number
  gid: number
  zone: number
  upstream: string
  upstreamSource: string
  resolverArgv: string[]
  claims: string[]
  steps: { phase: string; action: string; argv?: string[] }[]
}

// ---- helpers ------------------------------------------------------------------------------------

let agent: ReturnType<typeof testAgent> | undefined
/**
 * One in-process agent for the tests that need no restart (each works in its own namespaces, so
 * their injections never meet): its capability probe runs once, not once per test. Closed — and
 * whatever is still open recovered — when the file ends.
 */
function sharedAgent(): ReturnType<typeof testAgent> {
  return (agent ??= testAgent(t))
}

const dnsToolScript = join(repoRoot, 'test', 'net', 'tool-dns.mjs')

/** Runs test/net/tool-dns.mjs inside ns; resolves with its last JSON line. */
function dnsTool<T = Record<string, unknown>>(ns: TestNs, ...args: (string | number)[]): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', [`--net=${ns.path}`, '--', process.execPath, dnsToolScript, ...args.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    child.on('close', (code) => {
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '') as T)
      } catch {
        reject(new Error(`tool-dns ${args.join(' ')} exited ${code}: ${stderr || stdout}`))
      }
    })
  })
}

/** Starts a tool-dns command that prints {ready} first; stop() sends SIGTERM; killed at teardown. */
async function dnsBackground(t: TestLike, ns: TestNs, ...args: (string | number)[]): Promise<{ result: Promise<Record<string, unknown>>; stop(): void }> {
  const child = spawn('nsenter', [`--net=${ns.path}`, '--', process.execPath, dnsToolScript, ...args.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  let stdout = ''
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString()
      if (stdout.includes('"ready":true')) resolve()
    })
    child.on('close', () => reject(new Error(`tool-dns ${args.join(' ')} exited before it was ready`)))
  })
  const result = new Promise<Record<string, unknown>>((resolve) =>
    child.on('close', () => resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>)),
  )
  await ready
  return { result, stop: () => child.kill('SIGTERM') }
}

type Lookup = { rcode?: string; error?: string; answers?: { type: string; data: string; ttl: number }[] }

/** Several raw queries to server from inside ns in one process: [[name, type, proto?], ...]. */
async function lookups(ns: TestNs, server: string, list: [string, string, ('udp' | 'tcp')?][]): Promise<Lookup[]> {
  return (await dnsTool<{ results: Lookup[] }>(ns, 'queries', server, JSON.stringify(list))).results
}

/** Processes running the resolver of this injection (found by its config argument). */
function resolverProcesses(injectionId: string): { pid: number; startTime: number; state: string }[] {
  const found: { pid: number; startTime: number; state: string }[] = []
  for (const pid of listPids('/proc')) {
    const cmdline = readCmdline('/proc', pid)
    if (!/network-dns\/resolver\.(ts|js)/.test(cmdline) || !cmdline.includes(`"injectionId":"${injectionId}"`)) continue
    const stat = readStat('/proc', pid)
    if (stat) found.push({ pid, startTime: stat.startTime, state: stat.state })
  }
  return found
}

/** Whether exactly this process (pid + start time) still exists (zombies count as gone). */
function alive(proc: { pid: number; startTime: number }): boolean {
  const stat = readStat('/proc', proc.pid)
  return Boolean(stat && stat.startTime === proc.startTime && stat.state !== 'Z' && stat.state !== 'X')
}

const tables = (ns: TestNs) => inNs(ns, ['nft', 'list', 'tables'])

function dnsFault(extra: Record<string, unknown>) {
  return { kind: 'network-dns', ...extra }
}

async function injectDns(app: Awaited<ReturnType<typeof sharedAgent>>, ns: TestNs, fault: Record<string, unknown>, more: Record<string, unknown> = {}) {
  return app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: dnsFault(fault), target: { type: 'netns', name: ns.name }, duration: '60s', ...more } })
}

/**
 * Writes /etc/netns/<name>/resolv.conf — what `ip netns exec` bind-mounts as /etc/resolv.conf for
 * the namespace — and removes it (and /etc/netns when empty) at teardown. Returns the folder.
 */
function netnsResolvConf(t: TestLike, ns: TestNs, text: string): string {
  const etcDir = `/etc/netns/${ns.name}`
  mkdirSync(etcDir, { recursive: true })
  writeFileSync(`${etcDir}/resolv.conf`, text)
  t.teardown(() => {
    rmSync(etcDir, { recursive: true, force: true })
    try {
      rmdirSync('/etc/netns')
    } catch {
      /* not empty: someone else's namespaces */
    }
  })
  return etcDir
}

/** Asserts an HTTP status; the body is the message only when it differs. */
function expectStatus(t: Test, res: { statusCode: number; body: string }, status: number, what: string): void {
  t.equal(res.statusCode, status, res.statusCode === status ? what : `${what}: ${res.body}`)
}

/** Lookups through B's server that must give the upstream's own answers. */
async function resolvesNormally(t: Test, a: TestNs, b: TestNs, what: string): Promise<void> {
  const names = ['api.example.com', 'db.example.com', 'other.test', 'x.svc.test'] as const
  const got = await lookups(a, b.ip, names.map((n) => [n, 'A']))
  t.same(
    got.map((r) => r.answers?.[0]?.data ?? r.rcode ?? r.error),
    names.map((n) => upstreamRecords[n]),
    `the upstream's answers ${what}`,
  )
}

// ---- the resolver's answers (no kernel needed) -------------------------------------------------

t.test('answers: modes, wildcards, case, AAAA on overridden names, EDNS', async (t) => {
  const query = (name: string, type = 'A', extra: object = {}) =>
    dnsPacket.encode({ type: 'query', id: 4242, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }], ...extra })
  const rules = (r: Partial<AnswerRules>): AnswerRules => ({ mode: 'nxdomain', domains: [], records: {}, ttl: 0, ...r })
  const replyOf = (d: ReturnType<typeof decide>) => {
    if (d.action !== 'reply') throw new Error(`expected a reply, got ${d.action}`)
    return dnsPacket.decode(d.message)
  }

  const nx = rules({ domains: ['*.example.com', 'exact.test'] })
  const r = replyOf(decide(query('Api.EXAMPLE.com'), nx))
  t.equal(r.rcode, 'NXDOMAIN')
  t.equal(r.id, 4242)
  t.equal(r.questions[0]!.name, 'Api.EXAMPLE.com', 'the question comes back byte for byte (0x20 case kept)')
  t.ok(r.flag_rd && r.flag_ra, 'RD echoed, RA set')
  t.equal(decide(query('a.b.example.com'), nx).action, 'reply', 'wildcards cover every depth')
  t.equal(decide(query('example.com'), nx).action, 'forward', '*.example.com does not cover the apex')
  t.equal(decide(query('exact.test.'), nx).action, 'reply', 'trailing dot ignored')
  t.equal(decide(query('sub.exact.test'), nx).action, 'forward', 'exact names cover only themselves')
  t.equal(decide(query('notexample.com'), rules({ domains: ['*.example.com'] })).action, 'forward')
  t.equal(replyOf(decide(query('anything.at.all', 'MX'), rules({}))).rcode, 'NXDOMAIN', 'no domains: every name and type')
  t.equal(replyOf(decide(query('a.example.com'), rules({ mode: 'servfail', domains: ['*.example.com'] }))).rcode, 'SERVFAIL')
  t.equal(decide(query('a.example.com'), rules({ mode: 'timeout' })).action, 'drop')

  const ov = rules({ mode: 'override', records: { 'api.example.com': '10.200.77.7', '*.svc.test': '10.200.77.8', 'a.svc.test': '10.200.77.9', 'v6.test': 'fd00::7' } })
  t.match(replyOf(decide(query('API.example.com'), ov)), { rcode: 'NOERROR', answers: [{ type: 'A', name: 'API.example.com', data: '10.200.77.7', ttl: 0 }] })
  t.same(replyOf(decide(query('api.example.com', 'AAAA'), ov)).answers, [], 'AAAA of an IPv4-overridden name: NODATA')
  t.equal(replyOf(decide(query('api.example.com', 'AAAA'), ov)).rcode, 'NOERROR')
  t.same(replyOf(decide(query('api.example.com', 'MX'), ov)).answers, [], 'other types: NODATA')
  t.match(replyOf(decide(query('b.svc.test'), ov)).answers, [{ data: '10.200.77.8' }], 'wildcard record')
  t.match(replyOf(decide(query('a.svc.test'), ov)).answers, [{ data: '10.200.77.9' }], 'an exact record beats a wildcard')
  t.match(replyOf(decide(query('v6.test', 'AAAA'), ov)).answers, [{ type: 'AAAA', data: 'fd00::7' }])
  t.same(replyOf(decide(query('v6.test', 'A'), ov)).answers, [])
  t.equal(decide(query('other.test'), ov).action, 'forward', 'names without a record are forwarded')

  const edns = replyOf(decide(query('x.example.com', 'A', { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096 }] }), nx))
  t.match(edns.additionals, [{ type: 'OPT' }], 'an EDNS query gets an OPT record back')
  t.same(replyOf(decide(query('x.example.com'), nx)).additionals, [], 'no OPT when the query had none')

  const response = Buffer.from(query('x.example.com'))
  response.writeUInt16BE(response.readUInt16BE(2) | 0x8000, 2)
  t.equal(decide(response, nx).action, 'drop', 'responses are never answered')
  t.equal(decide(Buffer.alloc(5), nx).action, 'drop', 'runts are dropped')
  const garbage = Buffer.concat([query('x.example.com').subarray(0, 12), Buffer.from([0xff, 0xff])])
  t.equal(decide(garbage, nx).action, 'forward', 'what cannot be parsed is forwarded unchanged')
})

// ---- on the real kernel --------------------------------------------------------------------------

t.test('nxdomain for covered names, the rest forwarded to the upstream; normal after recovery; nothing left behind', opts, async (t) => {
  const app = await sharedAgent()
  const { a, b } = netnsPair(t)
  await background(t, b, 'dns-server', 53, JSON.stringify(upstreamRecords))
  await dnsBackground(t, b, 'tcp-dns-server', 53, JSON.stringify(upstreamRecords))
  await resolvesNormally(t, a, b, 'before')
  const before = netSnapshot(a)

  const res = await injectDns(app, a, { mode: 'nxdomain', domains: ['*.example.com'], upstream: b.ip })
  expectStatus(t, res, 201, 'injected')
  const inj = res.json<Injection>()
  const plan = inj.plan as unknown as DnsPlan
  t.match(await tool(a, 'resolve', 'api.example.com', b.ip), { error: 'ENOTFOUND' }, 'covered name: NXDOMAIN (node:dns / c-ares)')
  t.match(await tool(a, 'resolve', 'other.test', b.ip), { addresses: ['10.200.77.3'] }, 'other names still resolve through the upstream')
  const [nxUdp, nxAaaa, nxTcp, fwdTcp, fwdNx] = await lookups(a, b.ip, [
    ['db.example.com', 'A'],
    ['DB.Example.COM', 'AAAA'],
    ['db.example.com', 'A', 'tcp'],
    ['other.test', 'A', 'tcp'],
    ['nope.test', 'A'],
  ])
  t.match(nxUdp, { rcode: 'NXDOMAIN', answers: [] })
  t.match(nxAaaa, { rcode: 'NXDOMAIN' }, 'every query type, any letter case')
  t.match(nxTcp, { rcode: 'NXDOMAIN' }, 'over TCP too')
  t.match(fwdTcp, { rcode: 'NOERROR', answers: [{ data: '10.200.77.3' }] }, 'TCP queries are forwarded over TCP')
  t.match(fwdNx, { rcode: 'NXDOMAIN', answers: [] }, "the upstream's own NXDOMAIN is relayed")
  t.match(tables(a), `table inet ${plan.table}`)
  const helpers = resolverProcesses(inj.id)
  t.equal(helpers.length, 1, 'one resolver for the injection')

  const second = await injectDns(app, a, { mode: 'servfail', upstream: b.ip })
  expectStatus(t, second, 409, 'one DNS fault per namespace at a time')
  t.match(second.json<{ message: string }>().message, /dns-redirect:\d+ is already held by injection/)

  const rec = await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })
  t.equal(rec.json<Injection>().status, 'recovered')
  t.same(rec.json<Injection>().notes, [], 'recovered without surprises')
  t.match(await tool(a, 'resolve', 'api.example.com', b.ip), { addresses: ['10.200.77.1'] }, 'node:dns resolves again')
  await resolvesNormally(t, a, b, 'after recovery')
  t.match((await lookups(a, b.ip, [['db.example.com', 'A', 'tcp']]))[0], { rcode: 'NOERROR', answers: [{ data: '10.200.77.2' }] }, 'TCP too')
  t.notOk(alive(helpers[0]!), 'the resolver is gone')
  t.same(resolverProcesses(inj.id), [])
  t.same(netSnapshot(a), before, 'nft ruleset, iptables (both backends), qdiscs, filters and links as before')
})

t.test("override from the namespace's own resolv.conf; AAAA gets NODATA; normal after recovery", opts, async (t) => {
  const app = await sharedAgent()
  const { a, b } = netnsPair(t)
  await background(t, b, 'dns-server', 53, JSON.stringify(upstreamRecords))
  const etcDir = netnsResolvConf(t, a, `# test\nnameserver ${b.ip}\n`)
  const before = netSnapshot(a)

  const res = await injectDns(app, a, { mode: 'override', records: { 'api.example.com': '10.200.77.7', '*.svc.test': '10.200.77.8' } })
  expectStatus(t, res, 201, 'injected')
  const inj = res.json<Injection>()
  const plan = inj.plan as unknown as DnsPlan
  t.equal(plan.upstream, b.ip, "the first nameserver of the namespace's resolv.conf")
  t.equal(plan.upstreamSource, `${etcDir}/resolv.conf`)
  t.match(await tool(a, 'resolve', 'api.example.com', b.ip), { addresses: ['10.200.77.7'] }, 'overridden (node:dns / c-ares)')
  const [viaTcp, wildcard, other, a4, a6] = await lookups(a, b.ip, [
    ['api.example.com', 'A', 'tcp'],
    ['x.svc.test', 'A'],
    ['other.test', 'A'],
    ['api.example.com', 'A'],
    ['api.example.com', 'AAAA'],
  ])
  t.match(viaTcp, { rcode: 'NOERROR', answers: [{ data: '10.200.77.7' }] }, 'over TCP too')
  t.match(wildcard, { answers: [{ data: '10.200.77.8' }] }, 'overridden by the wildcard record')
  t.match(other, { answers: [{ data: '10.200.77.3' }] }, 'others resolve through the upstream')
  t.match(a4, { rcode: 'NOERROR', answers: [{ type: 'A', data: '10.200.77.7', ttl: 0 }] }, 'TTL 0: nobody caches the fake')
  t.match(a6, { rcode: 'NOERROR', answers: [] }, 'AAAA: NODATA, so dual-stack clients use the override')

  const rec = await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })
  t.equal(rec.json<Injection>().status, 'recovered')
  t.match(await tool(a, 'resolve', 'api.example.com', b.ip), { addresses: ['10.200.77.1'] }, 'node:dns gets the real address again')
  await resolvesNormally(t, a, b, 'after recovery')
  t.same(resolverProcesses(inj.id), [])
  t.same(netSnapshot(a), before)
})

t.test('servfail and timeout', opts, async (t) => {
  const app = await sharedAgent()
  const { a, b } = netnsPair(t)
  await background(t, b, 'dns-server', 53, JSON.stringify(upstreamRecords))
  const before = netSnapshot(a)

  const servfail = await injectDns(app, a, { mode: 'servfail', domains: ['api.example.com'], upstream: b.ip })
  expectStatus(t, servfail, 201, 'servfail injected')
  t.match(await tool(a, 'resolve', 'api.example.com', b.ip), { error: 'ESERVFAIL' })
  const [sfTcp, sibling] = await lookups(a, b.ip, [['api.example.com', 'A', 'tcp'], ['db.example.com', 'A']])
  t.match(sfTcp, { rcode: 'SERVFAIL' }, 'over TCP too')
  t.match(sibling, { answers: [{ data: '10.200.77.2' }] }, 'a sibling name is not covered')
  await app.inject({ method: 'DELETE', url: `/v1/injections/${servfail.json<Injection>().id}` })
  await resolvesNormally(t, a, b, 'after servfail')

  const timeout = await injectDns(app, a, { mode: 'timeout', domains: ['*.example.com'], upstream: b.ip })
  expectStatus(t, timeout, 201, 'timeout injected')
  const slow = await tool<{ error?: string; ms: number }>(a, 'resolve', 'api.example.com', b.ip, 1000)
  t.equal(slow.error, 'ETIMEOUT', 'no answer at all')
  t.ok(slow.ms >= 950, `gave up after its own timeout (${slow.ms.toFixed(0)} ms)`)
  const [silentTcp, other] = await lookups(a, b.ip, [['api.example.com', 'A', 'tcp'], ['other.test', 'A']])
  t.match(silentTcp, { error: 'TIMEOUT' }, 'TCP: the connection stays open and silent')
  t.match(other, { answers: [{ data: '10.200.77.3' }] }, 'others resolve through the upstream')
  await app.inject({ method: 'DELETE', url: `/v1/injections/${timeout.json<Injection>().id}` })
  await resolvesNormally(t, a, b, 'after timeout')
  t.same(netSnapshot(a), before)
})

t.test('a client that keeps one UDP socket is caught at apply and released at recovery (conntrack zone)', opts, async (t) => {
  const app = await sharedAgent()
  const { a, b } = netnsPair(t)
  await background(t, b, 'dns-server', 53, JSON.stringify(upstreamRecords))
  // Connection tracking already on in the namespace, as on any host with a stateful firewall:
  // the client's flow has a conntrack entry from before the fault, refreshed by every query.
  inNs(a, ['nft', '-f', '-'], 'add table inet fltest_stateful\nadd chain inet fltest_stateful out { type filter hook output priority 0; policy accept; }\nadd rule inet fltest_stateful out ct state established accept\n')
  t.teardown(() => spawnSync('nsenter', [`--net=${a.path}`, '--', 'nft', 'delete', 'table', 'inet', 'fltest_stateful']))
  const before = netSnapshot(a)
  const loop = await dnsBackground(t, a, 'query-loop', 'api.example.com', b.ip, 50)
  await new Promise((r) => setTimeout(r, 500))
  const applyStart = Date.now()
  const res = await injectDns(app, a, { mode: 'nxdomain', domains: ['api.example.com'], upstream: b.ip })
  expectStatus(t, res, 201, 'injected')
  const appliedAt = Date.now()
  await new Promise((r) => setTimeout(r, 1000))
  const recoverStart = Date.now()
  await app.inject({ method: 'DELETE', url: `/v1/injections/${res.json<Injection>().id}` })
  const recoveredAt = Date.now()
  await new Promise((r) => setTimeout(r, 1000))
  const stoppedAt = Date.now()
  loop.stop()
  const { results } = (await loop.result) as { results: { at: number; result: string }[] }
  const phase = (from: number, to: number) => [...new Set(results.filter((r) => r.at > from + 20 && r.at < to - 20).map((r) => r.result))]
  t.same(phase(0, applyStart), ['10.200.77.1'], 'real answers before')
  t.same(phase(appliedAt, recoverStart), ['NXDOMAIN'], 'every query on the same socket is faulted while active')
  t.same(phase(recoveredAt, stoppedAt), ['10.200.77.1'], 'and real again right after recovery')
  t.comment(`${results.length} queries from one source port`)
  t.same(netSnapshot(a), before)
})

t.test('kill -9 of the agent with two active DNS faults; restart: resolvers gone, tables gone, lookups normal', opts, async (t) => {
  // Two namespace pairs, one injection each. Resolver 1 is left alone: it notices the agent's
  // death and removes its own redirect at once. Resolver 2 is frozen (SIGSTOP) so it cannot: the
  // redirect and the resolver outlive the agent, and recovery at the next start must kill exactly
  // that process and delete the table.
  const p1 = netnsPair(t, 1)
  const p2 = netnsPair(t, 2)
  for (const { b } of [p1, p2]) await background(t, b, 'dns-server', 53, JSON.stringify(upstreamRecords))
  const before1 = netSnapshot(p1.a)
  const before2 = netSnapshot(p2.a)
  const stateDir = tmpDir(t)
  const first = await startAgentProcess(t, stateDir)
  const post = (ns: TestNs, fault: Record<string, unknown>) =>
    http<Injection>(`${first.url}/v1/injections`, { method: 'POST', body: { fault: dnsFault(fault), target: { type: 'netns', name: ns.name }, duration: '60s' } })
  const created1 = await post(p1.a, { mode: 'nxdomain', upstream: p1.b.ip })
  const created2 = await post(p2.a, { mode: 'override', records: { 'api.example.com': '10.200.77.7' }, upstream: p2.b.ip })
  t.equal(created1.status, 201, 'nxdomain injected')
  t.equal(created2.status, 201, 'override injected')
  const table1 = (created1.body.plan as unknown as DnsPlan).table
  const table2 = (created2.body.plan as unknown as DnsPlan).table
  t.match(await tool(p1.a, 'resolve', 'other.test', p1.b.ip), { error: 'ENOTFOUND' }, 'every name is NXDOMAIN in pair 1')
  t.match(await tool(p2.a, 'resolve', 'api.example.com', p2.b.ip), { addresses: ['10.200.77.7'] }, 'overridden in pair 2')
  const [helper1] = resolverProcesses(created1.body.id)
  const [helper2] = resolverProcesses(created2.body.id)
  t.ok(helper1 && helper2, 'both resolvers run')
  process.kill(helper2!.pid, 'SIGSTOP')
  t.teardown(() => {
    if (alive(helper2!)) process.kill(helper2!.pid, 'SIGKILL')
  })

  first.child.kill('SIGKILL')
  await first.exited
  await waitFor('resolver 1 to exit on its own', () => !alive(helper1!), 5_000)
  t.notMatch(tables(p1.a), table1, 'resolver 1 deleted its own table on the way out')
  await resolvesNormally(t, p1.a, p1.b, 'in pair 1 while the agent is down')
  t.ok(alive(helper2!), 'the frozen resolver 2 outlived the agent')
  t.match(tables(p2.a), table2, 'and so did its redirect')

  const second = await startAgentProcess(t, stateDir)
  const inj1 = await http<Injection>(`${second.url}/v1/injections/${created1.body.id}`)
  const inj2 = await http<Injection>(`${second.url}/v1/injections/${created2.body.id}`)
  t.equal(inj1.body.status, 'recovered')
  t.equal(inj2.body.status, 'recovered')
  t.match(inj1.body.notes.join('\n'), /recovered at agent start: the previous agent stopped while this injection was active/)
  t.match(inj1.body.notes.join('\n'), /was already gone.*had already exited/s, 'pair 1: nothing left to do')
  t.notMatch(inj2.body.notes.join('\n'), /already/, 'pair 2: recovery did the work')
  t.notOk(alive(helper2!), 'no process with resolver 2 pid + start time')
  t.same([...resolverProcesses(created1.body.id), ...resolverProcesses(created2.body.id)], [])
  t.notMatch(tables(p2.a), table2, 'the nat table is gone')
  await resolvesNormally(t, p2.a, p2.b, 'in pair 2 after the restart')
  t.same(netSnapshot(p1.a), before1)
  t.same(netSnapshot(p2.a), before2)
})

t.test('dry run: the exact nft script and resolver argv; nothing changes', opts, async (t) => {
  const app = await sharedAgent()
  const { a, b } = netnsPair(t)
  const before = netSnapshot(a)
  const res = await injectDns(app, a, { mode: 'override', records: { 'API.example.com.': '10.200.77.7' }, ttl: 30, upstream: b.ip }, { id: 'dns.dry-1', dryRun: true })
  expectStatus(t, res, 200, 'dry run accepted')
  const plan = res.json<Injection>().plan as unknown as DnsPlan
  t.match(plan.table, /^faultline_dns_dry_1_[0-9a-f]{8}$/)
  t.equal(plan.gid, resolverGid('dns.dry-1'))
  t.equal(plan.zone, conntrackZone('dns.dry-1'))
  t.ok(plan.port >= 20000 && plan.port <= 32767, `port ${plan.port} below the ephemeral range`)
  const { port, gid, zone, table } = plan
  t.equal(
    plan.script,
    [
      `create table inet ${table}`,
      `table inet ${table} {`,
      '  comment "faultline network-dns dns.dry-1"',
      '  chain zone_output {',
      '    type filter hook output priority raw; policy accept;',
      `    ip saddr 127.0.0.1 udp sport ${port} ct zone set ${zone}`,
      `    ip saddr 127.0.0.1 tcp sport ${port} ct zone set ${zone}`,
      `    ip6 saddr ::1 udp sport ${port} ct zone set ${zone}`,
      `    ip6 saddr ::1 tcp sport ${port} ct zone set ${zone}`,
      `    meta skgid ${gid} return`,
      `    udp dport 53 ct zone set ${zone}`,
      `    tcp dport 53 ct zone set ${zone}`,
      '  }',
      '  chain redirect_output {',
      '    type nat hook output priority -101; policy accept;',
      `    meta skgid ${gid} return`,
      `    udp dport 53 redirect to :${port}`,
      `    tcp dport 53 redirect to :${port}`,
      '  }',
      '}',
      '',
    ].join('\n'),
  )
  const config = {
    injectionId: 'dns.dry-1',
    port,
    gid,
    upstream: b.ip,
    mode: 'override',
    domains: [],
    records: { 'api.example.com': '10.200.77.7' },
    ttl: 30,
    nft: plan.steps[1]!.argv![3],
    table,
  }
  t.same(plan.resolverArgv, [
    ...enter(a.path),
    process.execPath,
    '--import',
    `file://${repoRoot}/node_modules/tsx/dist/loader.mjs`,
    `${repoRoot}/agent/faults/network-dns/resolver.ts`,
    JSON.stringify(config),
  ], 'from the sources: resolver.ts through tsx; from dist/ it is node dist/.../resolver.js')
  t.match(plan.steps.map((s) => [s.phase, s.action]), [['apply', 'spawn'], ['apply', 'exec'], ['recover', 'exec'], ['recover', 'signal']])
  t.match(plan.steps[1]!.argv, [...enter(a.path), /\/nft$/, '-f', '-'])
  t.match(plan.steps[2]!.argv, [...enter(a.path), /\/nft$/, 'delete', 'table', 'inet', table])
  t.same(plan.claims, [`dns-redirect:${(res.json<Injection>().resolved as { netnsInode: number }).netnsInode}`])
  t.same(netSnapshot(a), before)

  for (const [fault, message] of [
    [{ mode: 'override' }, /mode override needs records/],
    [{ mode: 'override', records: { 'a.test': '10.0.0.1' }, domains: ['a.test'] }, /takes no domains/],
    [{ mode: 'nxdomain', records: { 'a.test': '10.0.0.1' } }, /records are for mode override/],
    [{ mode: 'override', records: { 'a.test': 'not-an-ip' } }, /not an IPv4 or IPv6 address/],
    [{ mode: 'override', records: { 'bad name': '10.0.0.1' } }, /not a DNS name/],
    [{ mode: 'nxdomain', upstream: 'resolver.example' }, /upstream "resolver.example" is not an IPv4 or IPv6 address/],
    [{ mode: 'nxdomain', upstream: '127.0.0.1' }, /forwarder on the target's own loopback.*a loop/],
  ] as const) {
    const bad = await injectDns(app, a, fault, { dryRun: true })
    t.equal(bad.statusCode, 400, JSON.stringify(fault))
    t.match(bad.json<{ message: string }>().message, message)
  }
  const schema = await injectDns(app, a, { mode: 'nxdomain', domains: ['*'] }, { dryRun: true })
  expectStatus(t, schema, 400, 'a bare "*" is not a pattern: leave domains out to cover every name')

  netnsResolvConf(t, a, 'nameserver 127.0.0.1\n')
  const local = await injectDns(app, a, { mode: 'nxdomain' }, { dryRun: true })
  expectStatus(t, local, 422, "a loopback forwarder in the namespace's resolv.conf is refused")
  t.match(local.json<{ message: string }>().message, /resolv\.conf: 127\.0\.0\.1 is a forwarder on the target's own loopback.*give upstream in the spec/)
})

t.test('no route to any resolver: refused, since the lookups fail already and the fault would change nothing', opts, async (t) => {
  // As reported: network-dns reported active with no effect in a namespace without a route to
  // the upstream. Here the namespace's resolv.conf names a resolver it cannot reach (no default
  // route; only its own /24): no packet is sent by the check, it asks the kernel's routing table.
  const app = await sharedAgent()
  const { a, b } = netnsPair(t)
  netnsResolvConf(t, a, 'nameserver 10.200.250.53\n')
  const before = netSnapshot(a)
  for (const dryRun of [true, false]) {
    const res = await injectDns(app, a, { mode: 'nxdomain' }, dryRun ? { dryRun: true } : {})
    expectStatus(t, res, 422, `refused (${dryRun ? 'dry run' : 'for real'})`)
    const body = res.json<{ code: string; message: string }>()
    t.equal(body.code, 'FAULTLINE_ERR_TARGET_STATE')
    t.match(body.message, /has no route to any resolver \(10\.200\.250\.53; from \/etc\/netns\/.*\/resolv\.conf and the upstream\).*would change nothing/)
  }
  t.same(netSnapshot(a), before, 'nothing applied')
  t.same((await app.inject({ method: 'GET', url: '/v1/injections?status=active' })).json<{ injections: Injection[] }>().injections.filter((i) => (i.resolved as { name?: string }).name === a.name), [], 'and nothing journaled as active')
  // An upstream the namespace can reach is enough: queries to it are caught.
  const reachable = await injectDns(app, a, { mode: 'nxdomain', upstream: b.ip }, { dryRun: true })
  expectStatus(t, reachable, 200, 'with a reachable upstream it plans')
})

t.test('a namespace deleted under an active injection: recovery still stops the resolver', opts, async (t) => {
  const app = await sharedAgent()
  const { a, b } = netnsPair(t)
  const res = await injectDns(app, a, { mode: 'nxdomain', upstream: b.ip })
  expectStatus(t, res, 201, 'injected')
  const [helper] = resolverProcesses(res.json<Injection>().id)
  t.ok(helper)
  spawnSync('ip', ['netns', 'del', a.name])
  const rec = (await app.inject({ method: 'DELETE', url: `/v1/injections/${res.json<Injection>().id}` })).json<Injection>()
  t.equal(rec.status, 'recovered')
  t.match(rec.notes.join('\n'), /is gone; nothing to remove/)
  t.notOk(alive(helper!), 'the resolver (which kept the namespace alive) is gone too')
})
