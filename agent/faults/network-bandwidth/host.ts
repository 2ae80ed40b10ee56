import { FaultlineError } from '../../../protocol/errors.js'
import type { ResolvedTarget } from '../../../protocol/target.js'
import type { RunResult } from '../../exec.js'
import { describeNetns, netnsOf, netnsStatus, type NetnsRef } from '../../net/netns.js'
import { failure, requireSameNetns, resolvePeers, runInNetns, toolPath, type NetworkFilterSpec, type PeerFacts } from '../shared/network.js'
import type { ApplyContext, GatherContext, RecoverOutcome } from '../types.js'
import { describeResource, removeArgv, type Op, type Resource } from './tc.js'

/** What gather finds out about the target namespace; plan is pure over these facts. */
export interface BandwidthFacts {
  tc: string
  ip: string
  device: string
  /** How the device was chosen: given in the spec, the default route's, or the route to the peers. */
  deviceFrom: 'spec' | 'default-route' | 'peer-route'
  mtu: number
  /** The device's root qdisc; handle "0:" means a kernel default (noqueue, pfifo_fast, mq, ...). */
  root: { kind: string; handle: string }
  ingressQdisc: 'none' | 'ingress' | 'clsact'
  /** Preferences already used by filters on the device's ingress hook (someone else's). */
  ingressPrefs: number[]
  /** Link names in the namespace (the IFB name must be free). */
  links: string[]
  peers: PeerFacts
  /** Claims of this kind's open injections, to refuse a clash with 409 already in plan (and dryRun). */
  openClaims: { claim: string; injectionId: string }[]
}

async function runJson<T>(ns: NetnsRef, argv: string[], what: string): Promise<T> {
  const res = await runInNetns(ns, argv)
  if (res.code !== 0) throw failure(what, res)
  try {
    return JSON.parse(res.stdout || '[]') as T
  } catch {
    throw new Error(`${what}: unexpected output ${res.stdout.slice(0, 200)}`)
  }
}

interface IpLink {
  ifname: string
  mtu: number
}
interface IpRoute {
  dev?: string
  metric?: number
  nexthops?: { dev?: string }[]
}
interface TcQdisc {
  kind: string
  handle: string
  root?: boolean
  parent?: string
}
interface TcFilter {
  pref?: number
}

function firstNetworkAddress(cidr: string): string {
  return cidr.split('/')[0]!
}

/** The interface the kind shapes when the spec names none. */
async function chooseDevice(ns: NetnsRef, ip: string, peers: PeerFacts, links: string[]): Promise<{ device: string; from: BandwidthFacts['deviceFrom'] }> {
  const where = describeNetns(ns)
  const others = links.filter((l) => l !== 'lo').join(', ') || 'none'
  const cidrs = [...peers.v4, ...peers.v6]
  if (cidrs.length > 0) {
    // With peers, the device is the one their traffic takes: shaping any other would do nothing.
    const byDevice = new Map<string, string[]>()
    for (const cidr of cidrs) {
      const routes = await runInNetns(ns, [ip, '-j', 'route', 'get', firstNetworkAddress(cidr)])
      const dev = routes.code === 0 ? (JSON.parse(routes.stdout || '[]') as IpRoute[])[0]?.dev : undefined
      if (!dev) {
        throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `peer ${cidr} has no route in ${where}, so there is no device to shape for it: give "device" (interfaces: ${others})`)
      }
      byDevice.set(dev, [...(byDevice.get(dev) ?? []), cidr])
    }
    if (byDevice.size > 1) {
      const list = [...byDevice].map(([dev, c]) => `${dev} (${c.join(', ')})`).join(', ')
      throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `the peers route through several devices in ${where}: ${list}; give "device", one injection per device`)
    }
    return { device: [...byDevice.keys()][0]!, from: 'peer-route' }
  }
  for (const family of ['-4', '-6']) {
    const routes = await runJson<IpRoute[]>(ns, [ip, family, '-j', 'route', 'show', 'default'], `ip ${family} route show default`)
    const best = routes.sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0))[0]
    if (!best) continue
    const devs = [...new Set(best.dev ? [best.dev] : (best.nexthops ?? []).flatMap((n) => (n.dev ? [n.dev] : [])))]
    if (devs.length === 1) return { device: devs[0]!, from: 'default-route' }
    if (devs.length > 1) {
      throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `the default route in ${where} spreads over ${devs.join(', ')}; give "device", one injection per device`)
    }
  }
  throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `${where} has no default route, so there is no default device to shape: give "device" (interfaces: ${others})`)
}

export async function gatherBandwidth(spec: NetworkFilterSpec, target: ResolvedTarget, ctx: GatherContext): Promise<BandwidthFacts> {
  const ns = netnsOf(target, ctx.paths)
  requireSameNetns(ns)
  const tc = toolPath('tc')
  const ip = toolPath('ip')
  const peers = await resolvePeers(spec.peers)
  const linkList = await runJson<IpLink[]>(ns, [ip, '-j', 'link', 'show'], 'ip link show')
  const links = linkList.map((l) => l.ifname)
  const chosen = spec.device ? { device: spec.device, from: 'spec' as const } : await chooseDevice(ns, ip, peers, links)
  const link = linkList.find((l) => l.ifname === chosen.device)
  if (!link) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `there is no interface "${chosen.device}" in ${describeNetns(ns)} (interfaces: ${links.join(', ')})`)
  }
  const qdiscs = await runJson<TcQdisc[]>(ns, [tc, '-j', 'qdisc', 'show', 'dev', chosen.device], `tc qdisc show dev ${chosen.device}`)
  const root = qdiscs.find((q) => q.root) ?? { kind: 'noqueue', handle: '0:' }
  const ingress = qdiscs.find((q) => q.parent === 'ffff:fff1')
  const ingressQdisc = ingress?.kind === 'clsact' ? 'clsact' : ingress ? 'ingress' : 'none'
  const ingressPrefs = ingressQdisc === 'none' ? [] : await listIngressPrefs(ns, tc, chosen.device)
  return {
    tc,
    ip,
    device: chosen.device,
    deviceFrom: chosen.from,
    mtu: link.mtu,
    root: { kind: root.kind, handle: root.handle },
    ingressQdisc,
    ingressPrefs,
    links,
    peers,
    openClaims: ctx.openPlans().flatMap((p) => {
      const plan = p as { claims?: string[]; injectionId?: string }
      return (plan.claims ?? []).map((claim) => ({ claim, injectionId: plan.injectionId ?? 'unknown' }))
    }),
  }
}

async function listIngressPrefs(ns: NetnsRef, tc: string, device: string): Promise<number[]> {
  const filters = await runJson<TcFilter[]>(ns, [tc, '-j', 'filter', 'show', 'dev', device, 'ingress'], `tc filter show dev ${device} ingress`)
  return [...new Set(filters.flatMap((f) => (typeof f.pref === 'number' ? [f.pref] : [])))].sort((a, b) => a - b)
}

// ---- apply ---------------------------------------------------------------------------------------

export interface BandwidthState {
  netns: NetnsRef
  tc: string
  ip: string
  /** What this injection created, in order; recovery removes it in reverse. */
  owned: Resource[]
}

/**
 * Runs the plan's commands in order. Before a command that creates something, the thing is
 * added to the undo state and the state is committed (checkpoint), so a kill -9 at any point
 * leaves a journal that names everything that may exist. A creating command that fails with an
 * exit status created nothing (tc and ip changes are single netlink transactions): it is taken
 * off the state again, so rollback never removes what someone else owns ("File exists").
 */
export async function applyOps(base: Omit<BandwidthState, 'owned'>, ops: Op[], ctx: ApplyContext): Promise<BandwidthState> {
  const state: BandwidthState = { ...base, owned: [] }
  requireSameNetns(state.netns)
  for (const op of ops) {
    if (op.creates?.type === 'ingress-filter') {
      // Re-checked right before adding: a filter added at the same preference would join an
      // existing one, and removing ours would then remove it too.
      const used = await listIngressPrefs(state.netns, state.tc, op.creates.device)
      if (used.includes(op.creates.prio)) {
        throw new FaultlineError(
          'FAULTLINE_ERR_TARGET_STATE',
          `ingress preference ${op.creates.prio} of ${op.creates.device} was taken by someone else since the plan was made; nothing of theirs was touched, try again`,
        )
      }
    }
    if (op.creates) {
      state.owned.push(op.creates)
      ctx.checkpoint(state)
    }
    const res = await runInNetns(state.netns, op.argv)
    if (res.code !== 0) {
      if (op.creates && res.code !== null) {
        state.owned.pop()
        ctx.checkpoint(state)
      }
      throw failure(op.argv.slice(0, 4).map((a) => a.split('/').pop()).join(' '), res)
    }
  }
  return state
}

// ---- recover -------------------------------------------------------------------------------------

const gone = {
  any: /Cannot find device|does not exist/,
  filter: /Cannot find specified filter chain|Parent Qdisc doesn't exists|Filter with specified priority\/protocol not found/,
  qdisc: /Invalid handle|Cannot find specified qdisc|No such file or directory/,
}

function isGone(r: Resource, res: RunResult): boolean {
  const err = res.stderr
  if (gone.any.test(err)) return true
  if (r.type === 'ingress-filter') return gone.filter.test(err)
  if (r.type === 'root-qdisc' || r.type === 'ingress-qdisc') return gone.qdisc.test(err)
  return false
}

/** Removes exactly what the state names, newest first; anything already gone counts as recovered. */
export async function recoverOwned(state: BandwidthState): Promise<RecoverOutcome> {
  const status = netnsStatus(state.netns)
  if (status !== 'same') return { note: `${describeNetns(state.netns)} is ${status === 'gone' ? 'gone' : 'now a different namespace'}; nothing to remove` }
  const notes: string[] = []
  for (const r of [...state.owned].reverse()) {
    if (r.type === 'ingress-qdisc') {
      // Ours, but if someone else has since put filters on it, leave it to them.
      const prefs = await listIngressPrefs(state.netns, state.tc, r.device).catch(() => [])
      if (prefs.length > 0) {
        notes.push(`left the ingress qdisc of ${r.device} in place: it now holds filters that are not ours (preferences ${prefs.join(', ')})`)
        continue
      }
    }
    const res = await runInNetns(state.netns, removeArgv(state, r))
    if (res.code === 0) continue
    if (r.type === 'ingress-filter' && /Protocol mismatch/.test(res.stderr)) {
      notes.push(`${describeResource(r)}: the preference now holds someone else's filter; left alone`)
      continue
    }
    if (r.type === 'ingress-qdisc' && /Invalid qdisc name/.test(res.stderr)) {
      notes.push(`the ingress hook of ${r.device} now holds another qdisc kind that is not ours; left alone`)
      continue
    }
    if (isGone(r, res)) {
      notes.push(
        r.type === 'root-qdisc' && !gone.any.test(res.stderr)
          ? `${describeResource(r)} is no longer there (gone, or replaced by someone else's, which was left alone)`
          : `${describeResource(r)} was already gone`,
      )
      continue
    }
    throw failure(`removing the ${describeResource(r)}`, res)
  }
  return notes.length > 0 ? { note: notes.join('; ') } : {}
}
