// The capability probe against the real kernel: every verdict is checked against an
// independent direct attempt, so the probe can never report a feature that does not work.
import { execFileSync, spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { defaultRuntimeSockets, kindAvailability, probeCapabilities, probeCgroups } from '../../../agent/capabilities/probe.js'
import { featureNames, type FeatureMap } from '../../../protocol/capabilities.js'

const fixture = (name: string) => fileURLToPath(new URL(`../../fixtures/${name}`, import.meta.url))

/** Runs argv in a throwaway network namespace; true when it exits 0. */
function worksInFreshNetns(argv: string[], input?: string): boolean {
  const res = spawnSync('unshare', ['--net', '--', ...argv], { input: input ?? '', stdio: ['pipe', 'ignore', 'ignore'] })
  return res.status === 0
}

t.test('probe verdicts match direct attempts on this kernel', { skip: process.getuid?.() !== 0 ? 'needs root for unshare --net' : false }, async (t) => {
  const caps = await probeCapabilities({ procRoot: '/proc', runtimeSockets: defaultRuntimeSockets })
  t.same(Object.keys(caps.features).sort(), [...featureNames].sort(), 'every feature is reported')
  const checks: [keyof FeatureMap, string[], string?][] = [
    ['qdisc:netem', ['tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '10ms']],
    ['qdisc:tbf', ['tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'tbf', 'rate', '1mbit', 'burst', '32kb', 'latency', '50ms']],
    ['qdisc:htb', ['tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'htb']],
    ['qdisc:fq_codel', ['tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'fq_codel']],
    ['link:ifb', ['ip', 'link', 'add', 'x', 'type', 'ifb']],
    ['nft:numgen', ['nft', '-f', '-'], 'add table ip t\nadd chain ip t c { type filter hook input priority 0; }\nadd rule ip t c numgen random mod 10 < 3 drop\n'],
    ['nft:queue', ['nft', '-f', '-'], 'add table ip t\nadd chain ip t c { type filter hook input priority 0; }\nadd rule ip t c queue num 3\n'],
    ['iptables:nfqueue', ['iptables', '-A', 'INPUT', '-j', 'NFQUEUE', '--queue-num', '3']],
  ]
  for (const [feature, argv, input] of checks) {
    const direct = worksInFreshNetns(argv, input)
    t.equal(caps.features[feature]!.available, direct, `${feature}: probe says ${caps.features[feature]!.available}, direct attempt says ${direct}`)
    if (!direct) t.ok(caps.features[feature]!.detail.length > 10, `${feature}: unavailable with a reason: ${caps.features[feature]!.detail}`)
  }
  if (!caps.features['qdisc:netem']!.available) t.match(caps.features['qdisc:netem']!.detail, /sch_netem/, 'the reason names the missing kernel module')
  t.equal(caps.features.pidfd!.available, true, 'pidfd works on kernels >= 5.3')
  const [major, minor] = execFileSync('uname', ['-r']).toString().split('.').map(Number)
  t.equal(caps.features.openat2!.available, major! > 5 || (major === 5 && minor! >= 6), `openat2 is there from Linux 5.6: ${caps.features.openat2!.detail}`)
  for (const kind of ['disk-fill', 'file-delete', 'file-corrupt']) {
    t.equal(caps.kinds[kind]?.available, caps.features.openat2!.available, `${kind} is offered exactly when openat2 works`)
  }
  t.equal(caps.host.agentPid, process.pid)
  t.ok(caps.host.kernel.length > 0 && caps.host.cpuCores > 0 && caps.host.memTotalBytes > 0, 'host facts from systeminformation')
  t.equal(execFileSync('uname', ['-r']).toString().trim(), caps.host.kernel)
})

t.test('cgroup layouts: hybrid (this host), v2 only, none', async (t) => {
  const here = probeCgroups('/proc')
  t.equal(here['cgroup:v1']?.available || here['cgroup:v2']?.available, true)
  const v2 = probeCgroups(fixture('cgroup-v2only'))
  t.equal(v2['cgroup:v1']?.available, false)
  t.match(v2['cgroup:v2']?.detail, /cgroup2 at \/sys\/fs\/cgroup/)
  const none = probeCgroups(fixture('cgroup-none'))
  t.equal(none['cgroup:v1']?.available, false)
  t.equal(none['cgroup:v2']?.available, false)
  t.equal(none['cgroup:freezer']?.available, false)
})

t.test('a kind is unavailable with the reason of its missing feature', async (t) => {
  const features = Object.fromEntries(featureNames.map((f) => [f, { available: true, detail: 'ok' }])) as FeatureMap
  t.equal(kindAvailability(features)['process-stop']?.available, true)
  features.signals = { available: false, detail: 'signals are blocked by seccomp' }
  const kinds = kindAvailability(features)
  t.equal(kinds['process-stop']?.available, false)
  t.equal(kinds['process-stop']?.reason, 'signals are blocked by seccomp')
})
