import { createHash } from 'node:crypto'
import { Type, type Static } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import type { PeerFacts } from '../shared/network.js'
import { formatRate, type Shaping } from './units.js'

/**
 * Pure construction of the tc and ip commands of a network-bandwidth injection. Nothing here
 * touches the host: the plan (and dryRun) shows exactly these argv, and apply runs exactly them.
 */

// ---- resources an injection creates (what recovery removes) --------------------------------

export const ResourceSchema = Type.Union([
  /** Our IFB link; deleting it deletes its tbf too. */
  Type.Object({ type: Type.Literal('ifb'), name: Type.String() }),
  /** Our root qdisc on the device (tbf, or htb with its class, leaf and filters). */
  Type.Object({ type: Type.Literal('root-qdisc'), device: Type.String(), handle: Type.String() }),
  /** The device's ingress qdisc, only when it did not exist before. */
  Type.Object({ type: Type.Literal('ingress-qdisc'), device: Type.String() }),
  /** Our u32 filters at one preference (and protocol) of the device's ingress hook. */
  Type.Object({ type: Type.Literal('ingress-filter'), device: Type.String(), prio: Type.Integer(), protocol: Type.String() }),
])
export type Resource = Static<typeof ResourceSchema>

export const OpSchema = Type.Object({
  /** argv inside the target namespace (the plan's steps show it wrapped in nsenter). */
  argv: Type.Array(Type.String()),
  /** What this command creates: recorded in the undo state (checkpoint) before it runs. */
  creates: Type.Optional(ResourceSchema),
  detail: Type.String(),
})
export type Op = Static<typeof OpSchema>

// ---- names and handles owned by one injection -------------------------------------------------

function idHash(injectionId: string): string {
  return createHash('sha256').update(injectionId).digest('hex')
}

/** "flb" + 10 hex digits of sha256(id): 13 characters, within IFNAMSIZ (15). */
export function ifbName(injectionId: string): string {
  return `flb${idHash(injectionId).slice(0, 10)}`
}

/**
 * The qdisc handle major of the injection, from its id, in 1000..7ffe: below the range tc
 * auto-assigns (8000 and up) and ffff (ingress); major + 1 is the htb leaf's handle.
 */
export function handleMajor(injectionId: string): number {
  return 0x1000 + (parseInt(idHash(injectionId).slice(0, 8), 16) % 0x6fff)
}

const hex = (n: number) => n.toString(16)

// ---- u32 matches ---------------------------------------------------------------------------------

export interface TrafficFilter {
  peers: PeerFacts
  ports?: number[]
  localPorts?: number[]
  protocol?: 'tcp' | 'udp' | 'icmp' | 'all'
}

export interface U32Filter {
  protocol: 'ip' | 'ipv6' | 'all'
  /** u32 selector tokens, e.g. ["match", "ip", "dst", "10.0.0.0/8"]. */
  match: string[]
}

/** At most this many u32 filters per direction (one tc command each). */
export const MAX_FILTERS = 64

export function isFiltered(f: TrafficFilter): boolean {
  return f.peers.v4.length + f.peers.v6.length > 0 || Boolean(f.ports?.length || f.localPorts?.length) || (f.protocol !== undefined && f.protocol !== 'all')
}

const protoNumber = { ip: { tcp: 6, udp: 17, icmp: 1 }, ipv6: { tcp: 6, udp: 17, icmp: 58 } } as const

/**
 * The u32 filters selecting the traffic of one direction (egress: peers are destinations, ports
 * destination ports; ingress: the reverse). Without filter fields: one filter for all traffic.
 *
 * u32 reads ports at fixed offsets (IPv4: 20 + 0/2, IPv6: 40 + 0/2). So that it never reads the
 * wrong bytes, IPv4 port filters also require a 20-byte header (IHL 5) and fragment offset 0,
 * and IPv6 port filters require TCP/UDP as the first next header: packets with IP options,
 * later fragments or IPv6 extension headers are left unshaped rather than shaped by mistake.
 */
export function u32Filters(direction: 'egress' | 'ingress', f: TrafficFilter): U32Filter[] {
  if (!isFiltered(f)) return [{ protocol: 'all', match: ['match', 'u32', '0', '0'] }]
  const out = direction === 'egress'
  const hasPorts = Boolean(f.ports?.length || f.localPorts?.length)
  const protocol = f.protocol ?? 'all'
  if (protocol === 'icmp' && hasPorts) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'ports and localPorts need protocol tcp, udp or all, not icmp')
  const havePeers = f.peers.v4.length + f.peers.v6.length > 0
  const families: { family: 'ip' | 'ipv6'; addrs: (string | null)[] }[] = havePeers
    ? [
        ...(f.peers.v4.length ? [{ family: 'ip' as const, addrs: f.peers.v4 }] : []),
        ...(f.peers.v6.length ? [{ family: 'ipv6' as const, addrs: f.peers.v6 }] : []),
      ]
    : [
        { family: 'ip', addrs: [null] },
        { family: 'ipv6', addrs: [null] },
      ]
  const protocols: ('tcp' | 'udp' | 'icmp' | null)[] = protocol === 'all' ? (hasPorts ? ['tcp', 'udp'] : [null]) : [protocol]
  const remote: (number | null)[] = f.ports?.length ? f.ports : [null]
  const local: (number | null)[] = f.localPorts?.length ? f.localPorts : [null]
  const count = families.reduce((n, fam) => n + fam.addrs.length, 0) * protocols.length * remote.length * local.length
  if (count > MAX_FILTERS) {
    throw new FaultlineError(
      'FAULTLINE_ERR_VALIDATION',
      `these peers, ports and protocols need ${count} tc filters per direction (at most ${MAX_FILTERS}): use CIDRs instead of single addresses, or fewer ports`,
    )
  }
  const filters: U32Filter[] = []
  for (const { family, addrs } of families) {
    const sel = family === 'ip' ? 'ip' : 'ip6'
    for (const addr of addrs) {
      for (const proto of protocols) {
        for (const rp of remote) {
          for (const lp of local) {
            const match: string[] = []
            if (addr) match.push('match', sel, out ? 'dst' : 'src', addr)
            if (proto) match.push('match', sel, 'protocol', String(protoNumber[family][proto]), '0xff')
            if (hasPorts && family === 'ip') match.push('match', 'u8', '0x05', '0x0f', 'at', '0', 'match', 'u16', '0x0000', '0x1fff', 'at', '6')
            if (rp !== null) match.push('match', sel, out ? 'dport' : 'sport', String(rp), '0xffff')
            if (lp !== null) match.push('match', sel, out ? 'sport' : 'dport', String(lp), '0xffff')
            filters.push({ protocol: family, match })
          }
        }
      }
    }
  }
  return filters
}

// ---- commands --------------------------------------------------------------------------------------

export interface BuildInput {
  tc: string
  ip: string
  device: string
  /** MTU + 14: htb's quantum. */
  frameBytes: number
  injectionId: string
  shaping: Shaping
  /** Filters for the device's egress, or undefined when egress is not shaped. */
  egress?: U32Filter[]
  ingress?: {
    filters: U32Filter[]
    /** false when the device already has an ingress (or clsact) qdisc: then only filters are added. */
    createQdisc: boolean
    /** The free ingress preference for each filter protocol used. */
    prios: Partial<Record<U32Filter['protocol'], number>>
  }
}

export function tbfArgs(s: Shaping): string[] {
  return ['tbf', 'rate', formatRate(s.rateBps), 'burst', `${s.burstBytes}b`, 'limit', `${s.limitBytes}b`]
}

/** The ordered commands that apply the shaping; each creating command names what it creates. */
export function buildOps(input: BuildInput): Op[] {
  const { tc, ip, device, shaping } = input
  const major = handleMajor(input.injectionId)
  const handle = `${hex(major)}:`
  const rate = formatRate(shaping.rateBps)
  const ops: Op[] = []

  if (input.egress) {
    const filters = input.egress
    if (filters.length === 1 && filters[0]!.protocol === 'all') {
      ops.push({
        argv: [tc, 'qdisc', 'add', 'dev', device, 'root', 'handle', handle, ...tbfArgs(shaping)],
        creates: { type: 'root-qdisc', device, handle },
        detail: `egress: tbf ${handle} as the root qdisc of ${device}: every packet leaving ${device} at ${rate}`,
      })
    } else {
      const cls = `${hex(major)}:1`
      ops.push(
        {
          argv: [tc, 'qdisc', 'add', 'dev', device, 'root', 'handle', handle, 'htb', 'default', '0'],
          creates: { type: 'root-qdisc', device, handle },
          detail: `egress: htb ${handle} as the root qdisc of ${device}; unmatched traffic takes htb's direct (unshaped) path`,
        },
        {
          // The tbf leaf below paces the class; htb's own bucket is as deep as the leaf's queue
          // so that it never throttles on top of tbf (with equal buckets the two timers beat and
          // the measured rate dips by up to 5 %), while the long-run rate is still capped at rate.
          argv: [tc, 'class', 'add', 'dev', device, 'parent', handle, 'classid', cls, 'htb', 'rate', rate, 'ceil', rate, 'burst', `${shaping.limitBytes}b`, 'cburst', `${shaping.limitBytes}b`, 'quantum', String(input.frameBytes)],
          detail: `egress: the shaped class ${cls} at ${rate}`,
        },
        {
          argv: [tc, 'qdisc', 'add', 'dev', device, 'parent', cls, 'handle', `${hex(major + 1)}:`, ...tbfArgs(shaping)],
          detail: `egress: tbf leaf of ${cls}: splits TSO/GSO packets into frames so the shaped flow is paced frame by frame`,
        },
      )
      const prioOf = { ip: 1, ipv6: 2, all: 1 } as const
      for (const f of filters) {
        ops.push({
          argv: [tc, 'filter', 'add', 'dev', device, 'parent', handle, 'prio', String(prioOf[f.protocol]), 'protocol', f.protocol, 'u32', ...f.match, 'flowid', cls],
          detail: `egress: steer matching ${f.protocol} packets into ${cls}`,
        })
      }
    }
  }

  if (input.ingress) {
    const ifb = ifbName(input.injectionId)
    ops.push(
      {
        argv: [ip, 'link', 'add', ifb, 'type', 'ifb'],
        creates: { type: 'ifb', name: ifb },
        detail: `ingress: create the injection's own IFB device ${ifb}`,
      },
      {
        argv: [tc, 'qdisc', 'add', 'dev', ifb, 'root', 'handle', handle, ...tbfArgs(shaping)],
        detail: `ingress: tbf on ${ifb} at ${rate}`,
      },
      { argv: [ip, 'link', 'set', 'dev', ifb, 'up'], detail: `ingress: bring ${ifb} up` },
    )
    if (input.ingress.createQdisc) {
      ops.push({
        argv: [tc, 'qdisc', 'add', 'dev', device, 'handle', 'ffff:', 'ingress'],
        creates: { type: 'ingress-qdisc', device },
        detail: `ingress: add the ingress qdisc to ${device} (it has none)`,
      })
    }
    const started = new Set<string>()
    for (const f of input.ingress.filters) {
      const prio = input.ingress.prios[f.protocol]
      if (prio === undefined) throw new Error(`no ingress preference allocated for protocol ${f.protocol}`)
      const first = !started.has(f.protocol)
      started.add(f.protocol)
      ops.push({
        argv: [tc, 'filter', 'add', 'dev', device, 'ingress', 'prio', String(prio), 'protocol', f.protocol, 'u32', ...f.match, 'action', 'mirred', 'egress', 'redirect', 'dev', ifb],
        ...(first ? { creates: { type: 'ingress-filter' as const, device, prio, protocol: f.protocol } } : {}),
        detail: `ingress: redirect matching ${f.protocol} packets arriving on ${device} to ${ifb} (preference ${prio}, ours alone)`,
      })
    }
  }
  return ops
}

/** The command that removes one resource (recovery runs them in reverse order of creation). */
export function removeArgv(tools: { tc: string; ip: string }, r: Resource): string[] {
  switch (r.type) {
    case 'ifb':
      return [tools.ip, 'link', 'del', 'dev', r.name]
    case 'root-qdisc':
      // With the handle given, the kernel deletes the root only if it is still ours ("Invalid handle" otherwise).
      return [tools.tc, 'qdisc', 'del', 'dev', r.device, 'root', 'handle', r.handle]
    case 'ingress-qdisc':
      // "ingress" also names the kind: a clsact someone else put there is never deleted by this.
      return [tools.tc, 'qdisc', 'del', 'dev', r.device, 'ingress']
    case 'ingress-filter':
      return [tools.tc, 'filter', 'del', 'dev', r.device, 'ingress', 'prio', String(r.prio), 'protocol', r.protocol]
  }
}

export function describeResource(r: Resource): string {
  switch (r.type) {
    case 'ifb':
      return `IFB device ${r.name}`
    case 'root-qdisc':
      return `root qdisc ${r.handle} of ${r.device}`
    case 'ingress-qdisc':
      return `ingress qdisc of ${r.device}`
    case 'ingress-filter':
      return `ingress filters of ${r.device} at preference ${r.prio} (${r.protocol})`
  }
}
