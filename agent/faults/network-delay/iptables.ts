import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { Type, type Static } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import type { PlanStep } from '../../../protocol/plan.js'
import { findProgram, run } from '../../exec.js'
import { describeNetns, inNetns, netnsStatus, type NetnsRef } from '../../net/netns.js'
import { failure, requireSameNetns, runInNetns, type PeerFacts } from '../shared/network.js'

/**
 * The iptables side of network-delay's NFQUEUE mechanism: one chain per injection and
 * direction in the mangle table, reached by one jump appended to OUTPUT (egress) or INPUT
 * (ingress). In the chain: RETURN for the protected control-channel ports, then the filter
 * match -> NFQUEUE --queue-bypass (if the helper is gone, traffic passes instead of being
 * black-holed).
 *
 * The jump is appended, not inserted: a queued packet that is accepted resumes at the next
 * netfilter hook, skipping the rest of this table's chain, so being last keeps every mangle rule
 * that was there before (MARKs for policy routing, say) in force for delayed packets.
 *
 * Backend: iptables-legacy when it is installed and the kernel has x_tables (it leaves no trace
 * in the nft ruleset); otherwise iptables-nft, whose "table ip mangle" / "table ip6 mangle" is
 * deleted at recovery when it did not exist before and nothing else is in it.
 */

export type Backend = 'legacy' | 'nft'
export type Family = 'ipv4' | 'ipv6'
type Hook = 'OUTPUT' | 'INPUT'

export const FamilyToolsSchema = Type.Object({
  family: Type.Enum(['ipv4', 'ipv6']),
  backend: Type.Enum(['legacy', 'nft']),
  iptables: Type.String(),
  restore: Type.String(),
})
export type FamilyTools = Static<typeof FamilyToolsSchema>

export const ChainSchema = Type.Object({ name: Type.String(), hook: Type.Enum(['OUTPUT', 'INPUT']), comment: Type.String() })

/** What recovery needs for one address family: the tool, our chains, and the nft table to tidy. */
export const RuleSetStateSchema = Type.Object({
  ...FamilyToolsSchema.properties,
  chains: Type.Array(ChainSchema),
  /**
   * nft backend only: whether our apply found the table absent (or holding nothing but other
   * Faultline chains), so recovery may delete it once it is empty. Unknown (absent) = keep it.
   */
  nftTableOwned: Type.Optional(Type.Boolean()),
  nft: Type.Optional(Type.String()),
})
export type RuleSetState = Static<typeof RuleSetStateSchema>

export const RuleSetPlanSchema = Type.Object({ ...RuleSetStateSchema.properties, script: Type.String() })
export type RuleSetPlan = Static<typeof RuleSetPlanSchema>

/** "FL-" + 10 hex characters of the id's hash (+ "-out"/"-in"): well under iptables' 28. */
export function chainBase(injectionId: string): string {
  return `FL-${createHash('sha256').update(injectionId).digest('hex').slice(0, 10)}`
}

export interface IptablesFacts {
  backend: Backend
  families: FamilyTools[]
  /** nft, for tidying iptables-nft's tables (nft backend only). */
  nft?: string
  /** Why IPv6 is left out although the filter would include it. */
  ipv6Note?: string
}

function backendOf(iptables: string): Promise<Backend | undefined> {
  return run([iptables, '-V']).then(
    (r) => (/nf_tables/.test(r.stdout) ? 'nft' : /legacy/.test(r.stdout) || r.code === 0 ? 'legacy' : undefined),
    () => undefined,
  )
}

/**
 * The iptables programs to use for the families the filter needs. Legacy first when the
 * kernel has x_tables for that family (/proc/net/ip_tables_names exists once ip_tables is in).
 */
export async function gatherIptables(procRoot: string, peers: PeerFacts): Promise<IptablesFacts> {
  const wanted: Family[] = []
  const anyPeers = peers.v4.length > 0 || peers.v6.length > 0
  if (!anyPeers || peers.v4.length > 0) wanted.push('ipv4')
  if (!anyPeers || peers.v6.length > 0) wanted.push('ipv6')
  const legacyKernel = { ipv4: existsSync(join(procRoot, 'net', 'ip_tables_names')), ipv6: existsSync(join(procRoot, 'net', 'ip6_tables_names')) }
  const name = (f: Family) => (f === 'ipv4' ? 'iptables' : 'ip6tables')
  const pick = async (f: Family, backend: Backend): Promise<FamilyTools | undefined> => {
    const iptables = findProgram(`${name(f)}-${backend}`)
    const restore = findProgram(`${name(f)}-${backend}-restore`)
    if (iptables && restore && (backend === 'nft' || legacyKernel[f])) return { family: f, backend, iptables, restore }
    // Distributions without the -legacy/-nft names (iptables < 1.8) ship one backend as "iptables".
    const plain = findProgram(name(f))
    const plainRestore = findProgram(`${name(f)}-restore`)
    if (plain && plainRestore && (await backendOf(plain)) === backend && (backend === 'nft' || legacyKernel[f])) {
      return { family: f, backend, iptables: plain, restore: plainRestore }
    }
    return undefined
  }
  for (const backend of ['legacy', 'nft'] as const) {
    const v4 = wanted.includes('ipv4') ? await pick('ipv4', backend) : undefined
    if (wanted.includes('ipv4') && !v4) continue
    const v6 = wanted.includes('ipv6') ? await pick('ipv6', backend) : undefined
    if (peers.v6.length > 0 && !v6) continue
    const nft = backend === 'nft' ? findProgram('nft') : undefined
    if (backend === 'nft' && !nft) continue
    const families = [v4, v6].filter((f): f is FamilyTools => f !== undefined)
    const facts: IptablesFacts = { backend, families, ...(nft ? { nft } : {}) }
    if (wanted.includes('ipv6') && !v6) facts.ipv6Note = `IPv6 traffic is not delayed: no ${name('ipv6')} for the ${backend} backend`
    return facts
  }
  throw new FaultlineError(
    'FAULTLINE_ERR_UNSUPPORTED',
    `network-delay's NFQUEUE mechanism needs ${wanted.map((f) => `${name(f)}-legacy or ${name(f)}-nft`).join(' and ')} (Debian package iptables)`,
  )
}

export interface NfqueueMatch {
  peers: PeerFacts
  ports?: number[]
  localPorts?: number[]
  protocol: 'tcp' | 'udp' | 'icmp' | 'all'
  device?: string
}

const chunks = <T>(xs: readonly T[], n: number): T[][] => {
  const out: T[][] = []
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n))
  return out
}

/** iptables match arguments for one direction and family, one list per rule. */
export function iptablesMatches(direction: 'egress' | 'ingress', family: Family, m: NfqueueMatch): string[][] {
  const out = direction === 'egress'
  const iface = m.device ? [out ? '-o' : '-i', m.device] : []
  const peers = family === 'ipv4' ? m.peers.v4 : m.peers.v6
  const hasPorts = Boolean(m.ports?.length || m.localPorts?.length)
  if (m.protocol === 'icmp' && hasPorts) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'ports and localPorts need protocol tcp, udp or all, not icmp')
  const protocols: (string | null)[] =
    m.protocol === 'all' ? (hasPorts ? ['tcp', 'udp'] : [null]) : m.protocol === 'icmp' ? [family === 'ipv4' ? 'icmp' : 'ipv6-icmp'] : [m.protocol]
  // multiport takes at most 15 ports per match
  const remote = m.ports?.length ? chunks(m.ports, 15) : [null]
  const local = m.localPorts?.length ? chunks(m.localPorts, 15) : [null]
  const rules: string[][] = []
  for (const peer of peers.length > 0 ? peers : [null]) {
    for (const proto of protocols) {
      for (const r of proto === 'tcp' || proto === 'udp' ? remote : [null]) {
        for (const l of proto === 'tcp' || proto === 'udp' ? local : [null]) {
          const rule = [...iface]
          if (peer) rule.push(out ? '-d' : '-s', peer)
          if (proto) rule.push('-p', proto)
          if (r) rule.push('-m', 'multiport', out ? '--dports' : '--sports', r.join(','))
          if (l) rule.push('-m', 'multiport', out ? '--sports' : '--dports', l.join(','))
          rules.push(rule)
        }
      }
    }
  }
  return rules
}

/** The iptables-restore input for one family: our chains, their rules and the jumps, atomically. */
export function buildRuleSet(opts: {
  tools: FamilyTools
  nft?: string
  injectionId: string
  direction: 'egress' | 'ingress' | 'both'
  match: NfqueueMatch
  queue: number
  protectedTcpPorts: number[]
}): RuleSetPlan {
  const base = chainBase(opts.injectionId)
  const dirs: ('egress' | 'ingress')[] = opts.direction === 'both' ? ['egress', 'ingress'] : [opts.direction]
  const chains = dirs.map((d) => ({
    name: `${base}-${d === 'egress' ? 'out' : 'in'}`,
    hook: (d === 'egress' ? 'OUTPUT' : 'INPUT') as Hook,
    comment: `faultline network-delay ${opts.injectionId}`,
  }))
  const lines = ['*mangle', ...chains.map((c) => `:${c.name} - [0:0]`)]
  dirs.forEach((dir, i) => {
    const chain = chains[i]!.name
    for (const port of opts.protectedTcpPorts) {
      lines.push(`-A ${chain} -p tcp -m tcp --sport ${port} -j RETURN`, `-A ${chain} -p tcp -m tcp --dport ${port} -j RETURN`)
    }
    for (const match of iptablesMatches(dir, opts.tools.family as Family, opts.match)) {
      lines.push(['-A', chain, ...match, '-j', 'NFQUEUE', '--queue-num', String(opts.queue), '--queue-bypass'].join(' '))
    }
  })
  for (const c of chains) lines.push(`-A ${c.hook} -m comment --comment "${c.comment}" -j ${c.name}`)
  lines.push('COMMIT', '')
  return { ...opts.tools, chains, ...(opts.nft ? { nft: opts.nft } : {}), script: lines.join('\n') }
}

export function restoreArgv(ns: NetnsRef, r: { restore: string }): string[] {
  return inNetns(ns, [r.restore, '-w', '--noflush'])
}

function jumpArgs(c: Static<typeof ChainSchema>): string[] {
  return ['-m', 'comment', '--comment', c.comment, '-j', c.name]
}

export function removalArgv(ns: NetnsRef, r: RuleSetState): string[][] {
  const ipt = (...args: string[]) => inNetns(ns, [r.iptables, '-w', '-t', 'mangle', ...args])
  return r.chains.flatMap((c) => [ipt('-D', c.hook, ...jumpArgs(c)), ipt('-F', c.name), ipt('-X', c.name)])
}

export function nftTableName(r: { family: string }): ['ip' | 'ip6', 'mangle'] {
  return [r.family === 'ipv4' ? 'ip' : 'ip6', 'mangle']
}

export function ruleSetSteps(ns: NetnsRef, r: RuleSetPlan): PlanStep[] {
  const steps: PlanStep[] = [
    {
      phase: 'apply',
      action: 'exec',
      detail: `${r.family} (${r.backend}): create ${r.chains.map((c) => `${c.name} <- ${c.hook}`).join(', ')} in the mangle table of ${describeNetns(ns)}, atomically, with:\n${r.script}`,
      argv: restoreArgv(ns, r),
    },
  ]
  for (const argv of removalArgv(ns, r)) {
    steps.push({ phase: 'recover', action: 'exec', detail: 'remove our jump, then our chain (gone counts as removed)', argv })
  }
  if (r.backend === 'nft' && r.nft) {
    const [family, table] = nftTableName(r)
    steps.push({
      phase: 'recover',
      action: 'exec',
      detail: `delete table ${family} ${table} if iptables-nft created it for us (it did not exist before) and it is now empty`,
      argv: inNetns(ns, [r.nft, 'delete', 'table', family, table]),
    })
  }
  return steps
}

// ---- acting on the host ------------------------------------------------------------------------

interface NftTableJson {
  nftables: ({ chain?: { name: string; hook?: string; policy?: string } } & { rule?: { chain: string; expr: { jump?: { target: string } }[] } })[]
}

/** What an iptables-nft table holds besides Faultline's chains and the jumps to them. */
async function nftTableContent(ns: NetnsRef, nft: string, family: 'ip' | 'ip6'): Promise<{ exists: boolean; foreign: boolean; ours: boolean; empty: boolean }> {
  const res = await runInNetns(ns, [nft, '-j', 'list', 'table', family, 'mangle'])
  if (res.code !== 0) {
    if (/No such file or directory/.test(res.stderr)) return { exists: false, foreign: false, ours: false, empty: true }
    throw failure(`nft list table ${family} mangle`, res)
  }
  const items = (JSON.parse(res.stdout) as NftTableJson).nftables
  const ours = (name: string) => name.startsWith('FL-')
  let foreign = false
  let hasOurs = false
  let empty = true
  for (const item of items) {
    if (item.chain) {
      if (!item.chain.hook) {
        empty = false
        if (ours(item.chain.name)) hasOurs = true
        else foreign = true
      } else if (item.chain.policy && item.chain.policy !== 'accept') {
        foreign = true
        empty = false
      }
    }
    if (item.rule) {
      empty = false
      const jumpsToOurs = item.rule.expr.some((e) => e.jump && ours(e.jump.target))
      if (!ours(item.rule.chain) && !jumpsToOurs) foreign = true
    }
  }
  return { exists: true, foreign, ours: hasOurs, empty }
}

/**
 * Before our rules go in (nft backend): may recovery delete the table? Yes when it does not
 * exist yet (iptables-nft will create it for us) or holds nothing but other Faultline
 * injections' chains (one of them had it created). An empty table someone left is kept.
 */
export async function nftTableOwnership(ns: NetnsRef, r: RuleSetState): Promise<boolean> {
  if (r.backend !== 'nft' || !r.nft) return false
  const content = await nftTableContent(ns, r.nft, nftTableName(r)[0])
  return !content.exists || (content.ours && !content.foreign)
}

export async function applyRuleSet(ns: NetnsRef, r: RuleSetPlan): Promise<void> {
  requireSameNetns(ns)
  const res = await run(restoreArgv(ns, r), { input: r.script })
  if (res.code !== 0) throw failure(`${r.restore} (${r.chains.map((c) => c.name).join(', ')})`, res)
}

/** iptables' words for "no such rule / chain": for recovery that means already removed. */
const GONE = /No chain\/target\/match by that name|Couldn't load target|does a matching rule exist|does not exist|No such file or directory/

/** Removes our jumps and chains (each may already be gone), then tidies iptables-nft's table. */
export async function removeRuleSet(ns: NetnsRef, r: RuleSetState): Promise<string | undefined> {
  const status = netnsStatus(ns)
  if (status !== 'same') return `${describeNetns(ns)} is ${status === 'gone' ? 'gone' : 'now a different namespace'}; no rules to remove`
  for (const c of r.chains) {
    const ipt = (...args: string[]) => runInNetns(ns, [r.iptables, '-w', '-t', 'mangle', ...args])
    // A jump appended twice (never by us, but cheap to be sure) is removed as often as it is there.
    for (let i = 0; i < 8; i++) {
      const res = await ipt('-D', c.hook, ...jumpArgs(c))
      if (res.code === 0) continue
      if (GONE.test(res.stderr)) break
      throw failure(`iptables -D ${c.hook} -j ${c.name}`, res)
    }
    for (const op of ['-F', '-X']) {
      const res = await ipt(op, c.name)
      if (res.code !== 0 && !GONE.test(res.stderr)) throw failure(`iptables ${op} ${c.name}`, res)
    }
  }
  if (r.backend === 'nft' && r.nft && r.nftTableOwned) {
    const [family, table] = nftTableName(r)
    const content = await nftTableContent(ns, r.nft, family)
    if (content.exists && content.empty) {
      const res = await runInNetns(ns, [r.nft, 'delete', 'table', family, table])
      if (res.code !== 0 && !/No such file or directory/.test(res.stderr)) throw failure(`nft delete table ${family} ${table}`, res)
    }
  }
  return undefined
}
