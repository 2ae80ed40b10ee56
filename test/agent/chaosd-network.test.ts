// chaosd network attacks as Chaos Mesh sends them, on the real kernel. Network attacks act on
// the agent's own network namespace; here the chaosd API is pointed at a namespace of the test
// (networkTarget), or a real agent process runs inside one (the host-target path), so traffic
// stays in 10.200.x.x namespaces the test creates. Needs root.
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { readdirSync, readlinkSync, statSync } from 'node:fs'
import t from 'tap'
import { startAgentProcess, tmpDir, waitFor, type TestLike } from '../helpers.js'
import { background, netSnapshot, netnsPair, tool, type TestNs } from '../net.js'
import { chaosdError, chaosdPair } from './chaosd.js'

const root = process.getuid?.() === 0
const opts = { skip: root ? false : 'needs root (ip netns add)' }

async function measureLoss(t: TestLike, a: TestNs, b: TestNs, count: number): Promise<number> {
  const sink = await background(t, b, 'udp-sink', 9100, 1500)
  await tool(a, 'udp-blast', b.ip, 9100, count, 150)
  const { received } = (await sink.result) as { received: number }
  return 1 - received / count
}

t.test('partition: direction to cuts TCP from A to B; DELETE restores it and leaves nothing', opts, async (t) => {
  const { a, b } = netnsPair(t, 61)
  const c = await chaosdPair(t, { networkTarget: { type: 'netns', name: a.name } })
  await background(t, b, 'tcp-listen', 9000)
  t.match(await tool(a, 'tcp-connect', b.ip, 9000, 1000), { ok: true }, 'A reaches B before')
  const before = netSnapshot(a)
  const uid = randomUUID()
  const res = await c.attack('network', { uid, action: 'partition', device: a.dev, 'ip-address': b.ip, direction: 'to', 'ip-protocol': 'tcp' })
  t.equal(res.status, 200, JSON.stringify(res.body))
  t.match((await c.injections())[0], { kind: 'network-partition', fault: { direction: 'egress', device: a.dev, peers: [b.ip], protocol: 'tcp' } })
  t.match(await tool(a, 'tcp-connect', b.ip, 9000, 800), { ok: false }, 'cut during the attack')
  t.equal((await c.recover(uid)).status, 200)
  t.match(await tool(a, 'tcp-connect', b.ip, 9000, 1000), { ok: true }, 'A reaches B again')
  t.same(netSnapshot(a), before, 'nothing left in the namespace')
  t.equal((await c.recover(uid)).status, 404)
})

t.test('loss 30 % over 4000 datagrams is within ±4 points; DELETE leaves nothing', opts, async (t) => {
  const { a, b } = netnsPair(t, 62)
  const c = await chaosdPair(t, { networkTarget: { type: 'netns', name: a.name } })
  const before = netSnapshot(a)
  const uid = randomUUID()
  // As Chaos Mesh sends spec["network-loss"]: strings for percent and correlation.
  const res = await c.attack('network', { uid, action: 'loss', device: a.dev, percent: '30', correlation: '0', 'ip-address': b.ip, 'ip-protocol': 'udp', 'egress-port': '9100' })
  t.equal(res.status, 200, JSON.stringify(res.body))
  t.match((await c.injections())[0], { kind: 'network-loss', fault: { percent: 30, ports: [9100], protocol: 'udp', peers: [b.ip] }, plan: { mechanism: 'nft' } })
  const loss = await measureLoss(t, a, b, 4000)
  t.comment(`chaosd loss 30 %: measured ${(loss * 100).toFixed(2)} % over 4000 datagrams`)
  t.ok(loss >= 0.26 && loss <= 0.34, `measured ${(loss * 100).toFixed(2)} %`)
  t.equal((await c.recover(uid)).status, 200)
  t.equal(await measureLoss(t, a, b, 1000), 0, 'no loss after DELETE')
  t.same(netSnapshot(a), before)
})

t.test('delay through NFQUEUE (no netem here), and the netem-only actions refused with the reason', opts, async (t) => {
  const { a, b } = netnsPair(t, 63)
  const c = await chaosdPair(t, { networkTarget: { type: 'netns', name: a.name } })
  const before = netSnapshot(a)
  await background(t, b, 'tcp-listen', 9000)
  const base = await tool<{ ok: boolean; ms: number }>(a, 'tcp-connect', b.ip, 9000, 2000)
  const uid = randomUUID()
  const res = await c.attack('network', { uid, action: 'delay', device: a.dev, latency: '200ms', jitter: '0ms', correlation: '0', 'ip-address': b.ip })
  t.equal(res.status, 200, JSON.stringify(res.body))
  t.match((await c.injections())[0], { kind: 'network-delay', fault: { latency: '200ms', peers: [b.ip] } })
  const slow = await tool<{ ok: boolean; ms: number }>(a, 'tcp-connect', b.ip, 9000, 3000)
  t.comment(`connect before ${base.ms.toFixed(1)} ms, during a 200ms delay ${slow.ms.toFixed(1)} ms`)
  t.ok(slow.ok && slow.ms >= 190, 'the SYN waited about 200 ms')
  t.equal((await c.recover(uid)).status, 200)
  t.same(netSnapshot(a), before)

  const caps = (await c.agent.inject({ method: 'GET', url: '/v1/capabilities' })).json<{ features: Record<string, { available: boolean }> }>()
  if (caps.features['qdisc:netem']?.available) {
    t.pass('this kernel has netem: the refusal does not apply')
    return
  }
  for (const action of ['corrupt', 'duplicate']) {
    const refused = await c.attack('network', { uid: randomUUID(), action, device: a.dev, percent: '10', correlation: '0' })
    t.equal(refused.status, 400, action)
    t.match(refused.body, { ...chaosdError('error.api.invalid_request'), message: new RegExp(`network-${action} is not available on this host: .*sch_netem`) })
  }
  const corr = await c.attack('network', { uid: randomUUID(), action: 'loss', device: a.dev, percent: '10', correlation: '25' })
  t.equal(corr.status, 400, 'loss with a correlation needs netem: refused, not a silent no-op')
  t.match(corr.body, { message: /correlation needs netem/ })
  t.same(netSnapshot(a), before, 'the refusals changed nothing')
})

t.test('bandwidth (a superset of chaosd): tc rate in bytes/s becomes bits/s; DELETE leaves nothing', opts, async (t) => {
  const { a, b } = netnsPair(t, 64)
  const c = await chaosdPair(t, { networkTarget: { type: 'netns', name: a.name } })
  const before = netSnapshot(a)
  const uid = randomUUID()
  const res = await c.attack('network', { uid, action: 'bandwidth', rate: '125kbps', limit: 20000, buffer: 10000, device: a.dev })
  t.equal(res.status, 200, JSON.stringify(res.body))
  t.match((await c.injections())[0], { kind: 'network-bandwidth', fault: { rate: '1000000bit', limit: '20000', burst: '10000', device: a.dev } })
  t.match(netSnapshot(a).qdiscs, /tbf/, 'a tbf qdisc while active')
  t.equal((await c.recover(uid)).status, 200)
  t.same(netSnapshot(a), before)
  void b
})

t.test('dns: dns-domain-name answers dns-ip, other names go to dns-server; DELETE leaves nothing', opts, async (t) => {
  const { a, b } = netnsPair(t, 65)
  const c = await chaosdPair(t, { networkTarget: { type: 'netns', name: a.name } })
  // The upstream: tool.mjs's dns-server in B; lookups from A to B's address only.
  await background(t, b, 'dns-server', 53, JSON.stringify({ 'api.example.com': '10.200.77.1', 'other.test': '10.200.77.3' }))
  t.match(await tool(a, 'resolve', 'api.example.com', b.ip), { addresses: ['10.200.77.1'] }, "the upstream's answer before")
  const before = netSnapshot(a)
  const uid = randomUUID()
  // As Chaos Mesh sends spec["network-dns"]
  const res = await c.attack('network', { uid, action: 'dns', 'dns-server': b.ip, 'dns-ip': '10.200.77.7', 'dns-domain-name': 'api.example.com' })
  t.equal(res.status, 200, JSON.stringify(res.body))
  const [inj] = await c.injections()
  t.match(inj, { kind: 'network-dns', status: 'active', fault: { mode: 'override', records: { 'api.example.com': '10.200.77.7' }, upstream: b.ip } })
  const table = (inj!.plan as unknown as { table: string }).table
  const during = await tool<{ addresses?: string[]; ms: number }>(a, 'resolve', 'api.example.com', b.ip)
  const other = await tool<{ addresses?: string[]; ms: number }>(a, 'resolve', 'other.test', b.ip)
  t.comment(`chaosd dns: api.example.com -> ${JSON.stringify(during.addresses)} in ${during.ms.toFixed(1)} ms, other.test -> ${JSON.stringify(other.addresses)} in ${other.ms.toFixed(1)} ms`)
  t.same(during.addresses, ['10.200.77.7'], 'the name answers with dns-ip')
  t.same(other.addresses, ['10.200.77.3'], 'other names are forwarded to dns-server')
  t.match(netSnapshot(a).nft, `table inet ${table}`, 'the redirect table while active')
  t.equal((await c.recover(uid)).status, 200)
  t.match(await tool(a, 'resolve', 'api.example.com', b.ip), { addresses: ['10.200.77.1'] }, "the upstream's answer again")
  t.same(netSnapshot(a), before, 'nft table gone; nothing else left in the namespace')
  t.equal((await c.recover(uid)).status, 404)
  const bad = await c.attack('network', { uid: randomUUID(), action: 'dns', 'dns-ip': 'ten', 'dns-domain-name': 'api.example.com' })
  t.equal(bad.status, 400)
  t.match(bad.body, { ...chaosdError('error.api.invalid_request'), message: /dns-ip "ten" is not an IP address/ })
})

/** An HTTP request from inside ns (a fresh node): status, parsed body and the request's own time. */
function fetchFrom(ns: TestNs, method: string, url: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown>; ms: number }> {
  const script = `const t0 = performance.now(); const [m, u, b] = process.argv.slice(1);
fetch(u, { method: m, ...(b ? { body: b, headers: { 'content-type': 'application/json' } } : {}), signal: AbortSignal.timeout(5000) })
  .then(async (r) => console.log(JSON.stringify({ status: r.status, body: JSON.parse((await r.text()) || '{}'), ms: performance.now() - t0 })))
  .catch((e) => console.log(JSON.stringify({ status: 0, body: { error: String(e) }, ms: performance.now() - t0 })))`
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', [`--net=${ns.path}`, '--', process.execPath, '-e', script, method, url, ...(body === undefined ? [] : [JSON.stringify(body)])], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (c: Buffer) => (out += c.toString()))
    child.on('close', () => {
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as { status: number; body: Record<string, unknown>; ms: number })
      } catch (err) {
        reject(err as Error)
      }
    })
  })
}

/** Processes whose network namespace is the one at path (helpers an injection left would show here). */
function processesIn(nsPath: string): number[] {
  const inode = statSync(nsPath).ino
  return readdirSync('/proc')
    .filter((n) => /^[0-9]+$/.test(n))
    .filter((n) => {
      try {
        return readlinkSync(`/proc/${n}/ns/net`) === `net:[${inode}]`
      } catch {
        return false
      }
    })
    .map(Number)
}

t.test("delay on the host-target path: an agent inside namespace A, driven from B as Chaos Mesh would, delays A's own traffic; its chaosd port is spared; DELETE leaves nothing", opts, async (t) => {
  const { a, b } = netnsPair(t, 66)
  // The agent's "host" is its own network namespace: here A, a namespace of the test.
  const agent = await startAgentProcess(t, tmpDir(t), { netnsPath: a.path, args: ['--chaosd-listen', `${a.ip}:31767`] })
  await waitFor('the chaosd listener', () => agent.logs.some((l) => l.msg === 'chaosd-compatible API ready'), 30_000)
  const chaosd = `http://${a.ip}:31767`
  await background(t, b, 'tcp-listen', 9000)
  const base = await tool<{ ok: boolean; ms: number }>(a, 'tcp-connect', b.ip, 9000, 2000)
  const before = netSnapshot(a)
  const own = processesIn(a.path)
  const uid = randomUUID()
  const res = await fetchFrom(b, 'POST', `${chaosd}/api/attack/network`, { uid, action: 'delay', device: a.dev, latency: '200ms', jitter: '0ms', correlation: '0', 'ip-address': b.ip })
  t.same({ status: res.status, body: res.body }, { status: 200, body: { status: 200, message: 'attack successfully', uid } }, JSON.stringify(res.body))
  const list = await fetchFrom(b, 'GET', `${chaosd}/api/experiments/`)
  t.match(list.body, [{ uid, status: 'success', kind: 'network', action: 'delay' }])
  const slow = await tool<{ ok: boolean; ms: number }>(a, 'tcp-connect', b.ip, 9000, 3000)
  const api = await fetchFrom(b, 'GET', `${chaosd}/api/system/health`)
  t.comment(`host path: connect A -> B before ${base.ms.toFixed(1)} ms, during a 200ms delay ${slow.ms.toFixed(1)} ms; a chaosd request from B meanwhile ${api.ms.toFixed(1)} ms`)
  t.ok(slow.ok && slow.ms >= 190, 'the SYN waited about 200 ms')
  t.equal(api.status, 200, 'the chaosd port still answers')
  // Spared by rule, not by luck: the delay's rules in A accept the chaosd port before anything
  // is queued (a time bound here would fail on a loaded machine; the time is in the comment).
  const during = netSnapshot(a)
  t.match(JSON.stringify(during), /31767/, 'the rules in force exempt the chaosd port: a control channel')
  const del = await fetchFrom(b, 'DELETE', `${chaosd}/api/attack/${uid}`)
  t.same({ status: del.status, body: del.body }, { status: 200, body: { status: 200, message: 'attack recover successfully', uid } })
  const after = await tool<{ ok: boolean; ms: number }>(a, 'tcp-connect', b.ip, 9000, 2000)
  t.ok(after.ok, `connect after DELETE ${after.ms.toFixed(1)} ms`)
  t.same(netSnapshot(a), before, 'nothing left in the namespace')
  t.same(processesIn(a.path).sort(), own.sort(), 'no helper left in the namespace (only the agent)')
  t.equal((await fetchFrom(b, 'DELETE', `${chaosd}/api/attack/${uid}`)).status, 404)
  agent.child.kill('SIGTERM')
  await agent.exited
})
