import sjson from 'secure-json-parse'
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type ParsedNode } from 'yaml'
import { isFaultlineError } from '../protocol/errors.js'
import type { Experiment } from '../protocol/experiment.js'
import { explainExperiment } from '../protocol/explain.js'
import { parseDuration } from '../protocol/duration.js'
import type { ExperimentCheck, ExperimentCheckIssue } from '../protocol/views.js'
import { checkExperiment } from './experiment-checks.js'
import type { AgentRow } from './store.js'

/** A schema validator as Fastify compiles one (Ajv): the errors of the last call in `errors`. */
export interface CompiledValidator {
  (value: unknown): boolean
  errors?: { instancePath: string; keyword: string; message?: string; params: Record<string, unknown> }[] | null
}

type Where = { path: string; message: string; at?: 'key' }

/**
 * Checks an experiment written in YAML the way POST /v1/experiments checks it (the field
 * explanations of protocol/explain.ts, then the schema, then the checks made at apply), and
 * says where each problem is in the text: the node its path points to, the key of an unknown
 * field, the nearest existing ancestor of a missing one; YAML syntax errors at their own place.
 * Stores nothing, asks no agent.
 */
export function checkExperimentYaml(text: string, validate: CompiledValidator, agents: AgentRow[]): ExperimentCheck {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false })
  const span = (start: number, end: number) => {
    // A node's range may end after its line break: point at its last character instead.
    while (end > start && /\s/.test(text[end - 1]!)) end--
    const from = lineCounter.linePos(start)
    const to = lineCounter.linePos(Math.max(end, start))
    return { line: from.line, column: from.col, endLine: to.line, endColumn: to.col }
  }
  if (doc.errors.length > 0) {
    return { valid: false, issues: doc.errors.map((e) => ({ path: '', message: e.message.split('\n')[0]!, ...span(e.pos[0], e.pos[1]) })) }
  }
  const locate = (w: Where): ExperimentCheckIssue => ({ path: w.path, message: w.message, ...span(...rangeOf(doc, w)) })

  let body: unknown
  try {
    // Through JSON once more, as the YAML body parser does, so YAML can smuggle no __proto__ key JSON could not.
    const value: unknown = doc.toJS({ maxAliasCount: 50 })
    body = sjson.parse(JSON.stringify(value ?? null), undefined, { protoAction: 'error', constructorAction: 'error' })
  } catch (err) {
    const forbidden = /prototype/i.test((err as Error).message)
    return { valid: false, issues: [locate({ path: '', message: forbidden ? 'the document contains a __proto__ or constructor.prototype key, which is refused' : (err as Error).message.split('\n')[0]! })] }
  }

  const explained = explainExperiment(body)
  if (explained.length > 0) {
    return {
      valid: false,
      issues: explained.map((i) =>
        locate({ path: i.field, message: `${i.field}: ${i.problem}${i.allowed ? ` — allowed: ${i.allowed}` : ''}`, ...(/ has no parameter /.test(i.problem) ? { at: 'key' as const } : {}) }),
      ),
    }
  }

  if (!validate(body)) {
    // As the error handler does: unions report every branch; keep each distinct problem.
    const seen = new Set<string>()
    const issues: ExperimentCheckIssue[] = []
    const errors = validate.errors ?? []
    // A union whose branches each miss their own key ("hosts" without labels, names or all): one issue naming them all.
    const missing = new Map<string, string[]>()
    for (const e of errors) if (e.keyword === 'required') missing.set(e.instancePath, [...(missing.get(e.instancePath) ?? []), String(e.params.missingProperty)])
    for (const e of errors) {
      if (e.keyword === 'anyOf') continue
      const keys = missing.get(e.instancePath)
      if (e.keyword === 'required' && keys && keys.length > 1) {
        const path = fieldOf(e.instancePath)
        const message = `${path || 'the experiment'} needs one of ${keys.join(', ')}`
        if (!seen.has(path + message)) issues.push(locate({ path, message }))
        seen.add(path + message)
        continue
      }
      const extra = e.keyword === 'additionalProperties' ? String(e.params.additionalProperty) : undefined
      const path = fieldOf(extra === undefined ? e.instancePath : `${e.instancePath}/${extra}`)
      const message = extra === undefined ? `${path || 'the experiment'} ${e.message ?? 'is invalid'}` : `${fieldOf(e.instancePath) || 'the experiment'} has no field "${extra}"`
      if (seen.has(path + message)) continue
      seen.add(path + message)
      issues.push(locate({ path, message, ...(extra !== undefined ? { at: 'key' as const } : {}) }))
      if (issues.length === 5) break
    }
    return { valid: false, issues }
  }

  const spec = body as Experiment
  try {
    return { valid: true, experiment: spec, warnings: checkExperiment(spec, agents) }
  } catch (err) {
    if (!isFaultlineError(err)) throw err
    const path = pathOfCheck(spec, err.code, err.message)
    return { valid: false, issues: [locate({ path, message: path ? `${path}: ${err.message}` : err.message })] }
  }
}

/** "/guards/0/every" -> "guards[0].every" (the form explain.ts names fields in). */
function fieldOf(pointer: string): string {
  return pointer
    .split('/')
    .filter(Boolean)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .join('.')
    .replace(/\.([0-9]+)(?=\.|$)/g, '[$1]')
}

/** Which field a check made at apply (server/experiment-checks.ts) is about. */
function pathOfCheck(spec: Experiment, code: string, message: string): string {
  switch (code) {
    case 'FAULTLINE_ERR_BAD_SCHEDULE':
      return 'schedule'
    case 'FAULTLINE_ERR_BAD_DURATION':
      return 'duration'
    case 'FAULTLINE_ERR_TARGET_UNSUPPORTED':
      return 'target.type'
    case 'FAULTLINE_ERR_UNSUPPORTED':
      return 'fault.kind'
    case 'FAULTLINE_ERR_UNSAFE_PATTERN':
      return spec.target.type === 'process' && 'cmdline' in spec.target ? 'target.cmdline' : 'fault.pattern'
    case 'FAULTLINE_ERR_VALIDATION': {
      if (!/^guard every/.test(message)) return ''
      const i = (spec.guards ?? []).findIndex((g) => parseDuration(g.every) < 100)
      return i >= 0 ? `guards[${i}].every` : 'guards'
    }
    default:
      return ''
  }
}

/** "guards[0].every" -> ["guards", "0", "every"]. */
function segmentsOf(path: string): string[] {
  return path
    .replace(/\[([0-9]+)\]/g, '.$1')
    .split('.')
    .filter(Boolean)
}

/** Offsets of the node a path names, or of its nearest existing ancestor; the key node when `at: 'key'`. */
function rangeOf(doc: Document.Parsed, where: Where): [number, number] {
  let node = doc.contents as ParsedNode | null
  if (!node) return [0, 0]
  let range: [number, number] = [node.range[0], node.range[1]]
  const segments = segmentsOf(where.path)
  for (const [i, segment] of segments.entries()) {
    const last = i === segments.length - 1
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === segment)
      if (!pair) break
      const key = pair.key as ParsedNode
      const value = pair.value as ParsedNode | null
      // The key of an unknown field; the key too when the value is empty ("fault:").
      if ((last && where.at === 'key') || !value || value.range[0] === value.range[1]) {
        range = [key.range[0], key.range[1]]
        break
      }
      node = value
    } else if (isSeq(node) && /^[0-9]+$/.test(segment)) {
      const item = node.items[Number(segment)] as ParsedNode | undefined
      if (!item) break
      node = item
    } else {
      break
    }
    range = [node.range[0], node.range[1]]
  }
  return range
}
