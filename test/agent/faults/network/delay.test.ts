// network-delay: the pure plan of both mechanisms (netem from a features map, no kernel needed),
// and the NFQUEUE mechanism with native/netdelay on the real kernel, inside namespace pairs the
// test creates (10.200.0.0/16). Needs root, and the helper built (npm run build with
// libnetfilter-queue-dev installed): without it the real-kernel tests fail with the probe's reason.
import { spawn, spawnSync } from 'node:child_process'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import type { Static } from 'typebox'
import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import { kindAvailability } from '../../../../agent/capabilities/probe.js'
import { netdelayHelperPath, probeNetdelayHelper } from '../../../../agent/faults/network-delay/helper.js'
import { allocateQueue, chooseMechanism, delayParams, networkDelay, FIRST_QUEUE } from '../../../../agent/faults/network-delay/index.js'
import { featureNames, type FeatureMap } from '../../../../protocol/capabilities.js'
import type { Injection } from '../../../../protocol/injection.js'
import type { ResolvedTarget } from '../../../../protocol/target.js'
import { http, repoRoot, startAgentProcess, testAgent, tmpDir, waitFor } from '../../../helpers.js'
import { background, enter, inNs, netSnapshot, netnsPair, type TestNs } from '../../../net.js'

// Many RTT measurements and two agent processes: on a busy 2-core host this file can take
// longer than the default 180 s per file.
t.setTimeout(360_000)

const root = process.getuid?.() === 0
const kernel = { skip: root ? false : 'needs root (ip netns add, iptables, NFQUEUE)' }

// ---- helpers ---------------------------------------------------------------------------------

const toolScript = join(repoRoot, 'test', 'net', 'tool-delay.mjs')

interface RttStats {
  n: number
  lost: number
  min: number
  median: number
  p10: number
  p25: number
  p75: number
  p90: number
  mean: number
  stdev: number
}

/** UDP round trips from ns to host:port (udp-echo there): COUNT probes GAP_MS apart. */
function measureRtt(ns: TestNs, host: string, port = 9000, count = 60, gapMs = 10, tailMs = 400): Promise<RttStats> {
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', [`--net=${ns.path}`, '--', process.execPath, toolScript, 'rtt', host, String(port), String(count), String(gapMs), String(tailMs)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (c: Buffer) => (out += c.toString()))
    child.stderr.on('data', (c: Buffer) => (err += c.toString()))
    child.on('close', (code) => {
      try {
        const rtts = (JSON.parse(out) as { rtts: (number | null)[] }).rtts
        const got = rtts.filter((r): r is number => r !== null).sort((a, b) => a - b)
        const at = (q: number) => got[Math.min(got.length - 1, Math.floor(q * got.length))] ?? NaN
        const mean = got.reduce((s, r) => s + r, 0) / got.length
        // stdev of the middle 90 %: one probe the busy scheduler held up must not decide a test
        const mid = got.slice(Math.floor(got.length * 0.05), Math.ceil(got.length * 0.95))
        const midMean = mid.reduce((s, r) => s + r, 0) / mid.length
        const stdev = Math.sqrt(mid.reduce((s, r) => s + (r - midMean) ** 2, 0) / mid.length)
        resolve({ n: got.length, lost: rtts.length - got.length, min: got[0] ?? NaN, median: at(0.5), p10: at(0.1), p25: at(0.25), p75: at(0.75), p90: at(0.9), mean, stdev })
      } catch {
        reject(new Error(`rtt probe exited ${code}: ${err || out}`))
      }
    })
  })
}

const fmt = (s: RttStats) => `median ${s.median.toFixed(2)} ms, p10 ${s.p10.toFixed(2)}, p25 ${s.p25.toFixed(2)}, p75 ${s.p75.toFixed(2)}, p90 ${s.p90.toFixed(2)}, stdev (middle 90 %) ${s.stdev.toFixed(2)}, lost ${s.lost}/${s.n + s.lost}`

function inodeOf(path: string): number {
  return statSync(path).ino
}

/** Live (non-zombie) faultline-netdelay processes in the namespace (or the namespace with that inode). */
function helpersIn(ns: TestNs | number): { pid: number; argv: string[] }[] {
  const inode = typeof ns === 'number' ? ns : inodeOf(ns.path)
  const found: { pid: number; argv: string[] }[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      if (!stat.includes('(faultline-netde)')) continue
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue
      if (statSync(`/proc/${name}/ns/net`).ino !== inode) continue
      found.push({ pid: Number(name), argv: readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').filter(Boolean) })
    } catch {
      /* exited meanwhile */
    }
  }
  return found
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')
  } catch {
    return false
  }
}

/**
 * netnsPair, plus a teardown that kills any helper still running in either namespace (a test
 * that failed half-way), matched by namespace inode so it works after the names are deleted.
 */
function pair(t: Test) {
  const p = netnsPair(t)
  const inodes = [inodeOf(p.a.path), inodeOf(p.b.path)]
  t.teardown(() => {
    for (const inode of inodes) for (const h of helpersIn(inode)) process.kill(h.pid, 'SIGKILL')
  })
  return p
}

const delayFault = (extra: Record<string, unknown>) => ({ kind: 'network-delay', ...extra })

let sharedAgent: Promise<FastifyInstance> | undefined
/**
 * One in-process agent for the API tests (closed, recovering whatever is left, when the file
 * ends): every test works in namespaces of its own, and queue numbers are per namespace.
 */
function agent(): Promise<FastifyInstance> {
  return (sharedAgent ??= testAgent(t))
}

let helperProbe: ReturnType<typeof probeNetdelayHelper> | undefined

/** The real-kernel tests need the helper: without it they fail with the probe's reason (not skip). */
async function requireHelper(t: Test): Promise<void> {
  const helper = await (helperProbe ??= probeNetdelayHelper(spawnSync('sh', ['-c', 'command -v unshare']).stdout.toString().trim() || undefined))
  if (!helper.available) {
    t.fail(`helper:netdelay: ${helper.detail}`)
    throw new Error(`the NFQUEUE helper is unavailable: ${helper.detail}`)
  }
}

const allFeatures = (available: boolean): FeatureMap =>
  Object.fromEntries(featureNames.map((f) => [f, { available, detail: available ? 'ok' : `${f} missing` }])) as FeatureMap

const target = (inode = 4026532000): ResolvedTarget => ({ type: 'netns', name: 'web', path: '/var/run/netns/web', netnsInode: inode })
const ctrl = { agentNetnsInode: 1, tcpPorts: [22] }

// ---- pure: mechanism choice, parameters, netem plan ---------------------------------------------

t.test('mechanism choice: netem for egress where sch_netem exists, NFQUEUE otherwise', async (t) => {
  const all = allFeatures(true)
  t.equal(chooseMechanism({}, all), 'netem')
  t.equal(chooseMechanism({ direction: 'ingress' }, all), 'nfqueue', 'netem delays egress only')
  t.equal(chooseMechanism({ direction: 'both' }, all), 'nfqueue')
  t.equal(chooseMechanism({ mechanism: 'nfqueue' }, all), 'nfqueue', 'a spec can ask for NFQUEUE')
  const noNetem = { ...all, 'qdisc:netem': { available: false, detail: 'kernel refused qdisc netem: Unknown qdisc (kernel lacks sch_netem)' } }
  t.equal(chooseMechanism({}, noNetem), 'nfqueue')
  t.throws(() => chooseMechanism({ mechanism: 'netem' }, noNetem), { code: 'FAULTLINE_ERR_UNSUPPORTED', message: /mechanism netem is not usable here: .*sch_netem/ })
  const noPrio = { ...all, 'qdisc:prio': { available: false, detail: 'kernel lacks sch_prio' } }
  t.equal(chooseMechanism({}, noPrio), 'nfqueue', 'filtered netem needs prio; without it NFQUEUE serves')
  t.equal(chooseMechanism({ protectControlChannel: false }, noPrio), 'netem', 'unfiltered netem needs no prio')
  const neither = { ...noNetem, 'helper:netdelay': { available: false, detail: 'faultline-netdelay is not built: install libnetfilter-queue-dev, then run npm run build' } }
  t.throws(() => chooseMechanism({}, neither), { code: 'FAULTLINE_ERR_UNSUPPORTED', message: /needs tc netem \(.*sch_netem\)+ or NFQUEUE \(.*libnetfilter-queue-dev/ })
})

t.test('refusal: unavailableReason and the capability report when neither netem nor NFQUEUE works', async (t) => {
  const features = allFeatures(true)
  t.equal(networkDelay.unavailableReason!(features), undefined)
  features['qdisc:netem'] = { available: false, detail: 'kernel lacks sch_netem' }
  t.equal(networkDelay.unavailableReason!(features), undefined, 'NFQUEUE still works')
  features['iptables:nfqueue'] = { available: false, detail: 'iptables NFQUEUE target missing (kernel lacks xt_NFQUEUE)' }
  const reason = networkDelay.unavailableReason!(features)
  t.match(reason, /needs tc netem \(kernel lacks sch_netem\) or NFQUEUE with faultline-netdelay \(iptables NFQUEUE target missing/)
  const kind = kindAvailability(features)['network-delay']!
  t.equal(kind.available, false)
  t.equal(kind.reason, reason)
})

t.test('timing parameters are checked with the field named', async (t) => {
  t.same(delayParams({ latency: '100ms', jitter: '10ms', correlation: 25 }), { latencyMs: 100, jitterMs: 10, correlation: 25 })
  t.same(delayParams({ latency: '1s' }), { latencyMs: 1000, jitterMs: 0, correlation: 0 })
  t.throws(() => delayParams({ latency: '0ms' }), { code: 'FAULTLINE_ERR_VALIDATION', message: /latency 0ms is out of range/ })
  t.throws(() => delayParams({ latency: '2m' }), { code: 'FAULTLINE_ERR_VALIDATION' })
  t.throws(() => delayParams({ latency: '10ms', jitter: '20ms' }), { message: /jitter 20ms exceeds latency 10ms/ })
  t.throws(() => delayParams({ latency: '10ms', correlation: 50 }), { message: /correlation applies to jitter/ })
  t.throws(() => delayParams({ latency: '1s100ms5s' }), { code: 'FAULTLINE_ERR_VALIDATION', message: /^latency: / })
})

t.test('queue allocation: lowest free number from 1000', async (t) => {
  t.equal(allocateQueue([]), FIRST_QUEUE)
  t.equal(allocateQueue([1000, 1001, 1003]), 1002)
  t.equal(allocateQueue([0, 1, 999]), 1000, 'numbers below 1000 are not ours')
})

t.test('netem mechanism: the exact tc commands from plan() (no kernel needed)', async (t) => {
  const features = allFeatures(true)
  const peers = { v4: ['10.200.9.0/24'], v6: [], resolved: [] }
  const planFor = (spec: Record<string, unknown>, facts: { peers: typeof peers; protectedTcpPorts: number[] }, id = 'db-slow') =>
    networkDelay.plan({ kind: 'network-delay', latency: '100ms', ...spec } as never, target(), {
      paths: { procRoot: '/proc', netnsDir: '/var/run/netns', containerdTaskDir: '/run/containerd/io.containerd.runtime.v2.task' },
      features,
      control: ctrl,
      injectionId: id,
      facts: { mechanism: 'netem', netem: { tc: '/usr/sbin/tc', device: 'eth0', ...facts } } as never,
    })
  const inNs = (...argv: string[]) => [...enter('/var/run/netns/web'), '/usr/sbin/tc', ...argv]

  // whole device, control channel opted out: one netem root qdisc
  const bare = planFor({ jitter: '10ms', correlation: 25, protectControlChannel: false }, { peers: { v4: [], v6: [], resolved: [] }, protectedTcpPorts: [] })
  t.equal(bare.mechanism, 'netem')
  const h = (bare.tcApply![0]![bare.tcApply![0]!.indexOf('handle') + 1] ?? '').replace(':', '')
  t.match(h, /^[0-9a-f]{1,4}$/)
  t.same(bare.tcApply, [inNs('qdisc', 'add', 'dev', 'eth0', 'root', 'handle', `${h}:`, 'netem', 'delay', '100ms', '10ms', '25%')])
  t.same(bare.tcRecover, [inNs('qdisc', 'del', 'dev', 'eth0', 'root', 'handle', `${h}:`)])
  t.same(bare.claims, ['tc-root:4026532000:eth0'])

  // filtered (peer + port) with SSH protected: prio root, netem on band 4, u32 filters
  const p = planFor({ peers: ['10.200.9.0/24'], ports: [5432], protocol: 'tcp' }, { peers, protectedTcpPorts: [22] })
  const hh = (p.tcApply![0]![p.tcApply![0]!.indexOf('handle') + 1] ?? '').replace(':', '')
  const netemHandle = (parseInt(hh, 16) + 1).toString(16)
  t.same(p.tcApply, [
    inNs('qdisc', 'add', 'dev', 'eth0', 'root', 'handle', `${hh}:`, 'prio', 'bands', '4', 'priomap', '1', '2', '2', '2', '1', '2', '0', '0', '1', '1', '1', '1', '1', '1', '1', '1'),
    inNs('qdisc', 'add', 'dev', 'eth0', 'parent', `${hh}:4`, 'handle', `${netemHandle}:`, 'netem', 'delay', '100ms'),
    inNs('filter', 'add', 'dev', 'eth0', 'parent', `${hh}:`, 'protocol', 'ip', 'prio', '1', 'u32', 'match', 'ip', 'protocol', '6', '0xff', 'match', 'ip', 'sport', '22', '0xffff', 'flowid', `${hh}:1`),
    inNs('filter', 'add', 'dev', 'eth0', 'parent', `${hh}:`, 'protocol', 'ip', 'prio', '1', 'u32', 'match', 'ip', 'protocol', '6', '0xff', 'match', 'ip', 'dport', '22', '0xffff', 'flowid', `${hh}:1`),
    inNs('filter', 'add', 'dev', 'eth0', 'parent', `${hh}:`, 'protocol', 'ip', 'prio', '2', 'u32', 'match', 'ip', 'dst', '10.200.9.0/24', 'match', 'ip', 'protocol', '6', '0xff', 'match', 'ip', 'dport', '5432', '0xffff', 'flowid', `${hh}:4`),
  ])
  t.same(p.tcRecover, [inNs('qdisc', 'del', 'dev', 'eth0', 'root', 'handle', `${hh}:`)])
  t.match(p.steps[0], { phase: 'apply', action: 'exec', detail: /netem delay 100ms on eth0/ })
  t.same(networkDelay.undoFromPlan(p), { mechanism: 'netem', netns: { kind: 'path', path: '/var/run/netns/web', inode: 4026532000 }, tcRecover: p.tcRecover })
})

// ---- on this kernel ---------------------------------------------------------------------------------

t.test('this kernel: the report names the mechanism; a netem-only request is refused with the reason', kernel, async (t) => {
  const app = await agent()
  const { a } = pair(t)
  const caps = (await app.inject({ url: '/v1/capabilities' })).json<{ features: FeatureMap; kinds: Record<string, { available: boolean; reason?: string }> }>()
  t.equal(caps.kinds['network-delay']?.available, caps.features['qdisc:netem']!.available || caps.features['helper:netdelay']!.available)
  const post = (fault: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: delayFault(fault), target: { type: 'netns', name: a.name }, duration: '60s', dryRun: true } })
  if (!caps.features['qdisc:netem']!.available) {
    const res = await post({ latency: '100ms', mechanism: 'netem' })
    t.equal(res.statusCode, 422)
    t.match(res.json(), { code: 'FAULTLINE_ERR_UNSUPPORTED', message: /mechanism netem is not usable here: .*sch_netem.*; use mechanism nfqueue/ })
  }
  const bad = await post({ latency: '100ms', correlation: 30 })
  t.equal(bad.statusCode, 400)
  t.match(bad.json(), { code: 'FAULTLINE_ERR_VALIDATION', message: /correlation applies to jitter/ })
  const icmpPorts = await post({ latency: '100ms', protocol: 'icmp', ports: [80], mechanism: 'nfqueue' })
  t.equal(icmpPorts.statusCode, 400)
  const noDev = await post({ latency: '100ms', device: 'nosuchdev0', mechanism: 'nfqueue' })
  t.equal(noDev.statusCode, 422, 'a device that does not exist is refused, not silently matched by nothing')
})

t.test('dry run: the NFQUEUE plan shows the helper argv and the exact iptables-restore input; nothing changes', kernel, async (t) => {
  await requireHelper(t)
  const app = await agent()
  const { a, b } = pair(t)
  const before = netSnapshot(a)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: {
      fault: delayFault({ latency: '100ms', jitter: '10ms', correlation: 25, peers: [b.ip], ports: [9000, 9001], protocol: 'udp', device: a.dev, mechanism: 'nfqueue' }),
      target: { type: 'netns', name: a.name },
      duration: '60s',
      id: 'db.slow-1',
      dryRun: true,
    },
  })
  t.equal(res.statusCode, 200, res.statusCode === 200 ? 'HTTP 200' : res.body)
  const plan = res.json<Injection>().plan as unknown as {
    mechanism: string
    queue: number
    helperArgv: string[]
    rules: { family: string; backend: string; script: string; chains: { name: string }[] }[]
    claims: string[]
    steps: { phase: string; argv?: string[] }[]
  }
  t.equal(plan.mechanism, 'nfqueue')
  t.equal(plan.queue, 1000)
  t.same(plan.claims, [`nfqueue:${inodeOf(a.path)}:1000`])
  t.same(plan.helperArgv, [...enter(a.path), netdelayHelperPath(), '1000', '100000', '10000', '25', '<deadline: expiresAt in seconds since the epoch>'])
  t.equal(plan.rules.length, 1, 'IPv4 peers only: no ip6tables rules')
  const r = plan.rules[0]!
  t.match(r, { family: 'ipv4', backend: 'legacy' })
  const chain = r.chains[0]!.name
  t.match(chain, /^FL-[0-9a-f]{10}-out$/)
  t.equal(
    r.script,
    [
      '*mangle',
      `:${chain} - [0:0]`,
      `-A ${chain} -p tcp -m tcp --sport 22 -j RETURN`,
      `-A ${chain} -p tcp -m tcp --dport 22 -j RETURN`,
      `-A ${chain} -o ${a.dev} -d ${b.ip}/32 -p udp -m multiport --dports 9000,9001 -j NFQUEUE --queue-num 1000 --queue-bypass`,
      `-A OUTPUT -m comment --comment "faultline network-delay db.slow-1" -j ${chain}`,
      'COMMIT',
      '',
    ].join('\n'),
  )
  t.match(plan.steps.find((s) => s.argv?.some((x) => x.endsWith('-restore')))?.argv, [...enter(a.path), /iptables-legacy-restore$/, '-w', '--noflush'])
  t.same(netSnapshot(a), before)
  t.same(helpersIn(a), [], 'no helper started')

  const ingress = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: {
      fault: delayFault({ latency: '20ms', direction: 'ingress', peers: [b.ip], localPorts: [5432], protocol: 'tcp' }),
      target: { type: 'netns', name: a.name },
      duration: '60s',
      id: 'db.slow-2',
      dryRun: true,
    },
  })
  const ip = ingress.json<Injection>().plan as unknown as typeof plan
  t.equal(ip.mechanism, 'nfqueue', 'ingress always goes through NFQUEUE (netem shapes egress only)')
  const inChain = ip.rules[0]!.chains[0]!.name
  t.match(inChain, /^FL-[0-9a-f]{10}-in$/)
  t.equal(
    ip.rules[0]!.script,
    [
      '*mangle',
      `:${inChain} - [0:0]`,
      `-A ${inChain} -p tcp -m tcp --sport 22 -j RETURN`,
      `-A ${inChain} -p tcp -m tcp --dport 22 -j RETURN`,
      `-A ${inChain} -s ${b.ip}/32 -p tcp -m multiport --dports 5432 -j NFQUEUE --queue-num 1000 --queue-bypass`,
      `-A INPUT -m comment --comment "faultline network-delay db.slow-2" -j ${inChain}`,
      'COMMIT',
      '',
    ].join('\n'),
  )
})

t.test('delay 100 ms through NFQUEUE: RTT +100 ± 10 ms while active, back to normal after; nothing left behind', kernel, async (t) => {
  await requireHelper(t)
  const app = await agent()
  const { a, b } = pair(t)
  await background(t, b, 'udp-echo', 9000)
  const before = netSnapshot(a)
  const baseline = await measureRtt(a, b.ip)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: delayFault({ latency: '100ms', peers: [b.ip] }), target: { type: 'netns', name: a.name }, duration: '60s' },
  })
  t.equal(res.statusCode, 201, res.statusCode === 201 ? 'HTTP 201' : res.body)
  const inj = res.json<Injection>()
  t.match(inj.plan, { mechanism: 'nfqueue', queue: 1000 })
  t.equal(helpersIn(a).length, 1, 'one helper in the namespace')
  const delayed = await measureRtt(a, b.ip)
  const added = delayed.median - baseline.median
  t.comment(`requested 100 ms: baseline ${fmt(baseline)}; delayed ${fmt(delayed)}; added ${added.toFixed(2)} ms`)
  t.ok(delayed.n >= 50 && delayed.lost === 0, 'every probe came back')
  t.ok(Math.abs(added - 100) <= 10, `RTT increase ${added.toFixed(2)} ms is within 100 ± 10 ms`)
  t.ok(delayed.p10 - baseline.median >= 90, 'every packet is delayed, not just the median')

  const rec = await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })
  t.equal(rec.json<Injection>().status, 'recovered')
  const after = await measureRtt(a, b.ip)
  t.comment(`after recovery: ${fmt(after)}`)
  t.ok(after.median < baseline.median + 20, 'RTT is back to normal')
  t.same(helpersIn(a), [], 'the helper is gone')
  t.same(netSnapshot(a), before, 'nft ruleset, iptables (both backends), qdiscs, filters and links as before')
  t.equal(inNs(a, ['ip6tables-legacy-save']).includes('FL-'), false, 'no ip6tables chains either')
})

t.test('jitter widens the spread: 100 ms ± 20 ms vs 100 ms', kernel, async (t) => {
  await requireHelper(t)
  const app = await agent()
  const { a, b } = pair(t)
  await background(t, b, 'udp-echo', 9000)
  const baseline = await measureRtt(a, b.ip)
  const measureWith = async (fault: Record<string, unknown>) => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/injections',
      payload: { fault: delayFault({ peers: [b.ip], ...fault }), target: { type: 'netns', name: a.name }, duration: '60s' },
    })
    t.equal(res.statusCode, 201, `${JSON.stringify(fault)} is active`)
    const stats = await measureRtt(a, b.ip, 9000, 100, 8)
    await app.inject({ method: 'DELETE', url: `/v1/injections/${res.json<Injection>().id}` })
    return stats
  }
  const steady = await measureWith({ latency: '100ms' })
  const jittery = await measureWith({ latency: '100ms', jitter: '20ms' })
  t.comment(`baseline ${fmt(baseline)}`)
  t.comment(`100ms: ${fmt(steady)}`)
  t.comment(`100ms ± 20ms: ${fmt(jittery)}`)
  t.ok(jittery.p90 - jittery.p10 > 20, `p90 - p10 = ${(jittery.p90 - jittery.p10).toFixed(2)} ms with jitter (uniform ± 20 ms: ~32 ms expected)`)
  const iqr = (s: RttStats) => s.p75 - s.p25
  t.ok(iqr(jittery) > 12 && iqr(jittery) > 3 * iqr(steady), `interquartile range ${iqr(jittery).toFixed(2)} ms with jitter (uniform ± 20 ms: 20 ms expected) vs ${iqr(steady).toFixed(2)} ms without`)
  t.ok(jittery.stdev > 8, `stdev (middle 90 %) ${jittery.stdev.toFixed(2)} ms with jitter (uniform ± 20 ms: 10.4 ms expected) vs ${steady.stdev.toFixed(2)} ms without`)
  t.ok(Math.abs(jittery.median - baseline.median - 100) <= 10, `the median stays ~100 ms added (${(jittery.median - baseline.median).toFixed(2)} ms)`)
  // A busy host can only add to an RTT, so the lower bound is exact: nothing is released early.
  t.ok(jittery.min - baseline.min >= 79, `no packet earlier than latency - jitter (fastest +${(jittery.min - baseline.min).toFixed(2)} ms)`)
  t.ok(jittery.p10 - baseline.median < 95 && jittery.p90 - baseline.median > 105, 'spread on both sides of the latency')
})

t.test('killing the helper (SIGKILL) does not black-hole traffic; recovery still succeeds', kernel, async (t) => {
  await requireHelper(t)
  const app = await agent()
  const { a, b } = pair(t)
  await background(t, b, 'udp-echo', 9000)
  const before = netSnapshot(a)
  const baseline = await measureRtt(a, b.ip, 9000, 30)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: delayFault({ latency: '100ms' }), target: { type: 'netns', name: a.name }, duration: '60s' },
  })
  t.equal(res.statusCode, 201, res.statusCode === 201 ? 'HTTP 201' : res.body)
  const [helper] = helpersIn(a)
  t.ok(helper, 'the helper runs')
  process.kill(helper!.pid, 'SIGKILL')
  await waitFor('the helper to die', () => !alive(helper!.pid), 2_000)
  const during = await measureRtt(a, b.ip, 9000, 30)
  t.comment(`helper killed, rules still in place: ${fmt(during)}`)
  t.equal(during.lost, 0, 'every probe came back (--queue-bypass)')
  t.ok(during.median < baseline.median + 20, 'undelayed')
  t.match(inNs(a, ['iptables-legacy', '-t', 'mangle', '-S']), /NFQUEUE --queue-num 1000 --queue-bypass/, 'the rules were still there')
  const rec = await app.inject({ method: 'DELETE', url: `/v1/injections/${res.json<Injection>().id}` })
  t.equal(rec.statusCode, 200)
  const recovered = rec.json<Injection>()
  t.equal(recovered.status, 'recovered')
  t.notOk(recovered.error, 'no error')
  t.match(recovered.notes.join('\n'), /faultline-netdelay \(pid \d+\) had already exited/)
  t.same(netSnapshot(a), before)
})

t.test('two delays on one namespace to different peers both hold; recovering one leaves the other', kernel, async (t) => {
  await requireHelper(t)
  const app = await agent()
  const { a, b } = pair(t)
  const b2 = `${b.ip.split('.').slice(0, 3).join('.')}.3`
  inNs(b, ['ip', 'addr', 'add', `${b2}/24`, 'dev', b.dev])
  await background(t, b, 'udp-echo', 9000)
  const before = netSnapshot(a)
  const base1 = await measureRtt(a, b.ip, 9000, 50)
  const base2 = await measureRtt(a, b2, 9000, 50)
  const post = (fault: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: delayFault(fault), target: { type: 'netns', name: a.name }, duration: '60s' } })
  const first = await post({ latency: '100ms', peers: [b.ip] })
  const second = await post({ latency: '50ms', peers: [b2] })
  t.equal(first.statusCode, 201, first.statusCode === 201 ? 'HTTP 201' : first.body)
  t.equal(second.statusCode, 201, second.statusCode === 201 ? 'HTTP 201' : second.body)
  t.match(first.json<Injection>().plan, { queue: 1000 })
  t.match(second.json<Injection>().plan, { queue: 1001 }, 'the second gets the next free queue')
  t.equal(helpersIn(a).length, 2)
  const d1 = await measureRtt(a, b.ip, 9000, 50)
  const d2 = await measureRtt(a, b2, 9000, 50)
  t.comment(`to ${b.ip}: +${(d1.median - base1.median).toFixed(2)} ms (100 asked); to ${b2}: +${(d2.median - base2.median).toFixed(2)} ms (50 asked)`)
  t.ok(Math.abs(d1.median - base1.median - 100) <= 10)
  t.ok(Math.abs(d2.median - base2.median - 50) <= 10)

  await app.inject({ method: 'DELETE', url: `/v1/injections/${first.json<Injection>().id}` })
  const r1 = await measureRtt(a, b.ip, 9000, 50)
  const r2 = await measureRtt(a, b2, 9000, 50)
  t.comment(`after recovering the first: to ${b.ip} ${r1.median.toFixed(2)} ms; to ${b2} ${r2.median.toFixed(2)} ms`)
  t.ok(r1.median < base1.median + 20, 'the first delay is gone')
  t.ok(Math.abs(r2.median - base2.median - 50) <= 10, 'the second still holds')
  t.equal(helpersIn(a).length, 1)
  t.match(helpersIn(a)[0]!.argv, [/faultline-netdelay$/, '1001'])

  await app.inject({ method: 'DELETE', url: `/v1/injections/${second.json<Injection>().id}` })
  t.same(netSnapshot(a), before)
  t.same(helpersIn(a), [])
})

t.test('a queue someone else bound is skipped; racing requests never share a queue', kernel, async (t) => {
  await requireHelper(t)
  const app = await agent()
  const { a } = pair(t)
  // someone else's program on queue 1000 in this namespace
  const other = spawn('nsenter', [`--net=${a.path}`, '--', netdelayHelperPath(), '1000', '1000', '0', '0', String(Math.floor(Date.now() / 1000) + 60)], { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => other.kill('SIGKILL'))
  await new Promise<void>((resolve) => other.stdout.on('data', (c: Buffer) => c.toString().includes('ready') && resolve()))
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: delayFault({ latency: '10ms', mechanism: 'nfqueue' }), target: { type: 'netns', name: a.name }, duration: '60s', dryRun: true },
  })
  t.match(res.json<Injection>().plan, { queue: 1001 }, '1000 is bound by another program')

  // Two requests racing for the same namespace may pick the same queue in gather; the claim
  // nfqueue:<inode>:<queue> then refuses the later one. Either way no queue is ever shared.
  const post = () =>
    app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: delayFault({ latency: '10ms', mechanism: 'nfqueue' }), target: { type: 'netns', name: a.name }, duration: '60s' } })
  const [r1, r2] = await Promise.all([post(), post()])
  const created = [r1, r2].filter((r) => r.statusCode === 201).map((r) => r.json<Injection>())
  for (const r of [r1, r2].filter((r) => r.statusCode !== 201)) {
    t.equal(r.statusCode, 409, 'the loser of the race is refused with 409')
    t.match(r.json(), { code: 'FAULTLINE_ERR_TARGET_BUSY', message: /nfqueue:\d+:1001 is already held by injection/ })
  }
  const queues = created.map((i) => (i.plan as unknown as { queue: number }).queue)
  t.equal(new Set(queues).size, queues.length, `queues ${queues.join(', ')} are distinct`)
  t.equal(helpersIn(a).length, created.length + 1, 'one helper per active injection (plus the other program)')
  for (const i of created) await app.inject({ method: 'DELETE', url: `/v1/injections/${i.id}` })
})

t.test('the helper ends the delay by itself at its deadline (agent gone)', kernel, async (t) => {
  await requireHelper(t)
  const { a, b } = pair(t)
  await background(t, b, 'udp-echo', 9000)
  inNs(a, ['iptables-legacy', '-w', '-t', 'mangle', '-A', 'OUTPUT', '-d', b.ip, '-j', 'NFQUEUE', '--queue-num', '1500', '--queue-bypass'])
  const deadline = Math.floor(Date.now() / 1000) + 3
  const helper = spawn('nsenter', [`--net=${a.path}`, '--', netdelayHelperPath(), '1500', '80000', '0', '0', String(deadline)], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => helper.kill('SIGKILL'))
  const exited = new Promise<number | null>((resolve) => helper.on('exit', (code) => resolve(code)))
  await new Promise<void>((resolve) => helper.stdout.on('data', (c: Buffer) => c.toString().includes('ready') && resolve()))
  const during = await measureRtt(a, b.ip, 9000, 20)
  t.ok(during.median > 75, `delayed before the deadline (${during.median.toFixed(2)} ms)`)
  t.equal(await exited, 0, 'exits 0 at the deadline')
  t.ok(Date.now() / 1000 >= deadline, 'not before it')
  const after = await measureRtt(a, b.ip, 9000, 20)
  t.ok(after.median < 30 && after.lost === 0, `undelayed after (${after.median.toFixed(2)} ms), rule still in place (bypass)`)
  const late = spawnSync('nsenter', [`--net=${a.path}`, '--', netdelayHelperPath(), '1500', '1000', '0', '0', String(deadline - 10)], { encoding: 'utf8' })
  t.equal(late.status, 1)
  t.match(late.stderr, /deadline .* has already passed/)
  const usage = spawnSync(netdelayHelperPath(), ['1500', '-5', '0', '0', '1'], { encoding: 'utf8' })
  t.equal(usage.status, 2)
})

t.test('iptables-nft fallback: the table it creates is deleted again; a table that was there stays', kernel, async (t) => {
  await requireHelper(t)
  const { a, b } = pair(t)
  await background(t, b, 'udp-echo', 9000)
  const log = pino({ level: 'silent' })
  const paths = { procRoot: '/proc', netnsDir: '/var/run/netns', containerdTaskDir: '/run/containerd/io.containerd.runtime.v2.task' }
  const resolved: ResolvedTarget = { type: 'netns', name: a.name, path: a.path, netnsInode: inodeOf(a.path) }
  const features = allFeatures(true)
  const spec = { kind: 'network-delay' as const, latency: '60ms', peers: [b.ip], mechanism: 'nfqueue' as const }
  const which = (name: string) => spawnSync('sh', ['-c', `command -v ${name}`]).stdout.toString().trim()

  const run = async (id: string) => {
    const facts = (await networkDelay.gather!(spec, resolved, { paths, features, control: ctrl, openPlans: () => [] })) as {
      nfqueue: { iptables: unknown }
    }
    facts.nfqueue.iptables = {
      backend: 'nft',
      nft: which('nft'),
      families: [{ family: 'ipv4', backend: 'nft', iptables: which('iptables-nft'), restore: which('iptables-nft-restore') }],
    }
    const plan = networkDelay.plan(spec, resolved, { paths, features, control: ctrl, injectionId: id, facts: facts as never })
    let checkpointed: unknown
    const state = await networkDelay.apply(plan, { log, paths, expiresAt: Date.now() + 600_000, checkpoint: (s) => (checkpointed = s) })
    t.same(checkpointed, state, 'the last checkpoint is the returned state')
    return state
  }

  const before = netSnapshot(a)
  t.equal(inNs(a, ['nft', 'list', 'ruleset']), '', 'no nft tables to start with')
  const state = await run('nft-1')
  t.match(state, { rules: [{ backend: 'nft', nftTableOwned: true }] })
  t.match(inNs(a, ['nft', 'list', 'ruleset']), /table ip mangle[\s\S]*queue (flags bypass )?(num|to) 1000/)
  const rtt = await measureRtt(a, b.ip, 9000, 30)
  t.ok(rtt.median > 55, `delayed through iptables-nft (${rtt.median.toFixed(2)} ms)`)
  await networkDelay.recover(state, { log, paths })
  t.equal(inNs(a, ['nft', 'list', 'ruleset']), '', 'table ip mangle is deleted again')
  t.same(netSnapshot(a), before)
  await networkDelay.recover(state, { log, paths })
  t.pass('recovery is idempotent')

  // someone's own mangle rule: the table is theirs and stays, with their rule
  inNs(a, ['iptables-nft', '-w', '-t', 'mangle', '-A', 'OUTPUT', '-p', 'tcp', '--dport', '5555', '-j', 'MARK', '--set-mark', '7'])
  const theirs = inNs(a, ['nft', 'list', 'ruleset'])
  const state2 = await run('nft-2')
  t.match(state2, { rules: [{ backend: 'nft', nftTableOwned: false }] })
  await networkDelay.recover(state2, { log, paths })
  t.equal(inNs(a, ['nft', 'list', 'ruleset']), theirs, 'their table and rule are untouched')
  t.same(helpersIn(a), [])
})

// ---- crash safety --------------------------------------------------------------------------------

t.test('kill -9 of the agent with an active delay: the restart stops the helper and removes the rules', kernel, async (t) => {
  await requireHelper(t)
  const stateDir = tmpDir(t)
  const { a, b } = pair(t)
  await background(t, b, 'udp-echo', 9000)
  const before = netSnapshot(a)
  const baseline = await measureRtt(a, b.ip, 9000, 30)
  const first = await startAgentProcess(t, stateDir)
  const body = { fault: delayFault({ latency: '100ms', peers: [b.ip] }), target: { type: 'netns', name: a.name }, duration: '60s', id: 'crash-delay' }
  const created = await http<Injection>(`${first.url}/v1/injections`, { method: 'POST', body })
  t.equal(created.status, 201, JSON.stringify(created.body))
  first.child.kill('SIGKILL')
  t.equal((await first.exited).signal, 'SIGKILL')
  const [helper] = helpersIn(a)
  t.ok(helper, 'the helper outlived the agent')
  const meanwhile = await measureRtt(a, b.ip, 9000, 30)
  t.ok(meanwhile.median - baseline.median > 90, `the delay holds while the agent is dead (${meanwhile.median.toFixed(2)} ms)`)

  const second = await startAgentProcess(t, stateDir)
  const inj = await http<Injection>(`${second.url}/v1/injections/${body.id}`)
  t.equal(inj.body.status, 'recovered')
  t.match(inj.body.notes.join('\n'), /recovered at agent start: the previous agent stopped while this injection was active/)
  await waitFor('the helper to exit', () => !alive(helper!.pid), 5_000)
  t.same(helpersIn(a), [], 'the helper is gone (pid + start time)')
  const after = await measureRtt(a, b.ip, 9000, 30)
  t.ok(after.median < baseline.median + 20, `RTT normal after the restart (${after.median.toFixed(2)} ms)`)
  t.same(netSnapshot(a), before, 'rules gone: iptables (both backends), nft, qdiscs, links as before')
})

t.test('recovery from each checkpoint apply writes (the agent dying between any two steps)', kernel, async (t) => {
  await requireHelper(t)
  const { a, b } = pair(t)
  const log = pino({ level: 'silent' })
  const paths = { procRoot: '/proc', netnsDir: '/var/run/netns', containerdTaskDir: '/run/containerd/io.containerd.runtime.v2.task' }
  const resolved: ResolvedTarget = { type: 'netns', name: a.name, path: a.path, netnsInode: inodeOf(a.path) }
  const features = allFeatures(true)
  const spec = { kind: 'network-delay' as const, latency: '100ms', peers: [b.ip], mechanism: 'nfqueue' as const }
  const before = netSnapshot(a)
  const applyRecording = async (id: string) => {
    const facts = await networkDelay.gather!(spec, resolved, { paths, features, control: ctrl, openPlans: () => [] })
    const plan = networkDelay.plan(spec, resolved, { paths, features, control: ctrl, injectionId: id, facts })
    const checkpoints: Static<typeof networkDelay.stateSchema>[] = []
    const state = await networkDelay.apply(plan, { log, paths, expiresAt: Date.now() + 600_000, checkpoint: (s) => checkpoints.push(structuredClone(s) as never) })
    return { plan, state, checkpoints }
  }

  // 1. nothing applied yet: the state the injector journals before apply
  const { plan, checkpoints } = await applyRecording('cp-1')
  t.equal(checkpoints.length, 2, 'two checkpoints: before the helper starts, and once it is ready')
  t.notOk(checkpoints[0]!.helper, 'the first has queue and chains but no helper')
  t.match(checkpoints[1]!.helper, { pid: Number, startTime: Number })
  t.same(networkDelay.undoFromPlan(plan), checkpoints[0], 'undoFromPlan gives the same undo state as the first checkpoint')

  // 2. died after the helper started but before its pid was recorded: found by queue + netns
  const out = await networkDelay.recover(checkpoints[0]!, { log, paths })
  t.match(out.note, /stopped faultline-netdelay pid \d+ that the agent had started but not recorded/)
  t.same(helpersIn(a), [])
  t.same(netSnapshot(a), before, 'and the rules went too')
  t.same(await networkDelay.recover(checkpoints[1]!, { log, paths }), { note: `faultline-netdelay (pid ${checkpoints[1]!.helper!.pid}) had already exited` }, 'a second recovery finds nothing left')

  // 3. the namespace's name deleted while the delay is active: the helper still goes
  const again = await applyRecording('cp-2')
  const [helper] = helpersIn(a)
  spawnSync('ip', ['netns', 'del', a.name])
  const gone = await networkDelay.recover(again.state, { log, paths })
  t.match(gone.note, /is gone; no rules to remove/)
  t.notOk(alive(helper!.pid), 'the helper was stopped although its namespace has no name any more')
})
