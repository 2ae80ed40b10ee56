// chaosd network attacks as Chaos Mesh sends them, on the real kernel. Network attacks act on
// the agent's own network namespace; here the chaosd API is pointed at a namespace of the test
// (networkTarget), so traffic stays in 10.200.x.x namespaces the test creates. Needs root.
import { randomUUID } from 'node:crypto'
import t from 'tap'
import type { TestLike } from '../helpers.js'
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
