#!/usr/bin/env node
import { ConfigError, StartupError } from '../common/config.js'
import { isFaultlineError } from '../protocol/errors.js'
import { buildProgram } from './program.js'

/**
 * One line per failure, never a stack trace (FAULTLINE_DEBUG=1 adds it), and the exit status
 * says what kind: 1 a refusal or a failure, 2 a wrong flag or setting. The process ends here, so
 * an agent or server that could not start leaves nothing running.
 */
try {
  await buildProgram().parseAsync(process.argv)
} catch (err) {
  const debug = process.env.FAULTLINE_DEBUG === '1' && err instanceof Error && err.stack ? `\n${err.stack}` : ''
  let code = 1
  if (isFaultlineError(err)) {
    process.stderr.write(`faultline: ${err.message} [${err.code}]${debug}\n`)
  } else if (err instanceof ConfigError) {
    process.stderr.write(`faultline: ${err.message}${debug}\n`)
    code = 2
  } else if (err instanceof StartupError) {
    process.stderr.write(`faultline: ${err.message}${debug}\n`)
  } else {
    process.stderr.write(`faultline: ${describe(err)}${debug || (err instanceof Error ? '\n(FAULTLINE_DEBUG=1 shows where it came from)' : '')}\n`)
  }
  process.exit(code)
}

/** A Node error in words: "cannot read missing.yaml: no such file (ENOENT)". */
function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException
  const words: Record<string, string> = { ENOENT: 'no such file or directory', EACCES: 'permission denied', EISDIR: 'it is a directory', ENOTDIR: 'not a directory' }
  if (e?.code && e.path) return `cannot ${e.syscall === 'open' || e.syscall === 'read' ? 'read' : e.syscall ?? 'use'} ${e.path}: ${words[e.code] ?? e.message} (${e.code})`
  return e instanceof Error ? e.message : String(err)
}
