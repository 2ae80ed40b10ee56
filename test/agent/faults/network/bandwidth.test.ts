// network-bandwidth measured on the real kernel (tbf; IFB + mirred for ingress; htb for
// filters), inside namespace pairs the test creates (10.200.0.0/16), and the plan's exact tc/ip
// commands from fixed facts. The kernel tests need root.
//
// Throughput is measured on the receiver over a 4 s window that starts 1.5 s after the first
// byte (test/net/tool-bandwidth.mjs), so TCP slow start and the bucket's initial burst stay out
// of the figure; the rate is read from the upper hull of the received-bytes curve, so a window
// edge that falls into TCP's in-order delivery hole during a loss repair does not count (the raw
// window figure is logged next to it). The figure is TCP payload (goodput): at 1500 MTU a
// 1514-byte frame carries 1448 payload bytes, so a perfect 1 Mbit/s shaper reads ~956 kbit/s.
//
// Each shaped measurement takes ~7 s and the crash test starts the agent twice as a process:
// on a loaded 2-core CI machine the file needs more than tap's default 180 s.
import t, { type Test } from 'tap'
import { Value } from 'typebox/value'
import { networkBandwidth } from '../../../../agent/faults/network-bandwidth/index.js'
import type { BandwidthFacts } from '../../../../agent/faults/network-bandwidth/host.js'
import { featureNames, type FeatureMap } from '../../../../protocol/capabilities.js'
import type { Injection } from '../../../../protocol/injection.js'
import type { ResolvedTarget } from '../../../../protocol/target.js'
import { http, startAgentProcess, testAgent, tmpDir } from '../../../helpers.js'
import { enter, inNs, measure, netSnapshot, netnsPair, type Rate, type TestNs } from '../../../net.js'

t.setTimeout(360_000)

const root = process.getuid?.() === 0
const opts = { skip: root ? false : 'needs root (ip netns add)' }

// ---- throughput ----------------------------------------------------------------------------------

type BandwidthPlan = ReturnType<typeof networkBandwidth.plan>
const planOf = (inj: Injection) => inj.plan as unknown as BandwidthPlan

const mbit = (bps: number) => `${(bps / 1e6).toFixed(3)} Mbit/s`

/** Asserts a shaped measurement within ±15 % of the requested rate and logs the figures. */
function within15(t: Test, what: string, requestedBps: number, r: Rate): void {
  const wire = (r.bitsPerSecond * 1514) / 1448
  const pct = (bps: number) => `${((bps / requestedBps - 1) * 100).toFixed(1)} %`
  t.comment(
    `${what}: requested ${mbit(requestedBps)}, measured goodput ${mbit(r.bitsPerSecond)} (${pct(r.bitsPerSecond)}; raw window ${mbit(r.rawBitsPerSecond)}, ${pct(r.rawBitsPerSecond)}), ≈ ${mbit(wire)} on the wire; 250 ms samples ${r.samples.map((s) => (s / 1e6).toFixed(2)).join(' ')}`,
  )
  t.ok(Math.abs(r.bitsPerSecond / requestedBps - 1) <= 0.15, `${what}: ${mbit(r.bitsPerSecond)} within ±15 % of ${mbit(requestedBps)}`)
}

/** Unshaped veth throughput is in Gbit/s; 20 Mbit/s is far above any shaped rate used here. */
const FULL_SPEED_BPS = 20e6

type Agent = Awaited<ReturnType<typeof testAgent>>
let shared: Agent | undefined
/** One in-process agent for the kernel tests (they run one after another), closed at the end. */
async function agent(): Promise<Agent> {
  return (shared ??= await testAgent(t))
}

async function inject(app: Agent, ns: TestNs, fault: object, extra: object = {}) {
  return app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'network-bandwidth', ...fault }, target: { type: 'netns', name: ns.name }, duration: '5m', ...extra },
  })
}

/**
 * The part of netSnapshot (test/net.ts) that this kind can change — qdiscs, tc filters, links —
 * read the same way, cheap enough to take at every kill point.
 */
function tcSnapshot(ns: TestNs): Record<string, string> {
  const links = inNs(ns, ['ip', '-o', 'link', 'show'])
  const devs = links.split('\n').flatMap((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? [])
  return {
    qdiscs: inNs(ns, ['tc', 'qdisc', 'show']),
    links: links.replace(/\\\s+link\/.*$/gm, ''),
    filters: devs.map((dev) => `${dev} egress:${inNs(ns, ['tc', 'filter', 'show', 'dev', dev])} ingress:${inNs(ns, ['tc', 'filter', 'show', 'dev', dev, 'ingress'])}`).join('\n'),
  }
}

// ---- on the real kernel ---------------------------------------------------------------------------

t.test('1mbit egress: measured within ±15 %; recovery restores full speed and leaves no trace', opts, async (t) => {
  const app = await agent()
  const { a, b } = netnsPair(t, 51)
  const before = netSnapshot(a)
  const res = await inject(app, a, { rate: '1mbit', device: a.dev })
  t.equal(res.statusCode, 201, res.body)
  const inj = res.json<Injection>()
  t.match(inNs(a, ['tc', 'qdisc', 'show', 'dev', a.dev]), /qdisc tbf [0-9a-f]+: root .*rate 1Mbit burst 3028b/)
  within15(t, 'egress 1mbit', 1e6, await measure(t, a, b, 9100))

  const rec = await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })
  t.equal(rec.json<Injection>().status, 'recovered')
  const after = await measure(t, a, b, 9101, 300, 700)
  t.comment(`after recovery: ${mbit(after.bitsPerSecond)}`)
  t.ok(after.bitsPerSecond > FULL_SPEED_BPS, `full speed again (${mbit(after.bitsPerSecond)})`)
  t.same(netSnapshot(a), before, 'qdiscs, filters, links, nft and iptables exactly as before')
})

t.test('1mbit ingress (IFB): traffic arriving into A is measured within ±15 %; no trace after recovery', opts, async (t) => {
  const app = await agent()
  const { a, b } = netnsPair(t, 52)
  const before = netSnapshot(a)
  const res = await inject(app, a, { rate: '1mbit', direction: 'ingress', device: a.dev })
  t.equal(res.statusCode, 201, res.body)
  const inj = res.json<Injection>()
  const ifb = (planOf(inj).ops.find((o) => o.creates?.type === 'ifb')?.creates as { name?: string } | undefined)?.name
  t.match(ifb, /^flb[0-9a-f]{10}$/, 'the IFB is named from the injection id')
  t.match(inNs(a, ['ip', '-o', 'link', 'show']), new RegExp(`${ifb}.*state UNKNOWN|${ifb}.*UP`), 'our IFB is up in the namespace')
  t.match(inNs(a, ['tc', 'filter', 'show', 'dev', a.dev, 'ingress']), new RegExp(`redirect to device ${ifb}`, 'i'))
  within15(t, 'ingress 1mbit', 1e6, await measure(t, b, a, 9100))

  const rec = await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })
  t.equal(rec.json<Injection>().status, 'recovered')
  const after = await measure(t, b, a, 9101, 300, 700)
  t.ok(after.bitsPerSecond > FULL_SPEED_BPS, `full speed again (${mbit(after.bitsPerSecond)})`)
  t.same(netSnapshot(a), before, 'IFB, ingress qdisc and filter gone; everything as before')
})

t.test('one shaper per device direction: a second one is refused with 409 until the first is recovered', opts, async (t) => {
  const app = await agent()
  const { a } = netnsPair(t, 53)
  const before = netSnapshot(a)
  const first = await inject(app, a, { rate: '1mbit', direction: 'both', device: a.dev })
  t.equal(first.statusCode, 201, first.body)
  const firstId = first.json<Injection>().id
  for (const direction of ['egress', 'ingress', 'both']) {
    const second = await inject(app, a, { rate: '5mbit', direction, device: a.dev })
    t.equal(second.statusCode, 409, `${direction}: ${second.body}`)
    t.equal(second.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_BUSY')
    t.match(second.json<{ message: string }>().message, new RegExp(`already shaped .* by network-bandwidth injection "${firstId}"; recover it first`))
  }
  await app.inject({ method: 'DELETE', url: `/v1/injections/${firstId}` })
  const egress = await inject(app, a, { rate: '5mbit', direction: 'egress', device: a.dev })
  t.equal(egress.statusCode, 201, 'the device is free again once the first is recovered')
  const ingress = await inject(app, a, { rate: '2mbit', direction: 'ingress', device: a.dev })
  t.equal(ingress.statusCode, 201, 'egress and ingress are separate resources: they compose')
  await app.inject({ method: 'DELETE', url: '/v1/injections' })
  t.same(netSnapshot(a), before)
})

t.test('a pre-existing ingress qdisc and its filter survive; only our filter is added and removed', opts, async (t) => {
  const app = await agent()
  const { a } = netnsPair(t, 54)
  inNs(a, ['tc', 'qdisc', 'add', 'dev', a.dev, 'handle', 'ffff:', 'ingress'])
  // Someone else's filter, at tc's usual automatic preference; it matches an address not in use.
  inNs(a, ['tc', 'filter', 'add', 'dev', a.dev, 'ingress', 'prio', '49152', 'protocol', 'ip', 'u32', 'match', 'ip', 'src', '10.200.54.99/32'])
  const before = netSnapshot(a)
  t.match(before.qdiscs, /qdisc ingress ffff:/)
  t.match(before.filters, /pref 49152 u32/)

  const res = await inject(app, a, { rate: '1mbit', direction: 'ingress', device: a.dev })
  t.equal(res.statusCode, 201, res.body)
  const plan = planOf(res.json<Injection>())
  t.notOk(plan.ops.some((o) => o.creates?.type === 'ingress-qdisc'), 'the existing ingress qdisc is used, not created')
  t.same(plan.ops.find((o) => o.creates?.type === 'ingress-filter')?.creates, { type: 'ingress-filter', device: a.dev, prio: 1, protocol: 'all' })
  const filters = inNs(a, ['tc', 'filter', 'show', 'dev', a.dev, 'ingress'])
  t.match(filters, /pref 1 u32 [^]*Redirect to device flb[0-9a-f]{10}[^]*pref 49152 u32/i, 'ours at preference 1, classifying first; theirs still there')

  await app.inject({ method: 'DELETE', url: `/v1/injections/${res.json<Injection>().id}` })
  t.same(netSnapshot(a), before, 'the ingress qdisc and the other filter are still there; ours is gone')
})

t.test('peers/ports: only matching traffic is shaped (htb egress, filtered IFB ingress), side by side', opts, async (t) => {
  const app = await agent()
  const { a, b } = netnsPair(t, 55)
  const before = netSnapshot(a)
  const egress = await inject(app, a, { rate: '1mbit', peers: [b.ip], ports: [9100], protocol: 'tcp' })
  t.equal(egress.statusCode, 201, egress.body)
  const egressPlan = planOf(egress.json<Injection>())
  t.match(egressPlan, { device: a.dev, deviceFrom: 'peer-route' }, 'the device is the one the route to the peer takes')
  const ingress = await inject(app, a, { rate: '2mbit', direction: 'ingress', localPorts: [9200], device: a.dev })
  t.equal(ingress.statusCode, 201, ingress.body)

  within15(t, 'egress 1mbit, peer + port filter (htb)', 1e6, await measure(t, a, b, 9100))
  const otherPort = await measure(t, a, b, 9101, 300, 700)
  t.ok(otherPort.bitsPerSecond > FULL_SPEED_BPS, `another port is not shaped (${mbit(otherPort.bitsPerSecond)})`)
  within15(t, 'ingress 2mbit, local port filter (IFB)', 2e6, await measure(t, b, a, 9200))
  const otherLocal = await measure(t, b, a, 9201, 300, 700)
  t.ok(otherLocal.bitsPerSecond > FULL_SPEED_BPS, `another local port is not shaped (${mbit(otherLocal.bitsPerSecond)})`)

  await app.inject({ method: 'DELETE', url: '/v1/injections' })
  t.same(netSnapshot(a), before)
})

t.test('device: the default route decides; without one the user is told to give device', opts, async (t) => {
  const app = await agent()
  const { a, b } = netnsPair(t, 56)
  const none = await inject(app, a, { rate: '1mbit' }, { dryRun: true })
  t.equal(none.statusCode, 400)
  t.equal(none.json<{ code: string }>().code, 'FAULTLINE_ERR_VALIDATION')
  t.match(none.json<{ message: string }>().message, new RegExp(`has no default route, so there is no default device to shape: give "device" \\(interfaces: ${a.dev}\\)`))
  inNs(a, ['ip', 'route', 'add', 'default', 'via', b.ip])
  const dry = await inject(app, a, { rate: '1mbit' }, { dryRun: true })
  t.equal(dry.statusCode, 200, dry.body)
  t.match(dry.json<Injection>().plan, { device: a.dev, deviceFrom: 'default-route' })
  const missing = await inject(app, a, { rate: '1mbit', device: 'nosuch0' }, { dryRun: true })
  t.equal(missing.statusCode, 400)
  t.match(missing.json<{ message: string }>().message, /there is no interface "nosuch0"/)
})

t.test('a root qdisc that Faultline did not create is never replaced', opts, async (t) => {
  const app = await agent()
  const { a } = netnsPair(t, 57)
  // tbf: unlike htb, its `tc qdisc show` line has no counters that IPv6 autoconfiguration moves
  inNs(a, ['tc', 'qdisc', 'add', 'dev', a.dev, 'root', 'handle', '1:', 'tbf', 'rate', '10mbit', 'burst', '10kb', 'latency', '50ms'])
  const before = netSnapshot(a)
  const res = await inject(app, a, { rate: '1mbit', device: a.dev })
  t.equal(res.statusCode, 422)
  t.equal(res.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_STATE')
  t.match(res.json<{ message: string }>().message, /already has a root qdisc \(tbf 1:\) .* never replaces a qdisc it did not create/)
  const ingressOnly = await inject(app, a, { rate: '1mbit', device: a.dev, direction: 'ingress' })
  t.equal(ingressOnly.statusCode, 201, 'ingress shaping does not touch the root qdisc')
  await app.inject({ method: 'DELETE', url: '/v1/injections' })
  t.same(netSnapshot(a), before)
})

t.test('kill -9 right after applying ingress + egress (IFB, ingress qdisc, filter, root tbf): after a restart the namespace reads exactly as before', opts, async (t) => {
  const { a } = netnsPair(t, 58)
  const stateDir = tmpDir(t)
  const before = netSnapshot(a)
  const first = await startAgentProcess(t, stateDir, { env: { FAULTLINE_CRASH_AT: 'after-apply' } })
  await t.rejects(
    http(`${first.url}/v1/injections`, {
      method: 'POST',
      body: { fault: { kind: 'network-bandwidth', rate: '1mbit', direction: 'both', device: a.dev }, target: { type: 'netns', name: a.name }, duration: '10m', id: 'bw-crash-1' },
    }),
    'the agent dies mid-request',
  )
  t.equal((await first.exited).signal, 'SIGKILL')
  const during = netSnapshot(a)
  t.match(during.links, /flb[0-9a-f]{10}/, 'the IFB was left behind by the dead agent')
  t.match(during.qdiscs, /qdisc ingress ffff:/)
  t.match(during.qdiscs, new RegExp(`qdisc tbf [0-9a-f]+: dev ${a.dev} root`))

  const second = await startAgentProcess(t, stateDir)
  t.same(netSnapshot(a), before, 'identical to before by the time the API answers')
  const inj = await http<Injection>(`${second.url}/v1/injections/bw-crash-1`)
  t.equal(inj.body.status, 'recovered')
  t.match(inj.body.notes.join('\n'), /while this injection was applying/)
})

t.test('every kill point inside apply is recoverable: each checkpointed state undoes exactly what exists', opts, async (t) => {
  // Replays apply with a journal that keeps every checkpoint, then recovers from each one after
  // re-creating exactly the host state at that point: what a kill -9 between any two commands
  // leaves behind.
  const { a } = netnsPair(t, 59)
  const before = netSnapshot(a)
  const tcBefore = tcSnapshot(a)
  const app = await agent()
  const dry = await inject(app, a, { rate: '1mbit', direction: 'both', device: a.dev }, { dryRun: true, id: 'bw-steps-1' })
  t.equal(dry.statusCode, 200, dry.body)
  const plan = planOf(dry.json<Injection>())
  const log = (await import('pino')).pino({ level: 'silent' })
  const paths = { procRoot: '/proc', netnsDir: '/var/run/netns', containerdTaskDir: '/run/containerd/io.containerd.runtime.v2.task' }
  type State = Parameters<typeof networkBandwidth.recover>[0]
  for (let stop = 0; stop <= plan.ops.length; stop++) {
    // run the first `stop` commands, the way apply would before being killed ...
    const checkpoints: State[] = [networkBandwidth.undoFromPlan(plan)]
    await networkBandwidth.apply({ ...plan, ops: plan.ops.slice(0, stop) }, { log, paths, expiresAt: Date.now() + 60_000, checkpoint: (s) => checkpoints.push(structuredClone(s as State)) })
    const last = checkpoints.at(-1)!
    // ... and if the next command creates something, the agent may have died after its
    // checkpoint but before running it: the state names a resource that does not exist.
    const next = plan.ops[stop]?.creates
    const journal: State = next ? { ...last, owned: [...last.owned, next] } : last
    const outcome = await networkBandwidth.recover(journal, { log, paths })
    t.same(tcSnapshot(a), tcBefore, `killed after ${stop} of ${plan.ops.length} commands${next ? ' (next one checkpointed)' : ''}: recovered exactly`)
    if (next) t.match(outcome.note ?? '', /already gone|no longer there/, 'the checkpointed but never created resource counts as gone')
    const again = await networkBandwidth.recover(journal, { log, paths })
    if (journal.owned.length > 0) t.match(again.note ?? '', /already gone|no longer there/, 'recovery is idempotent: a second one finds everything gone')
  }
  t.same(netSnapshot(a), before, 'and the whole snapshot (nft, iptables too) reads as before')
})

// ---- the plan: exact commands from fixed facts (no kernel needed) ---------------------------------

const allFeatures = Object.fromEntries(featureNames.map((f) => [f, { available: true, detail: 'ok' }])) as FeatureMap
const target: ResolvedTarget = { type: 'netns', name: 'blue', path: '/var/run/netns/blue', netnsInode: 4026532999 }
const facts = (over: Partial<BandwidthFacts> = {}): BandwidthFacts => ({
  tc: '/usr/sbin/tc',
  ip: '/usr/sbin/ip',
  device: 'eth0',
  deviceFrom: 'default-route',
  mtu: 1500,
  root: { kind: 'noqueue', handle: '0:' },
  ingressQdisc: 'none',
  ingressPrefs: [],
  links: ['lo', 'eth0'],
  peers: { v4: [], v6: [], resolved: [] },
  openClaims: [],
  ...over,
})
const ctx = (f: BandwidthFacts, features: FeatureMap = allFeatures) => ({
  paths: { procRoot: '/proc', netnsDir: '/var/run/netns', containerdTaskDir: '/run/containerd/io.containerd.runtime.v2.task' },
  features,
  control: { agentNetnsInode: 1, tcpPorts: [22] },
  injectionId: 'bw-plan-1',
  facts: f,
})
type Spec = Parameters<typeof networkBandwidth.plan>[0]
const spec = (s: Omit<Spec, 'kind'>): Spec => ({ kind: 'network-bandwidth', ...s })
/** The plan's exec steps without the nsexec prefix, which is checked once. */
function commands(t: Test, plan: ReturnType<typeof networkBandwidth.plan>, phase: 'apply' | 'recover'): string[] {
  return plan.steps
    .filter((s) => s.phase === phase && s.action === 'exec')
    .map((s) => {
      t.match(s.argv!.slice(0, 3), enter('/var/run/netns/blue'))
      return s.argv!.slice(3).join(' ')
    })
}
// From the id "bw-plan-1": handle major 6bca (sha256-derived, in 1000..7ffe), IFB flb8ed0155a78.

t.test('plan: exact tc commands for egress (tbf) from fixed facts', async (t) => {
  const plan = networkBandwidth.plan(spec({ rate: '1mbit' }), target, ctx(facts()))
  t.same(commands(t, plan, 'apply'), ['/usr/sbin/tc qdisc add dev eth0 root handle 6bca: tbf rate 1mbit burst 3028b limit 15528b'])
  t.same(commands(t, plan, 'recover'), ['/usr/sbin/tc qdisc del dev eth0 root handle 6bca:'])
  t.same(plan.claims, ['tc-root:4026532999:eth0'])
  t.match(plan, { device: 'eth0', rate: '1mbit', rateBitsPerSecond: 1_000_000, burstBytes: 3028, limitBytes: 15528 })
  t.same(networkBandwidth.undoFromPlan(plan).owned, [], 'nothing is owned before apply has checkpointed it')
  t.ok(Value.Check(networkBandwidth.planSchema, plan), 'the plan matches its schema')
  t.ok(Value.Check(networkBandwidth.stateSchema, networkBandwidth.undoFromPlan(plan)), 'the undo state matches its schema')
})

t.test('plan: exact tc/ip commands for ingress (IFB + ingress qdisc + u32/mirred + tbf)', async (t) => {
  const plan = networkBandwidth.plan(spec({ rate: '500kbit', direction: 'ingress' }), target, ctx(facts()))
  t.same(commands(t, plan, 'apply'), [
    '/usr/sbin/ip link add flb8ed0155a78 type ifb',
    '/usr/sbin/tc qdisc add dev flb8ed0155a78 root handle 6bca: tbf rate 500kbit burst 3028b limit 15140b',
    '/usr/sbin/ip link set dev flb8ed0155a78 up',
    '/usr/sbin/tc qdisc add dev eth0 handle ffff: ingress',
    '/usr/sbin/tc filter add dev eth0 ingress prio 1 protocol all u32 match u32 0 0 action mirred egress redirect dev flb8ed0155a78',
  ])
  t.same(commands(t, plan, 'recover'), [
    '/usr/sbin/tc filter del dev eth0 ingress prio 1 protocol all',
    '/usr/sbin/tc qdisc del dev eth0 ingress',
    '/usr/sbin/ip link del dev flb8ed0155a78',
  ])
  t.same(plan.claims, ['tc-ingress:4026532999:eth0'])

  // An ingress qdisc that exists already: only our filter, at the first free preference.
  const existing = networkBandwidth.plan(spec({ rate: '500kbit', direction: 'ingress' }), target, ctx(facts({ ingressQdisc: 'ingress', ingressPrefs: [1, 2, 49152] })))
  const lines = commands(t, existing, 'apply')
  t.notOk(lines.some((l) => l.includes('qdisc add dev eth0')), 'the existing ingress qdisc is not re-created')
  t.equal(lines.at(-1), '/usr/sbin/tc filter add dev eth0 ingress prio 3 protocol all u32 match u32 0 0 action mirred egress redirect dev flb8ed0155a78')
  t.same(commands(t, existing, 'recover'), ['/usr/sbin/tc filter del dev eth0 ingress prio 3 protocol all', '/usr/sbin/ip link del dev flb8ed0155a78'])
  t.match(existing.steps.map((s) => s.detail).join('\n'), /preferences 1, 2, classify first/)
})

t.test('plan: filters use htb (egress) and filtered redirects (ingress); defaults and validation', async (t) => {
  const plan = networkBandwidth.plan(
    spec({ rate: '10mbit', direction: 'both', peers: ['10.200.0.2/32'], ports: [5432] }),
    target,
    ctx(facts({ peers: { v4: ['10.200.0.2/32'], v6: [], resolved: [] }, deviceFrom: 'peer-route' })),
  )
  const port = 'match u8 0x05 0x0f at 0 match u16 0x0000 0x1fff at 6'
  t.same(commands(t, plan, 'apply'), [
    '/usr/sbin/tc qdisc add dev eth0 root handle 6bca: htb default 0',
    '/usr/sbin/tc class add dev eth0 parent 6bca: classid 6bca:1 htb rate 10mbit ceil 10mbit burst 137500b cburst 137500b quantum 1514',
    '/usr/sbin/tc qdisc add dev eth0 parent 6bca:1 handle 6bcb: tbf rate 10mbit burst 12500b limit 137500b',
    `/usr/sbin/tc filter add dev eth0 parent 6bca: prio 1 protocol ip u32 match ip dst 10.200.0.2/32 match ip protocol 6 0xff ${port} match ip dport 5432 0xffff flowid 6bca:1`,
    `/usr/sbin/tc filter add dev eth0 parent 6bca: prio 1 protocol ip u32 match ip dst 10.200.0.2/32 match ip protocol 17 0xff ${port} match ip dport 5432 0xffff flowid 6bca:1`,
    '/usr/sbin/ip link add flb8ed0155a78 type ifb',
    '/usr/sbin/tc qdisc add dev flb8ed0155a78 root handle 6bca: tbf rate 10mbit burst 12500b limit 137500b',
    '/usr/sbin/ip link set dev flb8ed0155a78 up',
    '/usr/sbin/tc qdisc add dev eth0 handle ffff: ingress',
    `/usr/sbin/tc filter add dev eth0 ingress prio 1 protocol ip u32 match ip src 10.200.0.2/32 match ip protocol 6 0xff ${port} match ip sport 5432 0xffff action mirred egress redirect dev flb8ed0155a78`,
    `/usr/sbin/tc filter add dev eth0 ingress prio 1 protocol ip u32 match ip src 10.200.0.2/32 match ip protocol 17 0xff ${port} match ip sport 5432 0xffff action mirred egress redirect dev flb8ed0155a78`,
  ])
  t.same(plan.claims, ['tc-root:4026532999:eth0', 'tc-ingress:4026532999:eth0'])
  t.same(commands(t, plan, 'recover'), [
    '/usr/sbin/tc filter del dev eth0 ingress prio 1 protocol ip',
    '/usr/sbin/tc qdisc del dev eth0 ingress',
    '/usr/sbin/ip link del dev flb8ed0155a78',
    '/usr/sbin/tc qdisc del dev eth0 root handle 6bca:',
  ])

  // IPv6 and ICMP, without peers: one preference per protocol family
  const v6 = networkBandwidth.plan(spec({ rate: '1mbit', direction: 'ingress', protocol: 'icmp' }), target, ctx(facts()))
  t.same(commands(t, v6, 'apply').slice(-2), [
    '/usr/sbin/tc filter add dev eth0 ingress prio 1 protocol ip u32 match ip protocol 1 0xff action mirred egress redirect dev flb8ed0155a78',
    '/usr/sbin/tc filter add dev eth0 ingress prio 2 protocol ipv6 u32 match ip6 protocol 58 0xff action mirred egress redirect dev flb8ed0155a78',
  ])

  // defaults: burst = max(10 ms of traffic, 2 frames); limit = burst + max(100 ms, 8 frames); latency uses tc's formula
  t.match(networkBandwidth.plan(spec({ rate: '100mbit' }), target, ctx(facts())), { burstBytes: 125000, limitBytes: 1375000 })
  t.match(networkBandwidth.plan(spec({ rate: '1mbit', latency: '20ms' }), target, ctx(facts())), { burstBytes: 3028, limitBytes: 5528 })
  t.match(networkBandwidth.plan(spec({ rate: '1.5Mbit', burst: '32KiB', limit: '64KiB' }), target, ctx(facts())), { rate: '1500kbit', burstBytes: 32768, limitBytes: 65536 })
  t.match(networkBandwidth.plan(spec({ rate: '1mbit' }), target, ctx(facts({ mtu: 9000 }))), { burstBytes: 18028, limitBytes: 18028 + 72112 })

  const refused = (s: Omit<Spec, 'kind'>, f: Partial<BandwidthFacts>, code: string, message: RegExp, features?: FeatureMap) =>
    t.throws(() => networkBandwidth.plan(spec(s), target, ctx(facts(f), features)), { code, message })
  refused({ rate: '1mbps' }, {}, 'FAULTLINE_ERR_VALIDATION', /tc reads mbps as megabytes per second, not megabits; write "1mbit" for megabits per second, or "8mbit"/)
  refused({ rate: '4kbit' }, {}, 'FAULTLINE_ERR_VALIDATION', /outside 8kbit\.\.100gbit/)
  refused({ rate: '1mbit', limit: '10kb', latency: '10ms' }, {}, 'FAULTLINE_ERR_VALIDATION', /limit .* or latency .*, not both/)
  refused({ rate: '1mbit', burst: '1000b' }, {}, 'FAULTLINE_ERR_VALIDATION', /smaller than one frame .* use at least 1514b/)
  refused({ rate: '1mbit', protocol: 'icmp', ports: [80] }, {}, 'FAULTLINE_ERR_VALIDATION', /need protocol tcp, udp or all/)
  refused({ rate: '1mbit' }, { root: { kind: 'htb', handle: '1:' } }, 'FAULTLINE_ERR_TARGET_STATE', /already has a root qdisc \(htb 1:\)/)
  refused({ rate: '1mbit' }, { openClaims: [{ claim: 'tc-root:4026532999:eth0', injectionId: 'other' }] }, 'FAULTLINE_ERR_TARGET_BUSY', /already shaped \(tc-root\) by network-bandwidth injection "other"/)
  refused({ rate: '1mbit', direction: 'ingress' }, { links: ['lo', 'eth0', 'flb8ed0155a78'] }, 'FAULTLINE_ERR_TARGET_STATE', /flb8ed0155a78 already exists/)
  const noIfb = { ...allFeatures, 'link:ifb': { available: false, detail: 'kernel lacks ifb' } }
  refused({ rate: '1mbit', direction: 'ingress' }, {}, 'FAULTLINE_ERR_UNSUPPORTED', /ingress shaping needs link:ifb, which this host lacks: kernel lacks ifb/, noIfb)
  t.doesNotThrow(() => networkBandwidth.plan(spec({ rate: '1mbit' }), target, ctx(facts(), noIfb)), 'egress needs no IFB')
})
