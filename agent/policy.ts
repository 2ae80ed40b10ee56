import { lstatSync, readFileSync, statSync } from 'node:fs'
import { posix } from 'node:path'
import ipaddr from 'ipaddr.js'
import { Value } from 'typebox/value'
import { parse as parseYaml } from 'yaml'
import { ConfigError } from '../common/config.js'
import { DURATION_PATTERN, formatDuration, parseDuration } from '../protocol/duration.js'
import { FaultlineError } from '../protocol/errors.js'
import { faultSpecNamed, type FaultKindName } from '../protocol/faults/index.js'
import { RATE_PATTERN } from '../protocol/faults/network-bandwidth.js'
import { OFFSET_PATTERN } from '../protocol/faults/time-skew.js'
import type { CreateInjectionBody } from '../protocol/injection.js'
import { HostPolicySchema, type HostPolicy, type PolicyBound, type PolicyInForce, type PolicyTargetRule } from '../protocol/policy.js'
import { describeTarget, type ResolvedTarget } from '../protocol/target.js'
import { SIZE_OR_PERCENT_PATTERN, SIZE_PATTERN, parseSize } from '../protocol/units.js'
import { parseRate } from './faults/network-bandwidth/units.js'
import { parseOffset } from './faults/time-skew/offset.js'
import { procPath, type HostPaths } from './host-paths.js'
import { imageMatches } from './targets/containers/index.js'

/**
 * The host policy (protocol/policy.ts) as the agent enforces it: loaded once at start from a
 * file the host's owner wrote, checked in the injector's first two steps for every request,
 * whoever sends it (the API, the CLI, the server over the link). A refusal is 403
 * FAULTLINE_ERR_POLICY with the rule that refused, before anything looks at the host beyond
 * resolving the target.
 */

/** A parameter the policy can bound, read in that parameter's own grammar. */
interface Quantity {
  /** "a duration", "a size", ... for messages. */
  what: string
  /** The value as a comparable number and its unit ("" for plain numbers, "%" for percentages). */
  read(value: unknown): { n: number; unit: string }
  show(n: number, unit: string): string
}

const plain: Quantity = {
  what: 'a number',
  read: (v) => {
    if (typeof v !== 'number') throw new Error('not a number')
    return { n: v, unit: '' }
  },
  show: (n) => String(n),
}

const quantities: { pattern: string; q: Quantity }[] = [
  { pattern: DURATION_PATTERN, q: { what: 'a duration', read: (v) => ({ n: parseDuration(String(v)), unit: 'ms' }), show: (n) => formatDuration(n) } },
  { pattern: OFFSET_PATTERN, q: { what: 'an offset (either direction)', read: (v) => ({ n: Math.abs(parseOffset(String(v))), unit: 'ms' }), show: (n) => formatDuration(n) } },
  { pattern: SIZE_PATTERN, q: { what: 'a size', read: (v) => ({ n: parseSize(String(v)), unit: 'B' }), show: (n) => `${n} bytes` } },
  {
    pattern: SIZE_OR_PERCENT_PATTERN,
    q: {
      what: 'a size or a percentage',
      read: (v) => {
        const text = String(v).trim()
        return text.endsWith('%') ? { n: Number(text.slice(0, -1)), unit: '%' } : { n: parseSize(text), unit: 'B' }
      },
      show: (n, unit) => (unit === '%' ? `${n}%` : `${n} bytes`),
    },
  },
  { pattern: RATE_PATTERN, q: { what: 'a rate', read: (v) => ({ n: parseRate(String(v)), unit: 'bit/s' }), show: (n) => `${n} bit/s` } },
]

/** How a spec property is compared, from its own schema; undefined when it cannot be bounded. */
function quantityOf(prop: { type?: unknown; pattern?: unknown } | undefined): Quantity | undefined {
  if (!prop) return undefined
  if (prop.type === 'number' || prop.type === 'integer') return plain
  return quantities.find((x) => x.pattern === prop.pattern)?.q
}

interface Bound {
  param: string
  quantity: Quantity
  max?: { n: number; unit: string }
  min?: { n: number; unit: string }
}

type Refusal = (rule: string, why: string) => FaultlineError

export class HostPolicyCheck {
  readonly #rules: HostPolicy
  readonly #file: string
  readonly #bounds = new Map<string, Bound[]>()
  readonly #networks: [ipaddr.IPv4 | ipaddr.IPv6, number][]
  readonly #maxDurationMs: number | undefined
  /** The allowed directories, normalised, without a trailing slash ("/" stays "/"). */
  readonly #paths: string[] | undefined

  private constructor(rules: HostPolicy, file: string) {
    this.#rules = rules
    this.#file = file
    const bad = (where: string, why: string) => new ConfigError(`host policy ${file}: ${where}: ${why}`)
    for (const kind of rules.kinds ?? []) if (!faultSpecNamed(kind)) throw bad('kinds', `unknown fault kind "${kind}"`)
    for (const [kind, params] of Object.entries(rules.limits ?? {})) {
      const spec = faultSpecNamed(kind)
      if (!spec) throw bad(`limits.${kind}`, 'unknown fault kind')
      const props = (spec.specSchema as unknown as { properties: Record<string, { type?: unknown; pattern?: unknown }> }).properties
      const bounds: Bound[] = []
      for (const [param, bound] of Object.entries(params)) {
        if (param === 'kind' || !Object.hasOwn(props, param)) throw bad(`limits.${kind}.${param}`, `${kind} has no parameter "${param}"`)
        const quantity = quantityOf(props[param])
        if (!quantity) throw bad(`limits.${kind}.${param}`, 'only numbers, durations, sizes, rates and offsets can be bounded')
        const { max, min } = typeof bound === 'object' ? bound : { max: bound as PolicyBound, min: undefined }
        const read = (v: unknown, which: string) => {
          try {
            return quantity.read(v)
          } catch (err) {
            throw bad(`limits.${kind}.${param}.${which}`, `${JSON.stringify(v)} is not ${quantity.what} (${(err as Error).message})`)
          }
        }
        bounds.push({ param, quantity, ...(max !== undefined ? { max: read(max, 'max') } : {}), ...(min !== undefined ? { min: read(min, 'min') } : {}) })
      }
      this.#bounds.set(kind, bounds)
    }
    this.#networks = (rules.networks ?? []).map((n) => {
      try {
        return n.includes('/') ? ipaddr.parseCIDR(n) : ((a) => [a, a.kind() === 'ipv4' ? 32 : 128] as [ipaddr.IPv4 | ipaddr.IPv6, number])(ipaddr.parse(n))
      } catch {
        throw bad('networks', `"${n}" is not an IP address or a CIDR`)
      }
    })
    try {
      this.#maxDurationMs = rules.maxDuration === undefined ? undefined : parseDuration(rules.maxDuration)
    } catch (err) {
      throw bad('maxDuration', (err as Error).message)
    }
    this.#paths = rules.paths?.map((p) => posix.normalize(p).replace(/(.)\/+$/, '$1'))
  }

  /**
   * Reads the policy file: YAML (or JSON) matching protocol/policy.ts, owned by root (or the agent's
   * user) and writable by nobody else. Any fault in it stops the agent at start (ConfigError).
   */
  static load(file: string): HostPolicyCheck {
    let text: string
    try {
      const st = statSync(file)
      const uid = process.getuid?.() ?? 0
      if (st.uid !== 0 && st.uid !== uid) throw new ConfigError(`host policy ${file} is owned by uid ${st.uid}: it must belong to root (or the agent's user)`)
      if ((st.mode & 0o022) !== 0) throw new ConfigError(`host policy ${file} is writable by others (mode ${(st.mode & 0o777).toString(8)}): chmod go-w it`)
      text = readFileSync(file, 'utf8')
    } catch (err) {
      if (err instanceof ConfigError) throw err
      throw new ConfigError(`cannot read host policy ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    let doc: unknown
    try {
      doc = parseYaml(text, { maxAliasCount: 50 }) ?? {}
    } catch (err) {
      throw new ConfigError(`host policy ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`)
    }
    const known = Object.keys(HostPolicySchema.properties)
    const unknown = doc && typeof doc === 'object' ? Object.keys(doc).filter((k) => !known.includes(k)) : []
    if (unknown.length > 0) throw new ConfigError(`host policy ${file}: unknown rule "${unknown[0]}"; the rules are ${known.join(', ')} (see docs/operations.md#host-policy)`)
    if (!Value.Check(HostPolicySchema, doc)) {
      const first = Value.Errors(HostPolicySchema, doc)[0]
      throw new ConfigError(`host policy ${file}: ${first?.instancePath || '(top level)'} ${first?.message ?? 'does not match the policy format'} (see docs/operations.md#host-policy)`)
    }
    return new HostPolicyCheck(doc, file)
  }

  inForce(): PolicyInForce {
    return { file: this.#file, rules: this.#rules }
  }

  #refuse: Refusal = (rule, why) => new FaultlineError('FAULTLINE_ERR_POLICY', `the host policy (${this.#file}, ${rule}) does not allow this: ${why}`, { rule, file: this.#file })

  /** Why the policy refuses every injection of this kind, or undefined. */
  refusesKind(kind: string): string | undefined {
    const kinds = this.#rules.kinds
    return kinds && !kinds.includes(kind) ? `not allowed by the host policy ${this.#file} (kinds: ${kinds.join(', ')})` : undefined
  }

  /** Step 1 of a request: what the body alone says (kind, duration, parameters, paths, peers). */
  checkRequest(body: CreateInjectionBody, durationMs: number): void {
    const kind: FaultKindName = body.fault.kind
    const params = body.fault as Record<string, unknown>
    if (this.refusesKind(kind)) throw this.#refuse('kinds', `${kind} is not among the kinds allowed (${this.#rules.kinds!.join(', ')})`)
    if (this.#maxDurationMs !== undefined && durationMs > this.#maxDurationMs) {
      throw this.#refuse('maxDuration', `duration ${body.duration} is longer than ${this.#rules.maxDuration}`)
    }
    for (const b of this.#bounds.get(kind) ?? []) {
      const rule = `limits.${kind}.${b.param}`
      const limit = [b.max && `at most ${b.quantity.show(b.max.n, b.max.unit)}`, b.min && `at least ${b.quantity.show(b.min.n, b.min.unit)}`].filter(Boolean).join(' and ')
      if (params[b.param] === undefined) throw this.#refuse(rule, `give ${b.param} explicitly (${limit}): its default is not checked against the limit`)
      const v = b.quantity.read(params[b.param])
      for (const [edge, ok] of [
        [b.max, (x: number, e: number) => x <= e],
        [b.min, (x: number, e: number) => x >= e],
      ] as const) {
        if (!edge) continue
        if (edge.unit !== v.unit) throw this.#refuse(rule, `${b.param} must be given as ${edge.unit === '%' ? 'a percentage' : 'a size'}, ${limit}`)
        if (!ok(v.n, edge.n)) throw this.#refuse(rule, `${b.param} ${JSON.stringify(params[b.param])} is not ${limit}`)
      }
    }
    const allowed = this.#paths
    if (allowed && 'path' in specProperties(kind)) {
      if (typeof params.path !== 'string') throw this.#refuse('paths', `give path explicitly, in ${allowed.join(' or ')}: its default is not checked against the rule`)
      const path = posix.normalize(params.path)
      if (!allowed.some((p) => p === '/' || path === p || path.startsWith(`${p}/`))) throw this.#refuse('paths', `${params.path} is not in ${allowed.join(' or ')}`)
    }
    if (this.#networks.length > 0 && 'peers' in specProperties(kind)) {
      const peers = params.peers as string[] | undefined
      if (!peers || peers.length === 0) throw this.#refuse('networks', `${kind} without peers would touch every network, ${this.#rules.networks!.join(', ')} included: name the peers`)
      for (const peer of peers) {
        let net: [ipaddr.IPv4 | ipaddr.IPv6, number]
        try {
          net = peer.includes('/') ? ipaddr.parseCIDR(peer) : ((a) => [a, a.kind() === 'ipv4' ? 32 : 128] as [ipaddr.IPv4 | ipaddr.IPv6, number])(ipaddr.process(peer))
        } catch {
          throw this.#refuse('networks', `peer "${peer}" is a name: under a networks rule peers must be IP addresses or CIDRs, so what they stand for cannot change`)
        }
        const hit = this.#networks.find((p) => overlaps(net, p))
        if (hit) throw this.#refuse('networks', `peer ${peer} is in ${hit[0].toString()}/${hit[1]}, which faults never touch`)
      }
    }
  }

  /** Step 2: the concrete targets the selector resolved to, and the paths as each target sees them. */
  checkTargets(body: CreateInjectionBody, targets: readonly ResolvedTarget[], paths: Pick<HostPaths, 'procRoot'>): void {
    const rules = this.#rules.targets
    if (rules) {
      for (const target of targets) {
        if (!rules.some((r) => targetMatches(r, target))) throw this.#refuse('targets', `${describeTarget(target)} matches none of the targets allowed`)
      }
    }
    const path = (body.fault as Record<string, unknown>).path
    if (this.#paths && typeof path === 'string') {
      // A symlink on the way would lead the fault out of the allowed directories.
      for (const target of targets) {
        const root = target.type === 'process' ? procPath(paths, target.pid, 'root') : target.type === 'container' ? procPath(paths, target.initPid, 'root') : '/'
        const link = symlinkOnTheWay(root, posix.normalize(path))
        if (link) throw this.#refuse('paths', `${link} is a symbolic link on the way to ${path} (${describeTarget(target)}): paths under a paths rule must not go through links`)
      }
    }
  }
}

function specProperties(kind: string): Record<string, unknown> {
  return (faultSpecNamed(kind)?.specSchema as unknown as { properties?: Record<string, unknown> } | undefined)?.properties ?? {}
}

function overlaps(a: [ipaddr.IPv4 | ipaddr.IPv6, number], b: [ipaddr.IPv4 | ipaddr.IPv6, number]): boolean {
  if (a[0].kind() !== b[0].kind()) return false
  const [wide, narrow] = a[1] <= b[1] ? [a, b] : [b, a]
  return narrow[0].match(wide as [ipaddr.IPv4, number])
}

function targetMatches(rule: PolicyTargetRule, target: ResolvedTarget): boolean {
  if (rule.type !== target.type) return false
  switch (rule.type) {
    case 'host':
      return true
    case 'process':
      return target.type === 'process' && (!rule.names || rule.names.includes(target.comm))
    case 'netns':
      return target.type === 'netns' && (!rule.names || rule.names.includes(target.name))
    case 'container':
      return (
        target.type === 'container' &&
        (!rule.labels || Object.entries(rule.labels).every(([k, v]) => target.labels[k] === v)) &&
        (!rule.names || (target.name !== undefined && rule.names.includes(target.name))) &&
        (!rule.images || rule.images.some((i) => imageMatches(i, target.image))) &&
        (!rule.runtimes || rule.runtimes.includes(target.runtime))
      )
  }
}

/** The first component of `path` (inside `root`) that is a symbolic link, or undefined. */
function symlinkOnTheWay(root: string, path: string): string | undefined {
  let at = ''
  for (const part of path.split('/').filter(Boolean)) {
    at = `${at}/${part}`
    try {
      if (lstatSync(posix.join(root, at)).isSymbolicLink()) return at
    } catch {
      return undefined // missing: the kind says so itself
    }
  }
  return undefined
}
