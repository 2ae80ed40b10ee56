import { parseArgs } from 'node:util'
import { formatChaosdResult, runChaosdBench, type ChaosdBenchResult } from './chaosd.js'
import { formatDashboardResult, runDashboardBench, type DashboardBenchResult } from './dashboard.js'
import { formatDiscoveryResult, runDiscoveryBench, type DiscoveryBenchResult } from './discovery.js'
import { formatInjectResult, runInjectBench, type InjectBenchResult } from './inject.js'
import { formatIofaultResult, runIofaultBench, type IofaultBenchResult } from './iofault.js'
import { formatNetworkResult, runNetworkBench, type NetworkBenchResult } from './network.js'
import { formatServerResult, runServerBench, type ServerBenchResult } from './server.js'
import { formatFootprintResult, runFootprintBench, type FootprintResult } from './footprint.js'
import { formatShutdownResult, runShutdownBench, type ShutdownBenchResult } from './shutdown.js'
import { formatStressResult, runStressBench, type StressBenchResult } from './stress.js'
import { formatTimeskewResult, runTimeskewBench, type TimeskewBenchResult } from './timeskew.js'

/**
 * `npm run bench [-- --only inject|footprint|network|shutdown|discovery|stress|timeskew|iofault|server|chaosd|dashboard] [-- --rounds N] [-- --warmup N] [-- --json]`:
 * runs every benchmark in bench/ (or the one named by --only) and prints a table per benchmark,
 * or one JSON object keyed by benchmark with --json. --rounds and --warmup override each
 * benchmark's defaults (inject: 200 and 20; footprint: 1000 pairs between two 30 s idle windows, no rounds; network: 40 and 5 per level; shutdown: 2 rounds of 100
 * injections, no warm-up; discovery: 30 and 3;
 * stress: 3 rounds per level and method, no warm-up; timeskew: 200 and 20; iofault: 30 and 3 inject/recover pairs; server: 5 and 1 per
 * fleet size, 100, 1000 and 5000 simulated agents; chaosd: 200 and 20; dashboard: 10 and 1 page loads
 * of each side, 1000 simulated agents).
 * Progress goes to stderr. Needs root: the benchmarks stop and resume real processes, create a
 * network namespace and run containers (discovery: start the runtimes first with
 * scripts/test-runtimes.sh start; dashboard: Chromium at /usr/bin/chromium).
 */
const benchmarks = ['inject', 'footprint', 'network', 'shutdown', 'discovery', 'stress', 'timeskew', 'iofault', 'server', 'chaosd', 'dashboard'] as const
type Benchmark = (typeof benchmarks)[number]

function usage(message: string): never {
  process.stderr.write(
    `bench: ${message}\nusage: npm run bench -- [--only ${benchmarks.join('|')}] [--rounds N] [--warmup N] [--json]\n`,
  )
  process.exit(2)
}

let values: { rounds?: string; warmup?: string; only?: string; json?: boolean }
try {
  ;({ values } = parseArgs({
    options: {
      rounds: { type: 'string' },
      warmup: { type: 'string' },
      only: { type: 'string' },
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
const warmupRounds = values.warmup === undefined ? undefined : Number(values.warmup)
if (warmupRounds !== undefined && (!Number.isInteger(warmupRounds) || warmupRounds < 0)) {
  usage(`--warmup takes a non-negative integer, not ${JSON.stringify(values.warmup)}`)
}
if (values.only !== undefined && !(benchmarks as readonly string[]).includes(values.only)) {
  usage(`--only takes one of ${benchmarks.join(', ')}, not ${JSON.stringify(values.only)}`)
}
const selected: readonly Benchmark[] = values.only === undefined ? benchmarks : [values.only as Benchmark]

const opts = { ...(rounds !== undefined ? { rounds } : {}), ...(warmupRounds !== undefined ? { warmupRounds } : {}) }
const results: { inject?: InjectBenchResult; footprint?: FootprintResult; network?: NetworkBenchResult; shutdown?: ShutdownBenchResult; discovery?: DiscoveryBenchResult; stress?: StressBenchResult; timeskew?: TimeskewBenchResult; iofault?: IofaultBenchResult; server?: ServerBenchResult; chaosd?: ChaosdBenchResult; dashboard?: DashboardBenchResult } = {}
const tables: string[] = []
const runners: Record<Benchmark, () => Promise<string>> = {
  inject: async () => formatInjectResult((results.inject = await runInjectBench(opts))),
  footprint: async () => formatFootprintResult((results.footprint = await runFootprintBench())),
  network: async () => formatNetworkResult((results.network = await runNetworkBench(opts))),
  shutdown: async () => formatShutdownResult((results.shutdown = await runShutdownBench(rounds !== undefined ? { rounds } : {}))),
  discovery: async () => formatDiscoveryResult((results.discovery = await runDiscoveryBench(opts))),
  stress: async () => formatStressResult((results.stress = await runStressBench(opts))),
  timeskew: async () => formatTimeskewResult((results.timeskew = await runTimeskewBench(opts))),
  iofault: async () => formatIofaultResult((results.iofault = await runIofaultBench(opts))),
  server: async () => formatServerResult((results.server = await runServerBench(opts))),
  chaosd: async () => formatChaosdResult((results.chaosd = await runChaosdBench(opts))),
  dashboard: async () => formatDashboardResult((results.dashboard = await runDashboardBench(opts))),
}
for (const name of selected) tables.push(await runners[name]())

if (values.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`)
else process.stdout.write(`${tables.join('\n\n')}\n`)
