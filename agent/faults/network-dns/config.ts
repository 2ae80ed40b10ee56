// What the agent tells the fake resolver, and the name matching both sides share. No imports
// beyond node and the import-free name grammar of the spec: this module is loaded by the
// resolver process too, which should start fast.
import { createHash } from 'node:crypto'
import { DNS_NAME_PATTERN, type DnsMode } from '../../../protocol/faults/dns-names.js'

export type { DnsMode } from '../../../protocol/faults/dns-names.js'

/** How the resolver answers: everything it needs to decide about one query. */
export interface AnswerRules {
  mode: DnsMode
  /** Normalised name patterns ("example.com", "*.example.com"); empty = every name. Not for override. */
  domains: string[]
  /** override: normalised name pattern -> IPv4 or IPv6 address. */
  records: Record<string, string>
  /** override: TTL of the synthesised answers, in seconds. */
  ttl: number
}

/** The resolver's whole configuration: one JSON argument on its command line (shown in the plan). */
export interface ResolverConfig extends AnswerRules {
  injectionId: string
  /** Port it listens on, UDP and TCP, on 127.0.0.1 and ::1 inside the target namespace. */
  port: number
  /** Group id the resolver runs as: the nft tables exempt exactly the sockets of this group. */
  gid: number
  /** Where names the fault does not cover are forwarded (port 53). */
  upstream: string
  /** To remove its own redirect when the agent dies (see resolver.ts). */
  nft: string
  table: string
}

const namePatternRe = new RegExp(DNS_NAME_PATTERN)

export function isNamePattern(text: string): boolean {
  return text.length <= 255 && namePatternRe.test(text)
}

/** Lower case without the trailing dot: DNS names compare case-insensitively (RFC 4343). */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '')
}

/**
 * Whether `name` (normalised) is covered by `pattern` (normalised): "example.com" covers exactly
 * that name; "*.example.com" covers every name below it ("a.example.com", "a.b.example.com") but
 * not "example.com" itself — list both to cover the apex too.
 */
export function nameMatches(name: string, pattern: string): boolean {
  if (pattern.startsWith('*.')) return name.endsWith(pattern.slice(1))
  return name === pattern
}

/** The record for a name: an exact key first, then the longest matching wildcard. */
export function findRecord(name: string, records: Record<string, string>): string | undefined {
  if (Object.hasOwn(records, name)) return records[name]
  let best: { pattern: string; address: string } | undefined
  for (const [pattern, address] of Object.entries(records)) {
    if (pattern.startsWith('*.') && nameMatches(name, pattern) && (!best || pattern.length > best.pattern.length)) best = { pattern, address }
  }
  return best?.address
}

export function isCovered(name: string, rules: AnswerRules): boolean {
  if (rules.mode === 'override') return findRecord(name, rules.records) !== undefined
  return rules.domains.length === 0 || rules.domains.some((p) => nameMatches(name, p))
}

function hash32(text: string, salt: string): number {
  return createHash('sha256').update(`${salt}:${text}`).digest().readUInt32BE(0)
}

/**
 * The group id the injection's resolver runs as, derived from the injection id in
 * 2000000000-2099999999: above the ranges handed to users, groups and container user namespaces
 * (systemd-nspawn's ends at 1879048191) and below systemd's "foreign" range (2147352576) and
 * 2^31, so tools that print ids as signed numbers show it as it is. No other process carries it.
 */
export function resolverGid(injectionId: string): number {
  return 2_000_000_000 + (hash32(injectionId, 'gid') % 100_000_000)
}

/** The conntrack zone the injection's DNS flows are tracked in (61440-65279; see index.ts). */
export function conntrackZone(injectionId: string): number {
  return 0xf000 + (hash32(injectionId, 'zone') % 0x0f00)
}
