import { fileReplaceSpec } from '../../../protocol/faults/file-replace.js'
import { Type } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import { PlanStepSchema } from '../../../protocol/plan.js'
import {
  FilePlanFields,
  FileStateFields,
  fileKindCommon,
  applyWithBackup,
  backupStep,
  filePlanBase,
  gatherFile,
  plannedFileState,
  recoverContent,
  restoreWhole,
  where,
  type FileFacts,
} from '../shared/files-fault.js'
import { overwrite, readAll, sha256Of } from '../shared/files.js'
import { defineFault } from '../types.js'
import { compileReplacePattern } from '../../../protocol/patterns.js'

/** The whole file is read into memory to compute the replacement. */
export const MAX_REPLACE_BYTES = 64 * 1024 * 1024
/** How many changes a plan lists one by one (all are counted). */
const LISTED_CHANGES = 20

export interface ReplaceSpec {
  pattern: string
  replacement: string
  regex?: boolean
  ignoreCase?: boolean
  limit?: number
}

export interface Replacement {
  content: Buffer
  /** Byte offset (in the original) and the bytes before and after, as text. */
  changes: { offset: number; before: string; after: string }[]
  count: number
}

const compile = (spec: ReplaceSpec): RegExp => compileReplacePattern(spec)

/** $$, $&, $1..$99 and $<name> in a regex replacement, as String.prototype.replace reads them. */
function expand(template: string, match: string, groups: (string | undefined)[], named: Record<string, string | undefined> | undefined): string {
  return template.replace(/\$(\$|&|<([^>]*)>|[0-9]{1,2})/g, (whole, what: string, name: string | undefined) => {
    if (what === '$') return '$'
    if (what === '&') return match
    if (name !== undefined) return named ? (named[name] ?? '') : whole
    const n = Number(what)
    if (n >= 1 && n <= groups.length) return groups[n - 1] ?? ''
    return whole
  })
}

/**
 * The file with the pattern replaced. A literal pattern (the default) is matched on the bytes, so
 * it works on any file; a regex (or ignoreCase) needs the file to be UTF-8 text.
 */
export function replaceIn(content: Buffer, spec: ReplaceSpec): Replacement {
  const limit = spec.limit ?? Infinity
  const changes: Replacement['changes'] = []
  let count = 0
  if (!spec.regex && !spec.ignoreCase) {
    const needle = Buffer.from(spec.pattern, 'utf8')
    const insert = Buffer.from(spec.replacement, 'utf8')
    const parts: Buffer[] = []
    let from = 0
    for (let at = content.indexOf(needle); at >= 0 && count < limit; at = content.indexOf(needle, at + needle.length)) {
      parts.push(content.subarray(from, at), insert)
      if (changes.length < LISTED_CHANGES) changes.push({ offset: at, before: spec.pattern, after: spec.replacement })
      count++
      from = at + needle.length
    }
    parts.push(content.subarray(from))
    return { content: Buffer.concat(parts), changes, count }
  }
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(content)
  } catch {
    throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', 'the file is not UTF-8 text, so a regex or ignoreCase cannot be matched in it; use a literal pattern (matched on the bytes)')
  }
  const re = compile(spec)
  // Byte offsets of matches, counted incrementally from UTF-16 indexes.
  let lastIndex = 0
  let lastByte = 0
  const out = text.replace(re, (...args: unknown[]) => {
    const match = args[0] as string
    const hasNamed = typeof args[args.length - 1] === 'object' && args[args.length - 1] !== null
    const named = hasNamed ? (args[args.length - 1] as Record<string, string | undefined>) : undefined
    const index = args[hasNamed ? args.length - 3 : args.length - 2] as number
    const groups = args.slice(1, hasNamed ? args.length - 3 : args.length - 2) as (string | undefined)[]
    if (count >= limit) return match
    const after = spec.regex ? expand(spec.replacement, match, groups, named) : spec.replacement
    lastByte += Buffer.byteLength(text.slice(lastIndex, index))
    lastIndex = index
    if (changes.length < LISTED_CHANGES) changes.push({ offset: lastByte, before: match, after })
    count++
    return after
  })
  return { content: Buffer.from(out, 'utf8'), changes, count }
}

const clip = (s: string) => JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s)

export const fileReplace = defineFault(fileReplaceSpec, {
  planSchema: Type.Object({
    ...FilePlanFields,
    pattern: Type.String(),
    replacement: Type.String(),
    regex: Type.Boolean(),
    ignoreCase: Type.Boolean(),
    limit: Type.Optional(Type.Integer()),
    matches: Type.Integer({ description: 'How many matches are replaced' }),
    changes: Type.Array(Type.Object({ offset: Type.Integer(), before: Type.String(), after: Type.String() }), { description: `The first ${LISTED_CHANGES} replacements, at byte offsets of the original` }),
    sha256Before: Type.String(),
    sha256After: Type.String(),
    sizeAfter: Type.Integer(),
    steps: Type.Array(PlanStepSchema),
  }),
  stateSchema: Type.Object(FileStateFields),
  ...fileKindCommon,

  async gather(spec, target, ctx): Promise<FileFacts & { read: Buffer }> {
    // A bad pattern is refused before the file is read.
    if (spec.regex || spec.ignoreCase) compile(spec)
    return gatherFile(spec, target, ctx, 'file-replace', (fd, meta, where) => {
      if (meta.size > MAX_REPLACE_BYTES) throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `${where} is ${meta.size} bytes; file-replace reads files of at most ${MAX_REPLACE_BYTES} bytes`)
      return readAll(fd)
    })
  },

  plan(spec, _target, ctx) {
    const base = filePlanBase(spec, ctx.facts, ctx.injectionId)
    const before = ctx.facts.read
    const result = replaceIn(before, spec)
    if (result.count === 0) throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `${clip(spec.pattern)} does not occur in ${where(base)}; nothing would change`)
    if (result.content.equals(before)) throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `every match of ${clip(spec.pattern)} in ${where(base)} already reads as its replacement; nothing would change`)
    const sha256Before = sha256Of(before)
    const sha256After = sha256Of(result.content)
    const listed = result.changes.map((c) => `@${c.offset}: ${clip(c.before)} -> ${clip(c.after)}`).join(', ')
    return {
      ...base,
      pattern: spec.pattern,
      replacement: spec.replacement,
      regex: spec.regex ?? false,
      ignoreCase: spec.ignoreCase ?? false,
      ...(spec.limit !== undefined ? { limit: spec.limit } : {}),
      matches: result.count,
      changes: result.changes,
      sha256Before,
      sha256After,
      sizeAfter: result.content.length,
      steps: [
        backupStep(base),
        {
          phase: 'apply' as const,
          action: 'write',
          detail: `replace ${result.count} match${result.count === 1 ? '' : 'es'} in ${where(base)} in place (same inode): ${listed}${result.count > result.changes.length ? ', …' : ''}; ${before.length} -> ${result.content.length} bytes, sha256 ${sha256Before.slice(0, 16)}… -> ${sha256After.slice(0, 16)}…. Refused at apply if the file no longer has sha256 ${sha256Before.slice(0, 16)}…`,
        },
        { phase: 'recover' as const, action: 'write', detail: `write the backup back over ${where(base)} in place, then owner, mode and times from the journal` },
      ],
    }
  },

  undoFromPlan: (plan) => plannedFileState(plan),

  async apply(plan, ctx) {
    return applyWithBackup(plan, {}, ctx, {
      precheck(original) {
        if (original.sha256 !== plan.sha256Before) {
          throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `${where(plan)} changed since it was planned (sha256 ${original.sha256!.slice(0, 16)}…, planned ${plan.sha256Before.slice(0, 16)}…); nothing was changed, plan again`)
        }
      },
      async change(fd) {
        const result = replaceIn(await readAll(fd), plan)
        if (sha256Of(result.content) !== plan.sha256After) throw new Error('the replacement differs from the plan although the file did not change')
        await overwrite(fd, result.content)
      },
    })
  },

  recover: (state, ctx) => recoverContent(state, ctx, restoreWhole),
})
