import { createHash } from 'node:crypto'
import { lookup } from 'node:dns/promises'
import ipaddr from 'ipaddr.js'
import { Type, type Static } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import type { Direction, NetworkFilterSpec } from '../../../protocol/faults/fields.js'
import type { ResolvedTarget } from '../../../protocol/target.js'

export type { Direction, NetworkFilterSpec } from '../../../protocol/faults/fields.js'
import { findProgram, run, type RunResult } from '../../exec.js'
import { inNetns, netnsStatus, describeNetns, type NetnsRef } from '../../net/netns.js'
import type { ControlChannel, GatherContext } from '../types.js'

// ---- facts gathered before planning ------------------------------------------------------------

export const PeerFactsSchema = Type.Object({
  v4: Type.Array(Type.String()),
  v6: Type.Array(Type.String()),
  /** What each hostname resolved to at injection time. */
  resolved: Type.Array(Type.Object({ name: Type.String(), addresses: Type.Array(Type.String()) })),
})
export type PeerFacts = Static<typeof PeerFactsSchema>

const hostnameRe = /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/

/** CIDRs, IPs and hostnames to normalised CIDR lists per family; hostnames are looked up now. */
export async function resolvePeers(peers: readonly string[] | undefined): Promise<PeerFacts> {
  const facts: PeerFacts = { v4: [], v6: [], resolved: [] }
  const add = (addr: ipaddr.IPv4 | ipaddr.IPv6, prefix: number) => {
    const family = addr.kind() === 'ipv4' ? facts.v4 : facts.v6
    const network = ipaddr.parse(networkAddress(addr, prefix))
    family.push(`${network.toString()}/${prefix}`)
  }
  for (const peer of peers ?? []) {
    if (peer.includes('/')) {
      let parsed: [ipaddr.IPv4 | ipaddr.IPv6, number]
      try {
        parsed = ipaddr.parseCIDR(peer)
      } catch {
        throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `peer "${peer}" is not a valid CIDR (e.g. 10.0.0.0/8 or fd00::/64)`)
      }
      add(parsed[0], parsed[1])
    } else if (ipaddr.isValid(peer)) {
      const addr = unmap(ipaddr.parse(peer))
      add(addr, addr.kind() === 'ipv4' ? 32 : 128)
    } else if (hostnameRe.test(peer)) {
      let addresses: { address: string }[]
      try {
        addresses = await lookup(peer, { all: true, verbatim: true })
      } catch (err) {
        throw new FaultlineError('FAULTLINE_ERR_PEER_UNRESOLVED', `peer "${peer}" does not resolve: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
      }
      facts.resolved.push({ name: peer, addresses: addresses.map((a) => a.address) })
      for (const a of addresses) {
        const addr = unmap(ipaddr.parse(a.address))
        add(addr, addr.kind() === 'ipv4' ? 32 : 128)
      }
    } else {
      throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `peer "${peer}" is neither an IP, a CIDR nor a hostname`)
    }
  }
  facts.v4 = [...new Set(facts.v4)]
  facts.v6 = [...new Set(facts.v6)]
  return facts
}

function unmap(addr: ipaddr.IPv4 | ipaddr.IPv6): ipaddr.IPv4 | ipaddr.IPv6 {
  return addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress() ? (addr as ipaddr.IPv6).toIPv4Address() : addr
}

function networkAddress(addr: ipaddr.IPv4 | ipaddr.IPv6, prefix: number): string {
  const bytes = addr.toByteArray()
  for (let bit = prefix; bit < bytes.length * 8; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7))
  return ipaddr.fromByteArray(bytes).toString()
}

/** Absolute paths of the tools a plan runs, so the plan shows the exact argv. */
export function toolPath(name: string): string {
  const path = findProgram(name)
  if (!path) throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `${name} is not installed on this host`)
  return path
}

// ---- control channel ------------------------------------------------------------------------------

/**
 * TCP ports that the fault must not touch: SSH everywhere, and the agent's API port when the
 * target is the agent's own network namespace. A spec opts out with protectControlChannel: false.
 */
export function protectedTcpPorts(spec: NetworkFilterSpec, target: ResolvedTarget, control: ControlChannel): number[] {
  if (spec.protectControlChannel === false) return []
  const ports = new Set(control.tcpPorts)
  const apiPort = control.apiPort?.()
  if (apiPort !== undefined && target.type !== 'process' && target.netnsInode === control.agentNetnsInode) ports.add(apiPort)
  return [...ports].sort((a, b) => a - b)
}

// ---- nft ---------------------------------------------------------------------------------------

/** The nft table an injection owns: named from its id, so recovery deletes exactly it. */
export function ownTableName(injectionId: string): string {
  const safe = injectionId.replace(/[^A-Za-z0-9_]/g, '_').slice(0, 40)
  const hash = createHash('sha256').update(injectionId).digest('hex').slice(0, 8)
  return `faultline_${safe}_${hash}`
}

export interface NftMatch {
  peers: PeerFacts
  ports?: number[]
  localPorts?: number[]
  protocol: 'tcp' | 'udp' | 'icmp' | 'all'
  device?: string
}

const set = (values: readonly (string | number)[]) => (values.length === 1 ? String(values[0]) : `{ ${values.join(', ')} }`)

/**
 * The match expressions (one per rule) selecting the filtered traffic in one direction.
 * Several rules when address families or protocols must be split.
 */
export function nftMatches(direction: 'egress' | 'ingress', m: NftMatch): string[] {
  const out = direction === 'egress'
  const iface = m.device ? [`${out ? 'oifname' : 'iifname'} "${m.device}"`] : []
  const addrParts: string[][] = []
  if (m.peers.v4.length === 0 && m.peers.v6.length === 0) addrParts.push([])
  if (m.peers.v4.length > 0) addrParts.push([`ip ${out ? 'daddr' : 'saddr'} ${set(m.peers.v4)}`])
  if (m.peers.v6.length > 0) addrParts.push([`ip6 ${out ? 'daddr' : 'saddr'} ${set(m.peers.v6)}`])
  const hasPorts = Boolean(m.ports?.length || m.localPorts?.length)
  if (m.protocol === 'icmp' && hasPorts) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'ports and localPorts need protocol tcp, udp or all, not icmp')
  const protocols: ('tcp' | 'udp' | 'icmp' | null)[] =
    m.protocol === 'all' ? (hasPorts ? ['tcp', 'udp'] : [null]) : [m.protocol]
  const rules: string[] = []
  for (const addr of addrParts) {
    for (const proto of protocols) {
      const parts = [...iface, ...addr]
      if (proto === 'icmp') parts.push('meta l4proto { icmp, ipv6-icmp }')
      else if (proto && !hasPorts) parts.push(`meta l4proto ${proto}`)
      if (proto && proto !== 'icmp') {
        if (m.ports?.length) parts.push(`${proto} ${out ? 'dport' : 'sport'} ${set(m.ports)}`)
        if (m.localPorts?.length) parts.push(`${proto} ${out ? 'sport' : 'dport'} ${set(m.localPorts)}`)
      }
      rules.push(parts.join(' '))
    }
  }
  return rules
}

export interface NftTablePlan {
  family: 'inet'
  name: string
  /** The whole `nft -f -` script that creates the table, atomically. */
  script: string
}

/**
 * One table per injection, created in one atomic transaction (`create table` fails if a table
 * of that name exists, so nothing of anyone else is ever merged into or replaced). Exempt
 * control-channel ports are accepted first in our own chains; a drop elsewhere is not ours.
 */
export function buildNftTable(opts: {
  table: string
  direction: Direction
  match: NftMatch
  verdict: string
  protectedTcpPorts: number[]
  comment: string
}): NftTablePlan {
  const lines = [`create table inet ${opts.table}`, `table inet ${opts.table} {`, `  comment ${JSON.stringify(opts.comment)}`]
  const dirs: ('egress' | 'ingress')[] = opts.direction === 'both' ? ['egress', 'ingress'] : [opts.direction]
  for (const dir of dirs) {
    lines.push(`  chain ${dir} {`, `    type filter hook ${dir === 'egress' ? 'output' : 'input'} priority filter; policy accept;`)
    for (const port of opts.protectedTcpPorts) lines.push(`    tcp sport ${port} accept`, `    tcp dport ${port} accept`)
    for (const match of nftMatches(dir, opts.match)) lines.push(`    ${match ? `${match} ` : ''}${opts.verdict}`)
    lines.push('  }')
  }
  lines.push('}')
  return { family: 'inet', name: opts.table, script: lines.join('\n') + '\n' }
}

// ---- running tools in the target namespace -------------------------------------------------------

export const NetnsRefSchema = Type.Union([
  Type.Object({ kind: Type.Literal('host'), inode: Type.Integer() }),
  Type.Object({ kind: Type.Literal('path'), path: Type.String(), inode: Type.Integer() }),
])

/** Refuses to act when the namespace at the path is not the one resolved (gone or replaced). */
export function requireSameNetns(ns: NetnsRef): void {
  const status = netnsStatus(ns)
  if (status !== 'same') {
    throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', `${describeNetns(ns)} is ${status === 'gone' ? 'gone' : 'now a different namespace'}; nothing was changed`)
  }
}

export async function runInNetns(ns: NetnsRef, argv: readonly string[], input?: string, env?: NodeJS.ProcessEnv): Promise<RunResult> {
  return run(inNetns(ns, argv), { ...(input === undefined ? {} : { input }), ...(env === undefined ? {} : { env }) })
}

/**
 * The environment our `nft` commands run with. nftables 1.0.x fills its cache before every
 * command and gives each table already in the namespace four 8192-bucket hash tables (128 KiB
 * each: `cache_init()` in src/cache.c, NFT_CACHE_HSIZE), so with 100 tables one `nft` process
 * touches ~50 MiB: ~13 500 page faults, and munmaps whose TLB shootdowns are slow on a VM. With
 * glibc's malloc on transparent huge pages (glibc >= 2.35 `glibc.malloc.hugetlb=1`, which only
 * madvises; the host's THP setting still decides) and those buffers kept on the heap, the
 * same command takes a few hundred page faults and about half the CPU (docs/benchmarks.md,
 * "Network partition"), for ~2 MiB more peak RSS per nft process. It stays linear in the
 * tables: nft still writes every bucket. An operator's own GLIBC_TUNABLES is left as it is;
 * older glibc ignores tunables it does not know.
 */
export function nftEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  if (base.GLIBC_TUNABLES !== undefined) return base
  return { ...base, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.top_pad=67108864' }
}

export function failure(what: string, res: RunResult): Error {
  return new Error(`${what} failed (exit ${res.code ?? res.signal}): ${res.stderr.trim().split('\n').slice(0, 3).join(' ') || res.stdout.trim()}`)
}

/** nft reports a missing table or chain as ENOENT: for recovery that means "already gone". */
export function isNftGone(res: RunResult): boolean {
  return /No such file or directory/.test(res.stderr)
}

export async function createNftTable(ns: NetnsRef, nft: string, table: NftTablePlan): Promise<void> {
  requireSameNetns(ns)
  const res = await runInNetns(ns, [nft, '-f', '-'], table.script, nftEnv())
  if (res.code !== 0) throw failure(`nft -f - (table inet ${table.name})`, res)
}

/** Deletes exactly our table; a missing table or namespace counts as recovered. */
export async function deleteNftTable(ns: NetnsRef, nft: string, name: string): Promise<{ note?: string }> {
  const status = netnsStatus(ns)
  if (status !== 'same') return { note: `${describeNetns(ns)} is ${status === 'gone' ? 'gone' : 'now a different namespace'}; nothing to remove` }
  const res = await runInNetns(ns, [nft, 'delete', 'table', 'inet', name], undefined, nftEnv())
  if (res.code === 0) return {}
  if (isNftGone(res)) return { note: `table inet ${name} was already gone` }
  throw failure(`nft delete table inet ${name}`, res)
}

export function nftSteps(ns: NetnsRef, nft: string, table: NftTablePlan, what: string) {
  return [
    { phase: 'apply' as const, action: 'exec', detail: `${what}: create table inet ${table.name} in ${describeNetns(ns)} with:\n${table.script}`, argv: inNetns(ns, [nft, '-f', '-']) },
    { phase: 'recover' as const, action: 'exec', detail: `delete table inet ${table.name} (only ours; gone counts as recovered)`, argv: inNetns(ns, [nft, 'delete', 'table', 'inet', table.name]) },
  ]
}

/** Common gather for nft-based kinds. */
export async function gatherNft(spec: NetworkFilterSpec, target: ResolvedTarget, ctx: GatherContext) {
  return {
    nft: toolPath('nft'),
    peers: await resolvePeers(spec.peers),
    protectedTcpPorts: protectedTcpPorts(spec, target, ctx.control),
  }
}
export type NftFacts = Awaited<ReturnType<typeof gatherNft>>
