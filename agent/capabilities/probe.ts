import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { createRequire } from 'node:module'
import { hostname as osHostname } from 'node:os'
import type { Capabilities, Feature, FeatureMap, FeatureName, HostFacts } from '../../protocol/capabilities.js'
import { faultKinds } from '../faults/registry.js'
import { probeNetdelayHelper } from '../faults/network-delay/helper.js'
import { probeTimeskewHelper } from '../faults/time-skew/helper.js'
import { probeStressHelper } from '../faults/shared/stress.js'
import { probeIofaultHelper } from '../faults/shared/iofault.js'
import { findProgram, run } from '../exec.js'
import { pidfdSupported } from '../native/libc.js'
import { openat2Supported } from '../native/files.js'
import { readCgroupMounts } from '../targets/cgroupfs.js'
import { FAULTLINE_VERSION } from '../../common/version.js'
import { devPath, type RuntimeName } from '../host-paths.js'
import type { HostPolicyCheck } from '../policy.js'

/**
 * Finds out what this host can really do. Kernel features are tried, not guessed: qdiscs, tc
 * actions, link types, nft expressions and iptables matches are exercised inside a throwaway
 * network namespace (`unshare --net`), which vanishes with the probe process, so the host's own
 * network is never touched.
 */
export interface ProbeOptions {
  procRoot: string
  /** The host policy in force: its kinds rule makes kinds unavailable, and the report shows it. */
  policy?: Pick<HostPolicyCheck, 'inForce' | 'refusesKind'>
  /** The host's /dev (default /dev). */
  devDir?: string
  runtimeSockets: Record<RuntimeName, readonly string[]>
  /** The durations this agent accepts (its --max-duration), reported so a server can check experiments at apply. */
  limits?: Capabilities['limits']
}

export { defaultRuntimeSockets } from '../host-paths.js'

const yes = (detail: string): Feature => ({ available: true, detail })
const no = (detail: string): Feature => ({ available: false, detail })

/** tc commands run as one `tc -force -batch -`; each probe is an add (checked) and a cleanup. */
const tcProbes = [
  { feature: 'qdisc:netem', add: 'qdisc add dev lo root handle 1: netem delay 1ms', cleanup: 'qdisc del dev lo root' },
  { feature: 'qdisc:tbf', add: 'qdisc add dev lo root handle 1: tbf rate 1mbit burst 32kb latency 50ms', cleanup: 'qdisc del dev lo root' },
  { feature: 'qdisc:htb', add: 'qdisc add dev lo root handle 1: htb default 1', cleanup: 'qdisc del dev lo root' },
  { feature: 'qdisc:prio', add: 'qdisc add dev lo root handle 1: prio', cleanup: 'qdisc del dev lo root' },
  { feature: 'qdisc:fq', add: 'qdisc add dev lo root handle 1: fq', cleanup: 'qdisc del dev lo root' },
  { feature: 'qdisc:fq_codel', add: 'qdisc add dev lo root handle 1: fq_codel', cleanup: 'qdisc del dev lo root' },
  { feature: 'qdisc:ingress', add: 'qdisc add dev lo handle ffff: ingress' },
  { feature: 'tc-filter:u32', add: 'filter add dev lo parent ffff: prio 1 protocol all u32 match u32 0 0' },
  { feature: 'tc-action:mirred', add: 'filter add dev lo parent ffff: prio 2 protocol all u32 match u32 0 0 action mirred egress redirect dev lo' },
  { feature: 'tc-action:gact', add: 'filter add dev lo parent ffff: prio 3 protocol all u32 match u32 0 0 action gact drop' },
  { feature: 'tc-action:police', add: 'filter add dev lo parent ffff: prio 4 protocol all u32 match u32 0 0 action police rate 1mbit burst 10k drop' },
] as const satisfies readonly { feature: FeatureName; add: string; cleanup?: string }[]
type TcFeature = (typeof tcProbes)[number]['feature']

async function probeTc(unshare: string | undefined, tc: string | undefined): Promise<Record<TcFeature, Feature>> {
  const out = {} as Record<TcFeature, Feature>
  if (!tc || !unshare) {
    const why = !tc ? 'tc (iproute2) is not installed' : 'unshare (util-linux) is not installed, so kernel qdiscs cannot be probed safely'
    for (const p of tcProbes) out[p.feature] = no(why)
    return out
  }
  const lines: string[] = []
  const lineOf = new Map<FeatureName, number>()
  for (const p of tcProbes) {
    lines.push(p.add)
    lineOf.set(p.feature, lines.length)
    if ('cleanup' in p) lines.push(p.cleanup)
  }
  const res = await run([unshare, '--net', '--', tc, '-force', '-batch', '-'], { input: lines.join('\n') + '\n' })
  // tc prints the kernel's message, then "Command failed -:<line>", for each failing line.
  const failed = new Map<number, string>()
  const errLines = res.stderr.split('\n')
  errLines.forEach((l, i) => {
    const m = /^Command failed -:(\d+)/.exec(l)
    if (m) failed.set(Number(m[1]), (errLines[i - 1] ?? '').replace(/^Error:\s*/, '').trim())
  })
  for (const p of tcProbes) {
    const line = lineOf.get(p.feature)!
    const what = p.feature.split(':')[1]
    const err = failed.get(line)
    out[p.feature] = err === undefined ? yes(`tc accepted "${p.add}" in a throwaway netns`) : no(`kernel refused ${p.feature.startsWith('qdisc') ? 'qdisc' : p.feature.startsWith('tc-filter') ? 'classifier' : 'action'} ${what}: ${err || 'unknown error'} (kernel lacks ${kernelOption(p.feature)})`)
  }
  return out
}

function kernelOption(feature: FeatureName): string {
  const [kind, name] = feature.split(':') as [string, string]
  if (kind === 'qdisc') return `sch_${name}`
  if (kind === 'tc-filter') return `cls_${name}`
  return `act_${name}`
}

async function probeCommand(
  unshare: string | undefined,
  argv: string[] | undefined,
  missing: string,
  success: string,
  input?: string,
): Promise<Feature> {
  if (!argv) return no(missing)
  if (!unshare) return no('unshare (util-linux) is not installed, so this cannot be probed safely')
  const res = await run([unshare, '--net', '--', ...argv], input === undefined ? {} : { input })
  if (res.code === 0) return yes(success)
  const lines = res.stderr.trim().split('\n')
  const err = (lines.find((l) => l.startsWith('Error:')) ?? lines.slice(-2).join(' ')).replace(/\s+/g, ' ').slice(0, 300)
  return no(`${argv[0]?.split('/').pop()} failed in a throwaway netns: ${err || `exit ${res.code}`}`)
}

async function probeNetfilter(unshare: string | undefined, nft: string | undefined, ipt: string | undefined, ip: string | undefined) {
  const chain = 'add table inet flprobe\nadd chain inet flprobe c { type filter hook output priority 0; }\n'
  const nftProbe = (rule: string, success: string) =>
    probeCommand(unshare, nft ? [nft, '-f', '-'] : undefined, 'nft (nftables) is not installed', success, chain + rule + '\n')
  const iptProbe = (args: string[], success: string) =>
    probeCommand(unshare, ipt ? [ipt, '-w', ...args] : undefined, 'iptables is not installed', success)
  const [tables, numgen, reject, queue, nftRedirect, statistic, nfqueue, redirect, veth, ifb] = await Promise.all([
    nftProbe('', 'nft can create tables and chains'),
    nftProbe('add rule inet flprobe c numgen random mod 100 < 30 drop', 'nft numgen expression works'),
    nftProbe('add rule inet flprobe c meta l4proto tcp reject with tcp reset', 'nft reject works'),
    nftProbe('add rule inet flprobe c queue num 0 bypass', 'nft queue works'),
    probeCommand(
      unshare,
      nft ? [nft, '-f', '-'] : undefined,
      'nft (nftables) is not installed',
      'nft nat redirect works',
      'add table inet flprobe\nadd chain inet flprobe n { type nat hook output priority -101; }\nadd rule inet flprobe n udp dport 53 redirect to :5353\n',
    ),
    iptProbe(['-A', 'OUTPUT', '-m', 'statistic', '--mode', 'random', '--probability', '0.3', '-j', 'DROP'], 'iptables statistic match works'),
    iptProbe(['-A', 'OUTPUT', '-j', 'NFQUEUE', '--queue-num', '0', '--queue-bypass'], 'iptables NFQUEUE target works'),
    iptProbe(['-t', 'nat', '-A', 'OUTPUT', '-p', 'udp', '--dport', '53', '-j', 'REDIRECT', '--to-ports', '5353'], 'iptables REDIRECT works'),
    probeCommand(unshare, ip ? [ip, 'link', 'add', 'flprobe0', 'type', 'veth', 'peer', 'name', 'flprobe1'] : undefined, 'ip (iproute2) is not installed', 'veth pairs can be created'),
    probeCommand(unshare, ip ? [ip, 'link', 'add', 'flprobe0', 'type', 'ifb'] : undefined, 'ip (iproute2) is not installed', 'ifb devices can be created'),
  ])
  return {
    'nft:tables': tables,
    'nft:numgen': numgen,
    'nft:reject': reject,
    'nft:queue': queue,
    'nft:redirect': nftRedirect,
    'iptables:statistic': statistic,
    'iptables:nfqueue': nfqueue,
    'iptables:redirect': redirect,
    'link:veth': veth,
    'link:ifb': ifb,
  }
}

/** cgroup v1 hierarchies and the v2 mount, from our own mountinfo (not PID 1's). */
export function probeCgroups(procRoot: string) {
  const mounts = readCgroupMounts(procRoot)
  const v1Controllers = [...mounts.v1.keys()].filter((c) => !c.startsWith('name=')).sort()
  let v2Controllers = ''
  if (mounts.v2) {
    try {
      v2Controllers = readFileSync(`${mounts.v2}/cgroup.controllers`, 'utf8').trim()
    } catch {
      /* unreadable controllers file: still mounted */
    }
  }
  return {
    'cgroup:v1': mounts.v1.size > 0 ? yes(`v1 controllers: ${v1Controllers.join(', ')}`) : no('no cgroup v1 hierarchy is mounted'),
    'cgroup:v2': mounts.v2 ? yes(`cgroup2 at ${mounts.v2}${v2Controllers ? ` (controllers: ${v2Controllers})` : ' (no controllers enabled)'}`) : no('no cgroup2 filesystem is mounted'),
    'cgroup:freezer': mounts.v1.has('freezer')
      ? yes('v1 freezer controller is mounted')
      : mounts.v2
        ? yes('cgroup v2 freezer (cgroup.freeze, Linux >= 5.2)')
        : no('neither a v1 freezer hierarchy nor cgroup v2 is mounted'),
  }
}

function probeFiles(opts: ProbeOptions) {
  let scope: string | undefined
  try {
    scope = readFileSync(join(opts.procRoot, 'sys/kernel/yama/ptrace_scope'), 'utf8').trim()
  } catch {
    scope = undefined
  }
  const fuse = devPath(opts, 'fuse')
  const socket = (runtime: RuntimeName): Feature => {
    const paths = opts.runtimeSockets[runtime]
    const found = paths.find(isSocket)
    return found ? yes(`socket ${found}`) : no(`no socket at ${paths.join(' or ')}`)
  }
  return {
    ptrace:
      scope === '3'
        ? no('kernel.yama.ptrace_scope is 3: ptrace is disabled until reboot')
        : yes(scope === undefined ? 'no Yama LSM: classic ptrace permissions (root may attach)' : `kernel.yama.ptrace_scope is ${scope}; root may attach`),
    fuse: !isCharDevice(fuse)
      ? no(`${fuse} is missing (kernel without FUSE, or not exposed to this host)`)
      : !kernelHasFilesystem(opts.procRoot, 'fuse')
        ? no(`${fuse} is present but the kernel does not list fuse in ${join(opts.procRoot, 'filesystems')} (CONFIG_FUSE_FS, or modprobe fuse)`)
        : yes(`${fuse} is present and the kernel has the fuse file system`),
    timens: existsSync(join(opts.procRoot, 'self/ns/time')) ? yes('time namespaces are supported') : no('kernel lacks time namespaces (CONFIG_TIME_NS, Linux >= 5.6)'),
    'runtime:docker': socket('docker'),
    'runtime:containerd': socket('containerd'),
    'runtime:podman': socket('podman'),
    'runtime:crio': socket('crio'),
  }
}

/** Whether /proc/filesystems lists the file system type (e.g. "nodev\tfuse"). */
function kernelHasFilesystem(procRoot: string, type: string): boolean {
  try {
    return readFileSync(join(procRoot, 'filesystems'), 'utf8')
      .split('\n')
      .some((l) => l.split('\t').pop()?.trim() === type)
  } catch {
    return false
  }
}

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket()
  } catch {
    return false
  }
}

function isCharDevice(path: string): boolean {
  try {
    return statSync(path).isCharacterDevice()
  } catch {
    return false
  }
}

export async function probeFeatures(opts: ProbeOptions): Promise<FeatureMap> {
  const tools = {
    ip: findProgram('ip'),
    tc: findProgram('tc'),
    nft: findProgram('nft'),
    iptables: findProgram('iptables'),
    unshare: findProgram('unshare'),
    'stress-ng': findProgram('stress-ng'),
  }
  const toolFeature = (name: keyof typeof tools, pkg: string): Feature =>
    tools[name] ? yes(tools[name]!) : no(`${name} is not installed (Debian package ${pkg})`)
  const [tc, netfilter, netdelay, timeskew, stress, iofault] = await Promise.all([
    probeTc(tools.unshare, tools.tc),
    probeNetfilter(tools.unshare, tools.nft, tools.iptables, tools.ip),
    probeNetdelayHelper(tools.unshare),
    probeTimeskewHelper(),
    probeStressHelper(),
    probeIofaultHelper(),
  ])
  const pidfd = pidfdSupported()
  // satisfies: a feature of protocol/capabilities.ts that nothing probes does not compile.
  const features = {
    signals: yes('kill(2) is always available'),
    pidfd: pidfd.available ? yes(pidfd.detail) : no(pidfd.detail),
    'tool:ip': toolFeature('ip', 'iproute2'),
    'tool:tc': toolFeature('tc', 'iproute2'),
    'tool:nft': toolFeature('nft', 'nftables'),
    'tool:iptables': toolFeature('iptables', 'iptables'),
    'tool:unshare': toolFeature('unshare', 'util-linux'),
    'tool:stress-ng': toolFeature('stress-ng', 'stress-ng'),
    ...tc,
    ...netfilter,
    'helper:netdelay': netdelay,
    'helper:timeskew': timeskew,
    'helper:stress': stress,
    'helper:iofault': iofault,
    openat2: openat2Supported(),
    ...probeCgroups(opts.procRoot),
    ...probeFiles(opts),
  } satisfies FeatureMap
  return features
}

/**
 * What systeminformation says about the host, asked in a short-lived Node child: loaded in the
 * agent, the library and the garbage of its parsing stayed in every idle agent (~11 MiB of RSS,
 * issue 18) for three facts read once per probe. The child runs the same library, so the facts
 * are the same; it is given the library's resolved path, never a string built from input.
 */
const HOST_FACTS_SCRIPT = `
const si = require(process.argv[1])
Promise.all([si.osInfo(), si.cpu(), si.mem()]).then(
  ([os, cpu, mem]) => process.stdout.write(JSON.stringify({ os, cpu, mem })),
  (err) => { process.stderr.write(String(err && err.stack || err)); process.exitCode = 1 },
)`

interface SystemInformation {
  os: { hostname: string; platform: string; distro: string; release: string; kernel: string; arch: string }
  cpu: { manufacturer: string; brand: string; cores: number }
  mem: { total: number }
}

async function systemInformation(): Promise<SystemInformation> {
  const library = createRequire(import.meta.url).resolve('systeminformation')
  try {
    const res = await run([process.execPath, '-e', HOST_FACTS_SCRIPT, library], { timeoutMs: 30_000 })
    if (res.code === 0) return JSON.parse(res.stdout) as SystemInformation
  } catch {
    /* the child could not start: ask in process below */
  }
  // The child failed (a sandbox that forbids it, a broken PATH to node): the facts still come
  // from the same library, in the agent, which then keeps it loaded.
  const { default: si } = await import('systeminformation')
  const [os, cpu, mem] = await Promise.all([si.osInfo(), si.cpu(), si.mem()])
  return { os, cpu, mem }
}

export async function probeHostFacts(): Promise<HostFacts> {
  const { os, cpu, mem } = await systemInformation()
  return {
    hostname: os.hostname || osHostname(),
    platform: os.platform,
    distro: os.distro,
    release: os.release,
    kernel: os.kernel,
    arch: os.arch,
    cpuModel: `${cpu.manufacturer} ${cpu.brand}`.trim(),
    cpuCores: cpu.cores,
    memTotalBytes: mem.total,
    agentPid: process.pid,
    agentVersion: FAULTLINE_VERSION,
    nodeVersion: process.version,
  }
}

/** Per-kind availability: a kind is available when every feature it requires is (and the host policy allows it). */
export function kindAvailability(features: FeatureMap, policy?: Pick<HostPolicyCheck, 'refusesKind'>): Capabilities['kinds'] {
  const kinds: Capabilities['kinds'] = {}
  for (const k of faultKinds) {
    const missing = k.requires.filter((f) => !features[f]?.available)
    const reasons = missing.map((f) => features[f]?.detail ?? `${f} was not probed`)
    const mechanism = missing.length === 0 ? k.unavailableReason?.(features) : undefined
    if (mechanism) reasons.push(mechanism)
    const refused = policy?.refusesKind(k.kind)
    if (refused) reasons.push(refused)
    kinds[k.kind] = {
      available: reasons.length === 0,
      ...(reasons.length > 0 ? { reason: reasons.join('; ') } : {}),
      requires: [...k.requires],
      targets: [...k.targets],
      recoverable: k.recoverable,
    }
  }
  return kinds
}

export async function probeCapabilities(opts: ProbeOptions): Promise<Capabilities> {
  const started = performance.now()
  const [host, features] = await Promise.all([probeHostFacts(), probeFeatures(opts)])
  return {
    probedAt: new Date().toISOString(),
    probeMs: Math.round(performance.now() - started),
    host,
    features,
    kinds: kindAvailability(features, opts.policy),
    ...(opts.policy ? { policy: opts.policy.inForce() } : {}),
    ...(opts.limits ? { limits: opts.limits } : {}),
  }
}
