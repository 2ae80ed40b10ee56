import { createHash } from 'node:crypto'
import { Type } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import type { FeatureMap } from '../../../protocol/capabilities.js'
import type { PlanStep } from '../../../protocol/plan.js'
import { inNetns, type NetnsRef } from '../../net/netns.js'
import { run } from '../../exec.js'
import { describeNetns, netnsStatus } from '../../net/netns.js'
import { failure, requireSameNetns, runInNetns, toolPath, type PeerFacts } from './network.js'

/**
 * sch_netem for the kinds that use it (delay, loss, corrupt, duplicate, reorder). netem shapes
 * egress only; the kinds choose another mechanism (nft, NFQUEUE) for ingress or where the
 * kernel lacks netem. The root qdisc of a device is held by one injection at a time (claim
 * "tc-root:<netns inode>:<device>"), and a root qdisc that someone configured (a non-zero
 * handle) is never replaced.
 */

export interface NetemArgs {
  delay?: { latencyMs: number; jitterMs?: number; correlation?: number }
  loss?: { percent: number; correlation?: number }
  corrupt?: { percent: number; correlation?: number }
  duplicate?: { percent: number; correlation?: number }
  /** netem reorders by sending `percent` of packets at once while the rest wait `delay`. */
  reorder?: { percent: number; correlation?: number; gapMs: number }
}

const pct = (n: number) => `${Number(n.toFixed(2))}%`

/** The netem argument list, e.g. ["delay", "100ms", "10ms", "25%", "loss", "30%"]. */
export function netemArgv(a: NetemArgs): string[] {
  const out: string[] = []
  if (a.delay || a.reorder) {
    const d = a.delay ?? { latencyMs: a.reorder!.gapMs }
    out.push('delay', `${d.latencyMs}ms`)
    if (d.jitterMs) out.push(`${d.jitterMs}ms`)
    if (d.jitterMs && d.correlation) out.push(pct(d.correlation))
  }
  for (const key of ['loss', 'corrupt', 'duplicate', 'reorder'] as const) {
    const v = a[key]
    if (!v) continue
    out.push(key, pct(v.percent))
    if (v.correlation) out.push(pct(v.correlation))
  }
  return out
}

/** A per-injection tc major handle (hex, 1..fff0), derived from the id for readable plans. */
export function tcHandleFor(injectionId: string): string {
  const n = parseInt(createHash('sha256').update(injectionId).digest('hex').slice(0, 8), 16)
  return (1 + (n % 0xfff0)).toString(16)
}

export interface NetemPlanInput {
  ns: NetnsRef
  tc: string
  device: string
  handle: string
  netem: NetemArgs
  peers: PeerFacts
  ports?: number[]
  localPorts?: number[]
  protocol: 'tcp' | 'udp' | 'icmp' | 'all'
  protectedTcpPorts: number[]
}

const ipProto = { tcp: 6, udp: 17, icmp: 1 } as const

/**
 * The tc commands. Without filters or protected ports: one root netem. Otherwise a prio root
 * with a fourth band that only filters reach; the netem sits on that band, so unmatched and
 * protected traffic passes untouched.
 */
export function planNetem(p: NetemPlanInput): { apply: string[][]; recover: string[][] } {
  const tc = (...args: string[]) => inNetns(p.ns, [p.tc, ...args])
  const h = p.handle
  const filtered = Boolean(p.peers.v4.length || p.peers.v6.length || p.ports?.length || p.localPorts?.length || p.protocol !== 'all')
  if (!filtered && p.protectedTcpPorts.length === 0) {
    return {
      apply: [tc('qdisc', 'add', 'dev', p.device, 'root', 'handle', `${h}:`, 'netem', ...netemArgv(p.netem))],
      recover: [tc('qdisc', 'del', 'dev', p.device, 'root', 'handle', `${h}:`)],
    }
  }
  if (p.peers.v6.length > 0) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'netem filters match IPv4 peers only; give IPv4 peers')
  const netemHandle = (parseInt(h, 16) + 1).toString(16)
  const apply = [
    // bands 1-3 keep the default priomap; band 4 is reached only through the filters below
    tc('qdisc', 'add', 'dev', p.device, 'root', 'handle', `${h}:`, 'prio', 'bands', '4', 'priomap', '1', '2', '2', '2', '1', '2', '0', '0', '1', '1', '1', '1', '1', '1', '1', '1'),
    tc('qdisc', 'add', 'dev', p.device, 'parent', `${h}:4`, 'handle', `${netemHandle}:`, 'netem', ...netemArgv(p.netem)),
  ]
  let prio = 1
  for (const port of p.protectedTcpPorts) {
    for (const side of ['sport', 'dport']) {
      apply.push(tc('filter', 'add', 'dev', p.device, 'parent', `${h}:`, 'protocol', 'ip', 'prio', String(prio), 'u32', 'match', 'ip', 'protocol', '6', '0xff', 'match', 'ip', side, String(port), '0xffff', 'flowid', `${h}:1`))
    }
  }
  prio++
  const dsts = p.peers.v4.length > 0 ? p.peers.v4 : [null]
  const protos = p.protocol === 'all' ? (p.ports?.length || p.localPorts?.length ? (['tcp', 'udp'] as const) : [null]) : [p.protocol]
  const portsList = p.ports?.length ? p.ports : [null]
  const localList = p.localPorts?.length ? p.localPorts : [null]
  for (const dst of dsts) {
    for (const proto of protos) {
      for (const port of portsList) {
        for (const local of localList) {
          const match: string[] = []
          if (dst) match.push('match', 'ip', 'dst', dst)
          if (proto) match.push('match', 'ip', 'protocol', String(ipProto[proto]), '0xff')
          if (port !== null) match.push('match', 'ip', 'dport', String(port), '0xffff')
          if (local !== null) match.push('match', 'ip', 'sport', String(local), '0xffff')
          if (match.length === 0) match.push('match', 'u32', '0', '0')
          apply.push(tc('filter', 'add', 'dev', p.device, 'parent', `${h}:`, 'protocol', 'ip', 'prio', String(prio), 'u32', ...match, 'flowid', `${h}:4`))
        }
      }
    }
  }
  // Deleting the root removes its children and filters with it.
  return { apply, recover: [tc('qdisc', 'del', 'dev', p.device, 'root', 'handle', `${h}:`)] }
}

export function netemSteps(plan: { apply: string[][]; recover: string[][] }, what: string): PlanStep[] {
  return [
    ...plan.apply.map((argv, i) => ({ phase: 'apply' as const, action: 'exec', detail: i === 0 ? what : 'tc', argv })),
    ...plan.recover.map((argv) => ({ phase: 'recover' as const, action: 'exec', detail: 'delete our root qdisc (children and filters go with it)', argv })),
  ]
}

export function netemMissing(features: FeatureMap): string | undefined {
  return features['qdisc:netem']?.available ? undefined : features['qdisc:netem']?.detail ?? 'kernel lacks sch_netem'
}

/** The device to shape: the one asked for, else the device of the default route in the namespace. */
export async function resolveDevice(ns: NetnsRef, device: string | undefined): Promise<string> {
  const ip = toolPath('ip')
  if (device) {
    const res = await runInNetns(ns, [ip, '-j', 'link', 'show', 'dev', device])
    if (res.code !== 0) throw new FaultlineError('FAULTLINE_ERR_TARGET_NOT_FOUND', `no device "${device}" in ${describeNetns(ns)}`)
    return device
  }
  const res = await runInNetns(ns, [ip, '-j', 'route', 'show', 'default'])
  const routes = res.code === 0 ? (JSON.parse(res.stdout || '[]') as { dev?: string }[]) : []
  const dev = routes.find((r) => r.dev)?.dev
  if (!dev) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `${describeNetns(ns)} has no default route; give "device"`)
  return dev
}

/** Refuses a device whose root qdisc someone configured (kernel defaults have handle 0:). */
export async function checkRootQdiscFree(ns: NetnsRef, tc: string, device: string): Promise<void> {
  const res = await runInNetns(ns, [tc, '-j', 'qdisc', 'show', 'dev', device, 'root'])
  if (res.code !== 0) throw failure(`tc qdisc show dev ${device}`, res)
  const root = (JSON.parse(res.stdout || '[]') as { kind: string; handle: string; root?: boolean }[]).find((q) => q.root)
  if (root && root.handle !== '0:') {
    throw new FaultlineError(
      'FAULTLINE_ERR_TARGET_BUSY',
      `${device} already has a root qdisc ${root.kind} ${root.handle} in ${describeNetns(ns)}; Faultline never replaces a qdisc it did not create`,
    )
  }
}

/** Runs planned commands (their argv already enters the namespace) in order. */
export async function applyTc(ns: NetnsRef, commands: string[][]): Promise<void> {
  requireSameNetns(ns)
  for (const argv of commands) {
    const res = await run(argv)
    if (res.code !== 0) throw failure(argv.join(' '), res)
  }
}

/** Deletes our root qdisc; a missing qdisc or namespace counts as recovered. */
export async function recoverTc(ns: NetnsRef, commands: string[][]): Promise<{ note?: string }> {
  const status = netnsStatus(ns)
  if (status !== 'same') return { note: `${describeNetns(ns)} is ${status === 'gone' ? 'gone' : 'now a different namespace'}; nothing to remove` }
  for (const argv of commands) {
    const res = await run(argv)
    if (res.code !== 0 && !/No such file or directory|Cannot find specified qdisc|Invalid handle|Cannot find device/i.test(res.stderr)) {
      throw failure(argv.join(' '), res)
    }
  }
  return {}
}

export { toolPath }

// ---- kinds built on netem --------------------------------------------------------------------

export const NetemPlanFields = {
  netns: Type.Union([
    Type.Object({ kind: Type.Literal('host'), inode: Type.Integer() }),
    Type.Object({ kind: Type.Literal('path'), path: Type.String(), inode: Type.Integer() }),
  ]),
  device: Type.String(),
  tcApply: Type.Array(Type.Array(Type.String())),
  tcRecover: Type.Array(Type.Array(Type.String())),
}

export interface NetemFacts {
  tc: string
  device: string
  peers: PeerFacts
  protectedTcpPorts: number[]
}

/** gather for netem kinds: the tc binary, the device (default route's), and a free root qdisc. */
export async function gatherNetem(
  ns: NetnsRef,
  spec: { device?: string },
  peers: PeerFacts,
  protectedTcpPorts: number[],
): Promise<NetemFacts> {
  const tc = toolPath('tc')
  const device = await resolveDevice(ns, spec.device)
  await checkRootQdiscFree(ns, tc, device)
  return { tc, device, peers, protectedTcpPorts }
}

export function rootClaim(ns: NetnsRef, device: string): string {
  return `tc-root:${ns.inode}:${device}`
}
