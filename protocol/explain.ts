import type { TSchema } from 'typebox'
import { Value } from 'typebox/value'
import { DURATION_PATTERN, parseDuration } from './duration.js'
import { FaultlineError, type ErrorCode } from './errors.js'
import { ModeSchema } from './experiment.js'
import { faultKindNames, faultSpecNamed } from './faults/index.js'
import { OFFSET_PATTERN } from './faults/time-skew.js'
import { pathProblem } from './paths.js'
import { SIZE_OR_PERCENT_PATTERN, SIZE_PATTERN, parseSize } from './units.js'
import { ContainerSelectorSchema, ProcessSelectorSchema, TargetSelectorSchema, targetTypes } from './target.js'

/**
 * Bad input explained the way a person fixes it: which field, what is wrong with it, and what is
 * allowed — checked against the one fault kind the body names and the one target form it uses,
 * instead of a union's "must match a schema in anyOf" that lists every kind's fields. Runs before
 * the schema validation of every body that carries a fault, a target and a duration (an injection
 * request on the agent, an experiment on the server).
 */
export interface Issue {
  /** Where: "fault.load", "target.pid", "duration". */
  field: string
  problem: string
  allowed?: string
}

interface SchemaLike {
  type?: unknown
  minimum?: number
  maximum?: number
  exclusiveMinimum?: number
  exclusiveMaximum?: number
  minLength?: number
  maxLength?: number
  minItems?: number
  maxItems?: number
  pattern?: string
  description?: string
  properties?: Record<string, SchemaLike>
  required?: string[]
  anyOf?: SchemaLike[]
  enum?: unknown[]
  items?: SchemaLike
}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = cur
    }
  }
  return row[b.length]!
}

/** The known word closest to `word`, when it is close enough to be a typo. */
export function didYouMean(word: string, known: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = Infinity
  for (const k of known) {
    const d = distance(word.toLowerCase(), k.toLowerCase())
    if (d < bestDistance) [best, bestDistance] = [k, d]
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined
}

const show = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}…` : v) : JSON.stringify(v) ?? String(v))

/** The schema at a JSON pointer inside `schema` (object properties and array items only). */
function schemaAt(schema: SchemaLike, pointer: string): SchemaLike | undefined {
  let at: SchemaLike | undefined = schema
  for (const part of pointer.split('/').filter(Boolean)) {
    if (!at) return undefined
    at = /^[0-9]+$/.test(part) && at.items ? at.items : at.properties?.[part]
  }
  return at
}

function valueAt(value: unknown, pointer: string): unknown {
  let at = value
  for (const part of pointer.split('/').filter(Boolean)) at = at && typeof at === 'object' ? (at as Record<string, unknown>)[part] : undefined
  return at
}

/** Why `v` does not have the form a pattern asks, in words, for the grammars several fields share. */
function patternProblem(name: string, v: unknown, pattern: string | undefined): string {
  const text = String(v)
  const reason = (f: () => unknown) => {
    try {
      f()
      return undefined
    } catch (err) {
      return (err as Error).message
    }
  }
  if (pattern === DURATION_PATTERN) return `${name}: ${reason(() => parseDuration(text)) ?? `invalid duration ${show(v)}`}`
  if (pattern === OFFSET_PATTERN) return `${name}: ${reason(() => parseDuration(text.replace(/^[+-]/, ''))) ?? `invalid offset ${show(v)}`} (with an optional sign: "-15m", "+2h")`
  if (pattern === SIZE_PATTERN || pattern === SIZE_OR_PERCENT_PATTERN) {
    return reason(() => parseSize(text, name))?.replace(/: write .*$/, '') ?? `${name} ${show(v)} is not a size${pattern === SIZE_OR_PERCENT_PATTERN ? ' or a percentage' : ''}`
  }
  if (pattern === '^/') return `${name} ${show(v)} is not an absolute path (it must start with /)`
  return `${name} ${show(v)} is not in the form ${name} takes`
}

/** What a field takes, from its schema: its description, its range or length, its choices. */
function allowedBy(s: SchemaLike | undefined): string | undefined {
  if (!s) return undefined
  const parts = [s.description]
  const low = s.minimum ?? s.exclusiveMinimum
  const high = s.maximum ?? s.exclusiveMaximum
  if (s.type === 'integer' || s.type === 'number') {
    const kind = s.type === 'integer' ? 'a whole number' : 'a number'
    if (low !== undefined && high !== undefined) parts.push(`${kind} from ${low}${s.exclusiveMinimum !== undefined ? ' (not included)' : ''} to ${high}`)
    else if (low !== undefined) parts.push(`${kind} of at least ${low}${s.exclusiveMinimum !== undefined ? ' (not included)' : ''}`)
    else if (high !== undefined) parts.push(`${kind} of at most ${high}`)
    else parts.push(kind)
  }
  if (s.type === 'string' && (s.minLength !== undefined || s.maxLength !== undefined) && s.pattern === undefined) {
    parts.push(`${s.minLength ?? 0} to ${s.maxLength ?? 'any number of'} characters`)
  }
  if (s.type === 'array' && (s.minItems !== undefined || s.maxItems !== undefined)) parts.push(`a list of ${s.minItems ?? 0} to ${s.maxItems ?? 'any number of'} items`)
  if (s.type === 'boolean') parts.push('true or false')
  if (s.enum) parts.push(`one of ${s.enum.map((e) => String(e)).join(', ')}`)
  if (s.pattern === DURATION_PATTERN && !/units/.test(s.description ?? '')) parts.push('a duration: whole numbers with units h, m, s, ms, largest first, e.g. "30s" or "1h30m"')
  return parts.filter(Boolean).join('; ') || undefined
}

/**
 * Why `value` does not match `schema`, one issue per field (the first problem of each), named
 * from `prefix` ("fault", "target"). `what` names the object in messages ("network-loss").
 */
export function explainAgainst(schema: TSchema, value: unknown, prefix: string, what: string): Issue[] {
  const root = schema as unknown as SchemaLike
  const issues: Issue[] = []
  const seen = new Set<string>()
  for (const e of Value.Errors(schema, value)) {
    // "schema is false" at an extra property: the additionalProperties error that follows names them all.
    if (e.keyword === 'boolean' && e.schemaPath.endsWith('additionalProperties')) continue
    const pointer = e.instancePath
    const parts = pointer.split('/').filter(Boolean)
    // Array items are named as such ("ports[0]") and explained by their list's description.
    const item = parts.length > 0 && /^[0-9]+$/.test(parts[parts.length - 1]!)
    const field = [prefix, ...parts].join('.').replace(/\.([0-9]+)(?=\.|$)/g, '[$1]')
    const name = item ? `${parts[parts.length - 2] ?? prefix}[${parts[parts.length - 1]}]` : parts[parts.length - 1] ?? prefix
    const s = schemaAt(root, pointer)
    const described = item ? schemaAt(root, parts.slice(0, -1).map((p) => `/${p}`).join('')) : s
    const v = valueAt(value, pointer)
    const params = e.params as Record<string, unknown>
    let issue: Issue | undefined
    switch (e.keyword) {
      case 'additionalProperties': {
        const known = Object.keys(s?.properties ?? {}).filter((k) => k !== 'kind' && k !== 'type')
        for (const extra of (params.additionalProperties as string[] | undefined) ?? []) {
          const near = didYouMean(extra, known)
          issues.push({
            field: [prefix, ...pointer.split('/').filter(Boolean), extra].join('.'),
            problem: `${what} has no parameter "${extra}"${near ? `; did you mean "${near}"?` : ''}`,
            allowed: known.length > 0 ? `its parameters: ${known.join(', ')}` : `${what} takes no parameters`,
          })
        }
        continue
      }
      case 'required': {
        for (const missing of (params.requiredProperties as string[] | undefined) ?? []) {
          const sub = s?.properties?.[missing]
          issues.push({ field: [prefix, ...pointer.split('/').filter(Boolean), missing].join('.'), problem: `${what} needs ${missing}`, ...(allowedBy(sub) ? { allowed: allowedBy(sub) } : {}) })
        }
        continue
      }
      case 'minimum':
      case 'exclusiveMinimum':
      case 'maximum':
      case 'exclusiveMaximum': {
        const low = e.keyword.endsWith('inimum')
        const strict = e.keyword.startsWith('exclusive')
        const limit = params.limit
        issue = { field, problem: `${name} ${show(v)} is ${low ? 'below' : 'above'} the ${low ? 'minimum' : 'maximum'} ${String(limit)}${strict ? ' (not included)' : ''}` }
        break
      }
      case 'multipleOf':
        issue = { field, problem: `${name} ${show(v)} has too many decimals (steps of ${String(params.multipleOf)})` }
        break
      case 'type':
        issue = { field, problem: `${name} must be ${String(params.type).replace(/^integer$/, 'a whole number').replace(/^number$/, 'a number').replace(/^string$/, 'a string').replace(/^boolean$/, 'true or false').replace(/^array$/, 'a list').replace(/^object$/, 'an object')}, not ${show(v)}` }
        break
      case 'enum':
      case 'const':
        issue = { field, problem: `${name} ${show(v)} is not one of ${((params.allowedValues as unknown[] | undefined) ?? [params.allowedValue]).map(String).join(', ')}` }
        break
      case 'pattern':
        issue = { field, problem: patternProblem(name, v, s?.pattern) }
        break
      case 'minLength':
      case 'maxLength':
      case 'minItems':
      case 'maxItems':
      case 'minProperties':
      case 'maxProperties': {
        const limit = Object.values(params)[0]
        issue = { field, problem: `${name} has ${e.keyword.startsWith('min') ? 'fewer' : 'more'} ${e.keyword.endsWith('Length') ? 'characters' : e.keyword.endsWith('Items') ? 'items' : 'entries'} than ${e.keyword.startsWith('min') ? 'the minimum' : 'the maximum'} ${String(limit)}` }
        break
      }
      case 'uniqueItems':
        issue = { field, problem: `${name} lists a value twice` }
        break
      default:
        issue = { field, problem: `${name} ${e.message}` }
    }
    if (issue && !seen.has(issue.field)) {
      seen.add(issue.field)
      const allowed = allowedBy(described)
      issues.push(allowed ? { ...issue, allowed } : issue)
    }
  }
  return issues
}

/** The one form of a union of selectors a target uses: the branch whose own key it carries. */
function targetBranch(target: Record<string, unknown>): { schema: TSchema; keys: string[] } | Issue {
  const type = target.type as string
  const union = type === 'process' ? ProcessSelectorSchema : type === 'container' ? ContainerSelectorSchema : undefined
  if (!union) {
    const branch = (TargetSelectorSchema.anyOf as unknown as TSchema[]).find((b) => (b as unknown as SchemaLike).properties?.type && JSON.stringify((b as unknown as SchemaLike).properties!.type).includes(`"${type}"`))!
    return { schema: branch, keys: [] }
  }
  const branches = union.anyOf as unknown as TSchema[]
  const keyOf = (b: TSchema) => Object.keys((b as unknown as SchemaLike).properties ?? {}).find((k) => k !== 'type' && k !== 'runtime')!
  const keys = branches.map(keyOf)
  const branch = branches.find((b) => keyOf(b) in target)
  if (!branch) return { field: 'target', problem: `a ${type} target needs one of ${keys.join(', ')}`, allowed: keys.map((k) => `${k}: ${allowedBy((branches[keys.indexOf(k)] as unknown as SchemaLike).properties?.[k]) ?? ''}`).join('; ') }
  const given = keys.filter((k) => k in target)
  if (given.length > 1) return { field: 'target', problem: `a ${type} target takes one of ${keys.join(', ')}, not ${given.join(' and ')}`, allowed: `exactly one of ${keys.join(', ')}` }
  return { schema: branch, keys }
}

/** The issues of a body's fault, target and duration; empty when they are fine. */
export function explainRequest(body: unknown, speaker: string): Issue[] {
  if (!body || typeof body !== 'object' || Array.isArray(body)) return []
  const { fault, target, duration } = body as { fault?: unknown; target?: unknown; duration?: unknown }
  const issues: Issue[] = []
  if (fault && typeof fault === 'object' && !Array.isArray(fault)) {
    const kind = (fault as { kind?: unknown }).kind
    if (typeof kind !== 'string') {
      issues.push({ field: 'fault.kind', problem: 'the fault names no kind', allowed: `one of ${faultKindNames.join(', ')}` })
    } else {
      const spec = faultSpecNamed(kind)
      if (!spec) {
        const near = didYouMean(kind, faultKindNames)
        issues.push({ field: 'fault.kind', problem: `unknown fault kind ${show(kind.slice(0, 40))}; this ${speaker} knows: ${faultKindNames.join(', ')}${near ? `; did you mean ${near}?` : ''}`, allowed: 'one of the kinds listed (GET /v1/capabilities shows which this host supports)' })
      } else {
        const found = explainAgainst(spec.specSchema, fault, 'fault', kind)
        // A path the schema takes may still not be in normal form ("/etc/app.conf/").
        const path = (fault as { path?: unknown }).path
        const problem = typeof path === 'string' && !found.some((i) => i.field === 'fault.path') && 'path' in ((spec.specSchema as unknown as SchemaLike).properties ?? {}) ? pathProblem(path) : undefined
        if (problem) found.push({ field: 'fault.path', problem, allowed: 'an absolute path in normal form, as the target sees it, e.g. /etc/app.conf' })
        issues.push(...found)
      }
    }
  }
  if (target && typeof target === 'object' && !Array.isArray(target)) {
    const type = (target as { type?: unknown }).type
    if (typeof type !== 'string' || !(targetTypes as readonly string[]).includes(type)) {
      const near = typeof type === 'string' ? didYouMean(type, targetTypes) : undefined
      issues.push({
        field: 'target.type',
        problem: typeof type === 'string' ? `unknown target type ${show(type.slice(0, 40))}${near ? `; did you mean ${near}?` : ''}` : 'the target names no type',
        allowed: `one of ${targetTypes.join(', ')}`,
      })
    } else {
      const branch = targetBranch(target as Record<string, unknown>)
      if ('field' in branch) issues.push(branch)
      else issues.push(...explainAgainst(branch.schema, target, 'target', `a ${type} target`))
    }
  }
  if (typeof duration === 'string') {
    try {
      parseDuration(duration)
    } catch (err) {
      issues.push({ field: 'duration', problem: (err as Error).message, allowed: 'e.g. "30s", "5m" or "1h30m"' })
    }
  } else if (duration !== undefined) {
    issues.push({ field: 'duration', problem: `duration must be a string, not ${show(duration)}`, allowed: 'e.g. "30s", "5m" or "1h30m"' })
  }
  return issues
}

/** What `mode` takes, in the words of docs/server.md. */
export const MODE_FORMS =
  '"all" (every matching host, the default), "one" (one of them), { fixed: N } (N of them, 1 to 100000) or { percent: P } (P% of them, rounded up; above 0, at most 100)'

/**
 * An experiment's `mode`, explained against the one form it uses: the schema's union of four
 * forms otherwise answers once per form ("must be string", "must be equal to constant", ...),
 * and only one of those is about what the user wrote.
 */
export function explainMode(mode: unknown): Issue[] {
  if (mode === undefined || mode === 'all' || mode === 'one') return []
  const forms = ['fixed', 'percent']
  if (typeof mode === 'string') {
    const near = didYouMean(mode, ['all', 'one', ...forms])
    const hint = near === undefined ? '' : forms.includes(near) ? `; did you mean { ${near}: … }?` : `; did you mean ${near}?`
    return [{ field: 'mode', problem: `unknown mode ${show(mode.slice(0, 40))}${hint}`, allowed: MODE_FORMS }]
  }
  if (mode === null || typeof mode !== 'object' || Array.isArray(mode)) return [{ field: 'mode', problem: `mode must be "all", "one" or an object, not ${show(mode)}`, allowed: MODE_FORMS }]
  const keys = Object.keys(mode)
  const given = keys.filter((k) => forms.includes(k))
  const unknown = keys.filter((k) => !forms.includes(k))
  if (given.length > 1) return [{ field: 'mode', problem: `mode takes one of fixed, percent, not ${given.join(' and ')}`, allowed: MODE_FORMS }]
  if (unknown.length > 0) {
    const near = didYouMean(unknown[0]!, forms)
    return [{ field: `mode.${unknown[0]}`, problem: `mode has no field "${unknown[0]}"${near && given.length === 0 ? `; did you mean "${near}"?` : ''}`, allowed: MODE_FORMS }]
  }
  if (given.length === 0) return [{ field: 'mode', problem: 'mode names no form: it needs fixed or percent', allowed: MODE_FORMS }]
  const branch = (ModeSchema.anyOf as unknown as TSchema[]).find((b) => given[0]! in ((b as unknown as SchemaLike).properties ?? {}))!
  return explainAgainst(branch, mode, 'mode', 'mode')
}

/** The issues of an experiment's body: its fault, target and duration, and its mode. */
export function explainExperiment(body: unknown): Issue[] {
  const issues = explainRequest(body, 'server')
  if (body && typeof body === 'object' && !Array.isArray(body)) issues.push(...explainMode((body as { mode?: unknown }).mode))
  return issues
}

/** The error for a body with issues: its first issue in the message (with what is allowed), all of them in details. */
export function requestError(issues: Issue[]): FaultlineError {
  const first = issues[0]!
  const code: ErrorCode = first.field === 'duration' ? 'FAULTLINE_ERR_BAD_DURATION' : 'FAULTLINE_ERR_VALIDATION'
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more issue${issues.length > 2 ? 's' : ''}: see details)` : ''
  return new FaultlineError(code, `${first.field}: ${first.problem}${first.allowed ? ` — allowed: ${first.allowed}` : ''}${more}`, { issues })
}

/** preValidation of a body with fault, target and duration: throws the explained error, if any. */
export function checkRequest(body: unknown, speaker: string): void {
  const issues = explainRequest(body, speaker)
  if (issues.length > 0) throw requestError(issues)
}

/** preValidation of an experiment: throws the explained error, if any. */
export function checkExperimentRequest(body: unknown): void {
  const issues = explainExperiment(body)
  if (issues.length > 0) throw requestError(issues)
}
