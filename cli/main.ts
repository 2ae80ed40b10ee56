#!/usr/bin/env node
import { ConfigError } from '../common/config.js'
import { isFaultlineError } from '../protocol/errors.js'
import { buildProgram } from './program.js'

try {
  await buildProgram().parseAsync(process.argv)
} catch (err) {
  if (isFaultlineError(err)) {
    process.stderr.write(`faultline: ${err.message} [${err.code}]\n`)
    process.exitCode = 1
  } else if (err instanceof ConfigError) {
    process.stderr.write(`faultline: ${err.message}\n`)
    process.exitCode = 2
  } else {
    process.stderr.write(`faultline: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  }
}
