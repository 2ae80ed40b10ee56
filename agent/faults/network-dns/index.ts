import { networkDnsSpec } from '../../../protocol/faults/network-dns.js'
import { existsSync, readFileSync } from 'node:fs'
import { randomInt } from 'node:crypto'
import ipaddr from 'ipaddr.js'
import { Type, type Static } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import { PlanStepSchema } from '../../../protocol/plan.js'
import type { ResolvedTarget } from '../../../protocol/target.js'
import { describeNetns, inNetns, netnsOf, type NetnsRef } from '../../net/netns.js'
import {
  NetnsRefSchema,
  createNftTable,
  deleteNftTable,
  failure,
  ownTableName,
  requireSameNetns,
  runInNetns,
  toolPath,
} from '../shared/network.js'
import { defineFault, type HostPaths } from '../types.js'
import { defaultHostPaths, etcPath, procPath } from '../../host-paths.js'
import {
  conntrackZone,
  isNamePattern,
  normalizeName,
  resolverGid,
  type AnswerRules,
  type ResolverConfig,
} from './config.js'
import { resolverCommand, startResolver, stopResolver } from './helper.js'

/**
 * The resolver's port is picked at injection time, free inside the target namespace, from
 * 20000-32767: below the default ephemeral range (32768-60999), so an outgoing connection is
 * unlikely to take it between planning and the resolver's bind.
 */
const PORT_RANGE = { min: 20_000, max: 32_767 }

/**
 * One priority before dstnat (-100): if the namespace has other nat chains on output (Docker's
 * embedded-DNS DNAT of 127.0.0.11:53, for example), ours decides first — the kernel stops at the
 * first chain that binds a NAT mapping — and the resolver's own exempt queries still get theirs.
 */
const NAT_PRIORITY = -101

type DnsSpec = Static<typeof networkDnsSpec.specSchema>

const ProcessRefSchema = Type.Object({ pid: Type.Integer(), startTime: Type.Integer() })
const UndoFields = { netns: NetnsRefSchema, nft: Type.String(), table: Type.String() }

export interface DnsFacts {
  nft: string
  resolverCommand: string[]
  upstream: string
  /** Where the upstream came from: "spec" or the resolv.conf path. */
  upstreamSource: string
  port: number
}

/** Validates what the schema cannot express and normalises names. */
export function answerRules(spec: DnsSpec): AnswerRules {
  const bad = (message: string) => new FaultlineError('FAULTLINE_ERR_VALIDATION', message)
  if (spec.mode === 'override') {
    if (!spec.records) throw bad('mode override needs records: { "name": "10.0.0.5", ... }')
    if (spec.domains) throw bad('mode override takes no domains: the keys of records are the names it covers')
  } else {
    if (spec.records) throw bad(`records are for mode override, not ${spec.mode}`)
    if (spec.ttl !== undefined) throw bad(`ttl is for mode override, not ${spec.mode}`)
  }
  const records: Record<string, string> = {}
  for (const [name, address] of Object.entries(spec.records ?? {})) {
    if (!isNamePattern(name)) throw bad(`records: "${name}" is not a DNS name or "*.suffix" pattern`)
    if (!ipaddr.isValid(address)) throw bad(`records: "${address}" (for ${name}) is not an IPv4 or IPv6 address`)
    records[normalizeName(name)] = ipaddr.parse(address).toString()
  }
  return { mode: spec.mode, domains: (spec.domains ?? []).map(normalizeName), records, ttl: spec.ttl ?? 0 }
}

const SYSTEMD_RESOLVED_STUB = '127.0.0.53'

function isLoopback(address: string): boolean {
  return ipaddr.process(address).range() === 'loopback'
}

const loopWarning = (address: string) =>
  `${address} is a forwarder on the target's own loopback: its upstream queries leave through port 53 of the same namespace, so they would be redirected to the fault's resolver too (a loop)`

function nameservers(path: string): string[] {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `cannot read ${path} (${(err as NodeJS.ErrnoException).code}) to find the upstream resolver; give upstream in the spec`)
  }
  const found: string[] = []
  for (const line of text.split('\n')) {
    const address = /^\s*nameserver\s+([0-9A-Fa-f.:]+)\s*(?:#.*)?$/.exec(line)?.[1]
    if (address && ipaddr.isValid(address)) found.push(ipaddr.process(address).toString())
  }
  return found
}

/**
 * The upstream for names the fault does not cover: the first nameserver of the target's
 * resolv.conf. Behind systemd-resolved's stub (127.0.0.53) that is the stub's own first upstream
 * (/run/systemd/resolve/resolv.conf); any other loopback forwarder is refused (see loopWarning).
 */
/** The resolv.conf the target's lookups read. A container's is in its own filesystem, seen through its init's root. */
function resolvConfOf(target: ResolvedTarget, paths: HostPaths): string {
  const hostConf = etcPath(paths, 'resolv.conf')
  const candidates =
    target.type === 'netns'
      ? [etcPath(paths, 'netns', target.name, 'resolv.conf'), hostConf]
      : target.type === 'container'
        ? [procPath(paths, target.initPid, 'root', 'etc', 'resolv.conf')]
        : [hostConf]
  return candidates.find((path) => existsSync(path)) ?? hostConf
}

export function upstreamFromResolvConf(target: ResolvedTarget, paths: HostPaths): { upstream: string; source: string } {
  const source = resolvConfOf(target, paths)
  const first = nameservers(source)[0]
  if (!first) throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `${source} names no nameserver to forward uncovered names to; give upstream in the spec`)
  if (!isLoopback(first)) return { upstream: first, source }
  const resolved = paths.resolvedConf ?? defaultHostPaths.resolvedConf
  if (first === SYSTEMD_RESOLVED_STUB && existsSync(resolved)) {
    const behind = nameservers(resolved).find((a) => !isLoopback(a))
    if (behind) return { upstream: behind, source: `${resolved} (behind the systemd-resolved stub in ${source})` }
  }
  throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `${source}: ${loopWarning(first)}; give upstream in the spec: the forwarder's own upstream`)
}

/**
 * The redirect acts on queries as they leave: a namespace with no route to any resolver (those its
 * resolv.conf names, and the upstream) cannot send a query at all — lookups fail with "network
 * unreachable" before any rule sees them — so the fault would report active and change nothing.
 * Refused instead.
 */
async function requireRouteToResolver(ns: NetnsRef, target: ResolvedTarget, paths: HostPaths, upstream: string): Promise<void> {
  const source = resolvConfOf(target, paths)
  let listed: string[] = []
  try {
    listed = nameservers(source)
  } catch {
    /* unreadable: the upstream came from the spec */
  }
  const servers = [...new Set([...listed, upstream])]
  const ip = toolPath('ip')
  for (const server of servers) {
    const res = await runInNetns(ns, [ip, 'route', 'get', server])
    if (res.code === 0) return
  }
  throw new FaultlineError(
    'FAULTLINE_ERR_TARGET_STATE',
    `${describeNetns(ns)} has no route to any resolver (${servers.join(', ')}; from ${source} and the upstream): its lookups fail already with "network unreachable", so network-dns would change nothing. Give the namespace a route to a resolver first, or fault one that has one`,
    { resolvers: servers, source },
  )
}

/** Local ports of every TCP and UDP socket in the namespace (`ss -Htuan`). */
async function portsInUse(ns: NetnsRef): Promise<Set<number>> {
  const res = await runInNetns(ns, [toolPath('ss'), '-Htuan'])
  if (res.code !== 0) throw failure(`ss -Htuan in ${describeNetns(ns)}`, res)
  const used = new Set<number>()
  for (const line of res.stdout.split('\n')) {
    const local = line.trim().split(/\s+/)[4]
    const port = local ? Number(/:(\d+)$/.exec(local)?.[1]) : NaN
    if (Number.isInteger(port)) used.add(port)
  }
  return used
}

/** The injection's nft table: conntrack zone for DNS flows, then the redirect. */
export function buildDnsTable(o: { table: string; port: number; gid: number; zone: number; comment: string }): string {
  return [
    `create table inet ${o.table}`,
    `table inet ${o.table} {`,
    `  comment ${JSON.stringify(o.comment)}`,
    '  chain zone_output {',
    '    type filter hook output priority raw; policy accept;',
    `    ip saddr 127.0.0.1 udp sport ${o.port} ct zone set ${o.zone}`,
    `    ip saddr 127.0.0.1 tcp sport ${o.port} ct zone set ${o.zone}`,
    `    ip6 saddr ::1 udp sport ${o.port} ct zone set ${o.zone}`,
    `    ip6 saddr ::1 tcp sport ${o.port} ct zone set ${o.zone}`,
    `    meta skgid ${o.gid} return`,
    `    udp dport 53 ct zone set ${o.zone}`,
    `    tcp dport 53 ct zone set ${o.zone}`,
    '  }',
    '  chain redirect_output {',
    `    type nat hook output priority ${NAT_PRIORITY}; policy accept;`,
    `    meta skgid ${o.gid} return`,
    `    udp dport 53 redirect to :${o.port}`,
    `    tcp dport 53 redirect to :${o.port}`,
    '  }',
    '}',
    '',
  ].join('\n')
}

/**
 * Breaks DNS for the target's own lookups: its port-53 traffic (UDP and TCP, IPv4 and IPv6) is
 * redirected to a small resolver the agent runs for the injection inside the target namespace,
 * which answers covered names per mode and forwards the rest to the real upstream.
 *
 * Mechanism, in one nft table owned by the injection (see buildDnsTable):
 * - redirect_output (nat, output): `udp/tcp dport 53 redirect to :PORT`. For locally generated
 *   packets the kernel rewrites the destination to 127.0.0.1 (::1 for IPv6), where the resolver
 *   listens; replies are un-NATed, so clients see the server they asked answering.
 * - Loop avoidance: the resolver runs as a group id derived from the injection id, and both chains
 *   start with `meta skgid GID return`: its own upstream queries go out untouched.
 * - zone_output (raw priority, before conntrack): the namespace's DNS flows are tracked in a
 *   conntrack zone of their own. NAT is decided once per conntrack entry, so without the zone a
 *   client that keeps one socket (conntrack entry refreshed by every query) would bypass the
 *   redirect for as long as it keeps querying when the namespace already tracks connections;
 *   and after recovery the entries bound to the dead resolver would outlive it. In the zone, the
 *   first packet after apply starts a new (redirected) entry, and the first packet after recovery
 *   falls back to the default zone, where no redirected entry exists.
 */
export const networkDns = defineFault(networkDnsSpec, {
  planSchema: Type.Object({
    ...UndoFields,
    script: Type.String(),
    port: Type.Integer(),
    gid: Type.Integer(),
    zone: Type.Integer(),
    upstream: Type.String(),
    upstreamSource: Type.String(),
    resolverArgv: Type.Array(Type.String()),
    steps: Type.Array(PlanStepSchema),
    claims: Type.Array(Type.String()),
  }),
  stateSchema: Type.Object({ ...UndoFields, resolver: Type.Optional(ProcessRefSchema) }),
  requires: ['tool:nft', 'nft:tables', 'nft:redirect'],
  exclusive: false,

  async gather(spec, target, ctx): Promise<DnsFacts> {
    answerRules(spec)
    const ns = netnsOf(target, ctx.paths)
    requireSameNetns(ns)
    let upstream: { upstream: string; source: string }
    if (spec.upstream !== undefined) {
      if (!ipaddr.isValid(spec.upstream)) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `upstream "${spec.upstream}" is not an IPv4 or IPv6 address`)
      if (isLoopback(spec.upstream)) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `upstream ${loopWarning(spec.upstream)}; give the forwarder's own upstream instead`)
      upstream = { upstream: ipaddr.process(spec.upstream).toString(), source: 'spec' }
    } else {
      upstream = upstreamFromResolvConf(target, ctx.paths)
    }
    await requireRouteToResolver(ns, target, ctx.paths, upstream.upstream)
    const taken = await portsInUse(ns)
    for (const plan of ctx.openPlans()) taken.add((plan as { port?: number }).port ?? 0)
    let port: number | undefined
    for (let i = 0; i < 100 && port === undefined; i++) {
      const candidate = randomInt(PORT_RANGE.min, PORT_RANGE.max + 1)
      if (!taken.has(candidate)) port = candidate
    }
    if (port === undefined) throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `no free port in ${PORT_RANGE.min}-${PORT_RANGE.max} inside ${describeNetns(ns)} for the resolver`)
    return { nft: toolPath('nft'), resolverCommand: resolverCommand(), upstream: upstream.upstream, upstreamSource: upstream.source, port }
  },

  plan(spec, target, ctx) {
    const rules = answerRules(spec)
    const ns = netnsOf(target, ctx.paths)
    const { nft, port, upstream } = ctx.facts
    const table = ownTableName(ctx.injectionId)
    const gid = resolverGid(ctx.injectionId)
    const zone = conntrackZone(ctx.injectionId)
    const config: ResolverConfig = { injectionId: ctx.injectionId, port, gid, upstream, ...rules, nft, table }
    const resolverArgv = inNetns(ns, [...ctx.facts.resolverCommand, JSON.stringify(config)])
    const script = buildDnsTable({ table, port, gid, zone, comment: `faultline network-dns ${ctx.injectionId}` })
    const covered = rules.mode === 'override' ? Object.keys(rules.records).join(', ') : rules.domains.length ? rules.domains.join(', ') : 'every name'
    return {
      netns: ns,
      nft,
      table,
      script,
      port,
      gid,
      zone,
      upstream,
      upstreamSource: ctx.facts.upstreamSource,
      resolverArgv,
      claims: [`dns-redirect:${ns.inode}`],
      steps: [
        {
          phase: 'apply' as const,
          action: 'spawn',
          detail: `start the injection's resolver in ${describeNetns(ns)} (detached, group ${gid}): listens on 127.0.0.1:${port} and [::1]:${port}, UDP and TCP; ${rules.mode} for ${covered}; forwards other names to ${upstream} (from ${ctx.facts.upstreamSource}); its pid and start time are journaled before the redirect exists`,
          argv: resolverArgv,
        },
        {
          phase: 'apply' as const,
          action: 'exec',
          detail: `redirect port 53 (UDP and TCP) to the resolver: create table inet ${table} in ${describeNetns(ns)} with:\n${script}`,
          argv: inNetns(ns, [nft, '-f', '-']),
        },
        {
          phase: 'recover' as const,
          action: 'exec',
          detail: `delete table inet ${table} (only ours; gone counts as recovered)`,
          argv: inNetns(ns, [nft, 'delete', 'table', 'inet', table]),
        },
        {
          phase: 'recover' as const,
          action: 'signal',
          detail: 'SIGKILL to exactly the resolver (pidfd + recorded start time); a resolver that already exited counts as recovered',
        },
      ],
    }
  },

  undoFromPlan: (plan) => ({ netns: plan.netns, nft: plan.nft, table: plan.table }),

  async apply(plan, ctx) {
    const undo = { netns: plan.netns, nft: plan.nft, table: plan.table }
    requireSameNetns(plan.netns)
    const resolver = await startResolver(plan.resolverArgv, {
      procRoot: ctx.paths.procRoot,
      log: ctx.log,
      started: (proc) => ctx.checkpoint({ ...undo, resolver: proc }),
    })
    ctx.log.debug({ pid: resolver.pid, listening: resolver.listening }, 'DNS fault resolver ready')
    await createNftTable(plan.netns, plan.nft, { family: 'inet', name: plan.table, script: plan.script })
    return { ...undo, resolver: { pid: resolver.pid, startTime: resolver.startTime } }
  },

  async recover(state, ctx) {
    const notes: string[] = []
    const table = await deleteNftTable(state.netns, state.nft, state.table)
    if (table.note) notes.push(table.note)
    if (state.resolver) {
      const stopped = await stopResolver(ctx.paths.procRoot, state.resolver)
      if (stopped.note) notes.push(stopped.note)
    } else {
      notes.push('no resolver was recorded (the agent stopped before starting one; a resolver it had just started exits by itself once the agent is gone)')
    }
    return notes.length > 0 ? { note: notes.join('; ') } : {}
  },
})
