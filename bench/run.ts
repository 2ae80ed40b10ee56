import { parseArgs } from 'node:util'
import { formatInjectResult, runInjectBench } from './inject.js'

/**
 * `npm run bench [-- --rounds N] [-- --json]`: runs every benchmark in bench/ and prints a
 * table per benchmark, or one JSON object keyed by benchmark with --json. Progress goes to
 * stderr. Needs root: the benchmarks stop and resume real processes.
 */
function usage(message: string): never {
  process.stderr.write(`bench: ${message}\nusage: npm run bench -- [--rounds N] [--json]\n`)
  process.exit(2)
}

let values: { rounds?: string; json?: boolean }
try {
  ;({ values } = parseArgs({
    options: {
      rounds: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  }))
} catch (err) {
  usage((err as Error).message)
}

const rounds = values.rounds === undefined ? undefined : Number(values.rounds)
if (rounds !== undefined && (!Number.isInteger(rounds) || rounds < 1)) {
  usage(`--rounds takes a positive integer, not ${JSON.stringify(values.rounds)}`)
}

const inject = await runInjectBench(rounds !== undefined ? { rounds } : {})

if (values.json) process.stdout.write(`${JSON.stringify({ inject }, null, 2)}\n`)
else process.stdout.write(`${formatInjectResult(inject)}\n`)
