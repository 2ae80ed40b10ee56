// network-loss measured on the real kernel (nft numgen here: this kernel lacks sch_netem), and
// the netem kinds' exact tc commands and refusal. Needs root; traffic stays in test namespaces.
import t from 'tap'
import { networkCorrupt } from '../../../../agent/faults/network-corrupt/index.js'
import { networkDuplicate } from '../../../../agent/faults/network-duplicate/index.js'
import { networkLoss } from '../../../../agent/faults/network-loss/index.js'
import { networkReorder } from '../../../../agent/faults/network-reorder/index.js'
import { featureNames, type FeatureMap } from '../../../../protocol/capabilities.js'
import type { Injection } from '../../../../protocol/injection.js'
import type { ResolvedTarget } from '../../../../protocol/target.js'
import { testAgent, type TestLike } from '../../../helpers.js'
import { background, enter, netSnapshot, netnsPair, tool, type TestNs } from '../../../net.js'

const root = process.getuid?.() === 0
const opts = { skip: root ? false : 'needs root (ip netns add)' }

/** Share of `count` numbered datagrams from a that do not arrive at b. */
async function measureLoss(t: TestLike, a: TestNs, b: TestNs, count: number): Promise<number> {
  const sink = await background(t, b, 'udp-sink', 9100, 1500)
  await tool(a, 'udp-blast', b.ip, 9100, count, 150)
  const { received } = (await sink.result) as { received: number }
  return 1 - received / count
}

t.test('loss 30 % over 4000 UDP datagrams is measured within 26-34 %, and recovery leaves no trace', opts, async (t) => {
  const app = await testAgent(t)
  const { a, b } = netnsPair(t)
  const baseline = await measureLoss(t, a, b, 1000)
  t.equal(baseline, 0, 'no loss without the fault')
  const before = netSnapshot(a)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'network-loss', percent: 30, peers: [b.ip], protocol: 'udp', ports: [9100] }, target: { type: 'netns', name: a.name }, duration: '5m' },
  })
  t.equal(res.statusCode, 201, res.body)
  const inj = res.json<Injection>()
  t.equal((inj.plan as { mechanism?: string }).mechanism, 'nft', 'nft numgen: this kernel has no netem')
  t.match((inj.plan as { script?: string }).script, /udp dport 9100 numgen random mod 10000 < 3000 drop/)
  const loss = await measureLoss(t, a, b, 4000)
  t.comment(`requested 30 %, measured ${(loss * 100).toFixed(2)} % over 4000 datagrams`)
  t.ok(loss >= 0.26 && loss <= 0.34, `measured ${(loss * 100).toFixed(2)} %`)
  await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })
  t.equal(await measureLoss(t, a, b, 1000), 0, 'no loss after recovery')
  t.same(netSnapshot(a), before)
})

t.test('ingress loss on the receiving side', opts, async (t) => {
  const app = await testAgent(t)
  const { a, b } = netnsPair(t)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'network-loss', percent: 50, direction: 'ingress', localPorts: [9100], protocol: 'udp' }, target: { type: 'netns', name: b.name }, duration: '5m' },
  })
  t.equal(res.statusCode, 201, res.body)
  const loss = await measureLoss(t, a, b, 3000)
  t.comment(`requested 50 % ingress, measured ${(loss * 100).toFixed(2)} %`)
  t.ok(loss >= 0.45 && loss <= 0.55)
})

t.test('netem-only options and kinds are refused here with the reason', opts, async (t) => {
  const app = await testAgent(t)
  const { a } = netnsPair(t)
  const caps = (await app.inject({ method: 'GET', url: '/v1/capabilities' })).json<{ features: FeatureMap; kinds: Record<string, { available: boolean; reason?: string }> }>()
  if (caps.features['qdisc:netem'].available) {
    t.pass('this kernel has netem: refusal does not apply')
    return
  }
  for (const kind of ['network-corrupt', 'network-duplicate', 'network-reorder']) {
    t.equal(caps.kinds[kind]?.available, false, `${kind} unavailable`)
    t.match(caps.kinds[kind]?.reason, /sch_netem/)
    const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind, percent: 5 }, target: { type: 'netns', name: a.name }, duration: '30s' } })
    t.equal(res.statusCode, 422, kind)
    t.equal(res.json<{ code: string }>().code, 'FAULTLINE_ERR_UNSUPPORTED')
    t.match(res.json<{ message: string }>().message, new RegExp(`${kind} is not available on this host: .*sch_netem`))
  }
  const corr = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'network-loss', percent: 5, correlation: 25 }, target: { type: 'netns', name: a.name }, duration: '30s' } })
  t.equal(corr.statusCode, 422)
  t.match(corr.json<{ message: string }>().message, /correlation needs netem/)
})

// ---- exact tc commands where netem exists (no kernel needed) --------------------------------------

const allFeatures = Object.fromEntries(featureNames.map((f) => [f, { available: true, detail: 'ok' }])) as FeatureMap
const target: ResolvedTarget = { type: 'netns', name: 'blue', path: '/var/run/netns/blue', netnsInode: 4026532999 }
const ns = enter('/var/run/netns/blue')
const netemFacts = (peers: string[] = []) => ({ tc: '/usr/sbin/tc', device: 'eth0', peers: { v4: peers, v6: [], resolved: [] }, protectedTcpPorts: [] as number[] })
const ctx = <F>(facts: F) => ({
  paths: { procRoot: '/proc', netnsDir: '/var/run/netns', containerdTaskDir: '/run/containerd/io.containerd.runtime.v2.task' },
  features: allFeatures,
  control: { agentNetnsInode: 1, tcpPorts: [22] },
  injectionId: 'netem-1',
  facts,
})

t.test('netem plans: exact tc commands', async (t) => {
  const loss = networkLoss.plan({ kind: 'network-loss', percent: 30, correlation: 25 }, target, ctx({ mechanism: 'netem' as const, netem: netemFacts() }))
  t.equal(loss.mechanism, 'netem')
  const h = /handle ([0-9a-f]+):/.exec(loss.tcApply!.map((a) => a.join(' ')).join('\n'))![1]
  t.same(loss.tcApply, [[...ns, '/usr/sbin/tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'handle', `${h}:`, 'netem', 'loss', '30%', '25%']])
  t.same(loss.tcRecover, [[...ns, '/usr/sbin/tc', 'qdisc', 'del', 'dev', 'eth0', 'root', 'handle', `${h}:`]])
  t.same(loss.claims, ['tc-root:4026532999:eth0'], 'the root qdisc of the device is claimed')

  const corrupt = networkCorrupt.plan({ kind: 'network-corrupt', percent: 1.5 } as never, target, ctx(netemFacts()))
  t.match(corrupt.tcApply[0]!.join(' '), /netem corrupt 1\.5%$/)
  const dup = networkDuplicate.plan({ kind: 'network-duplicate', percent: 10, correlation: 50 } as never, target, ctx(netemFacts()))
  t.match(dup.tcApply[0]!.join(' '), /netem duplicate 10% 50%$/)
  const reorder = networkReorder.plan({ kind: 'network-reorder', percent: 25, delay: '20ms' } as never, target, ctx(netemFacts()))
  t.match(reorder.tcApply[0]!.join(' '), /netem delay 20ms reorder 25%$/)

  // filters: a prio root whose band 4 (netem) only filtered traffic reaches, protected ports to band 1
  const filtered = networkLoss.plan(
    { kind: 'network-loss', percent: 10, ports: [5432], protocol: 'tcp' },
    target,
    ctx({ mechanism: 'netem' as const, netem: { ...netemFacts(['10.200.0.2/32']), protectedTcpPorts: [22] } }),
  )
  const lines = filtered.tcApply!.map((a) => a.slice(ns.length + 1).join(' '))
  const n = (parseInt(h!, 16) + 1).toString(16)
  t.same(lines, [
    `qdisc add dev eth0 root handle ${h}: prio bands 4 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1`,
    `qdisc add dev eth0 parent ${h}:4 handle ${n}: netem loss 10%`,
    `filter add dev eth0 parent ${h}: protocol ip prio 1 u32 match ip protocol 6 0xff match ip sport 22 0xffff flowid ${h}:1`,
    `filter add dev eth0 parent ${h}: protocol ip prio 1 u32 match ip protocol 6 0xff match ip dport 22 0xffff flowid ${h}:1`,
    `filter add dev eth0 parent ${h}: protocol ip prio 2 u32 match ip dst 10.200.0.2/32 match ip protocol 6 0xff match ip dport 5432 0xffff flowid ${h}:4`,
  ])
})
