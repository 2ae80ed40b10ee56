import { createRequire } from 'node:module'
import { FaultlineError } from './errors.js'

const safeRegex = createRequire(import.meta.url)('safe-regex2') as (re: string | RegExp) => boolean

/**
 * A regular expression a user gave (a process `cmdline`, a `file-replace` pattern), compiled and
 * refused when it is invalid, could backtrack catastrophically, or matches the empty string (so it
 * would select every process, or insert text everywhere). The agent checks it before it acts, the
 * server when an experiment is applied.
 */
export function compileUserRegex(source: string, flags: string, what: string, emptyMeans: string): RegExp {
  let re: RegExp
  try {
    re = new RegExp(source, flags)
  } catch (err) {
    throw new FaultlineError('FAULTLINE_ERR_UNSAFE_PATTERN', `invalid ${what}: ${(err as Error).message}`)
  }
  if (!safeRegex(re)) {
    throw new FaultlineError('FAULTLINE_ERR_UNSAFE_PATTERN', `${what} ${JSON.stringify(source)} has nested repetition that could backtrack catastrophically; simplify it`)
  }
  if (new RegExp(re.source, re.flags.replace('g', '')).test('')) {
    throw new FaultlineError('FAULTLINE_ERR_UNSAFE_PATTERN', `${what} ${JSON.stringify(source)} matches the empty string, so ${emptyMeans}`)
  }
  return re
}

/** A process selector's cmdline regex (see compileUserRegex). */
export function compileCmdlinePattern(pattern: string): RegExp {
  return compileUserRegex(pattern, '', 'cmdline regular expression', 'it would select every process; make it match something specific, e.g. "^postgres: "')
}

/** A file-replace pattern: literal text, or a regex with `regex: true` (see compileUserRegex). */
export function compileReplacePattern(spec: { pattern: string; regex?: boolean; ignoreCase?: boolean }): RegExp {
  const source = spec.regex ? spec.pattern : spec.pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  return compileUserRegex(source, `g${spec.ignoreCase ? 'i' : ''}u`, 'regular expression', 'it would insert text everywhere; make it match something')
}
