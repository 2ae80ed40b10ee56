import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
// The agent's own spawn helper: the baselines start nsenter + nft exactly the way the agent does.
import { run } from '../agent/exec.js'
import { agentClient, formatMachine, machineInfo, ratio, repoRoot, startAgent, stderrProgress, table, withCleanup, nftTablesIn, sh, type MachineInfo } from './lib.js'

/**
 * Stopping the agent (SIGTERM) with 100 network-partition injections active on one network
 * namespace: how long until every one is recovered and the process has exited, against
 * systemd's stop timeout for the unit (TimeoutStopSec in systemd/faultline-agent.service), and
 * against the same 100 tables deleted by bare nft in the same namespace in the same run (one
 * `nft delete table` after the other, and all in one `nft -f -` transaction), and the same 100
 * injections recovered through the API (one DELETE after the other).
 *
 * Needs root: it creates a network namespace (ip netns add) and nft tables in it.
 */

export interface ShutdownBenchOptions {
  /** Measured rounds (default 2): each starts an agent, fills the namespace twice, and stops it. */
  rounds?: number
  /** Injections active when the agent is stopped (default 100). */
  injections?: number
  progress?: (line: string) => void
}

export interface ShutdownRound {
  /** SIGTERM until the agent process exited, with `injections` active on the namespace. */
  agentStopMs: number
  /** The same number of injections recovered through the API, one DELETE after the other. */
  apiDeleteOneByOneMs: number
  /** Bare `nsenter --net=<ns> -- nft delete table inet <t>`, one table after the other. */
  nftOneByOneMs: number
  /** Bare `nsenter --net=<ns> -- nft -f -` with one `delete table` line per table: one transaction. */
  nftOneBatchMs: number
}

export interface ShutdownBenchResult {
  benchmark: 'shutdown/network-partition'
  machine: MachineInfo
  nftVersion: string
  injections: number
  /** TimeoutStopSec of systemd/faultline-agent.service, in seconds. */
  timeoutStopSec: number
  rounds: ShutdownRound[]
  /** Worst agent stop over the rounds / TimeoutStopSec. */
  worstShareOfTimeout: number
  /** Median-free summary: agent stop / each baseline, per round. */
  ratios: { vsNftOneByOne: number[]; vsNftOneBatch: number[]; vsApiDeleteOneByOne: number[] }
}

interface InjectionReply {
  id: string
  status: string
  plan: { table: string; script: string; steps: { phase: string; argv?: string[] }[] }
}

/** TimeoutStopSec of the agent's unit, in seconds (plain seconds or an "s"/"min" suffix). */
export function unitStopTimeoutSec(unitText: string): number {
  const m = /^TimeoutStopSec=(\d+)(s|min)?\s*$/m.exec(unitText)
  if (!m) throw new Error('no TimeoutStopSec=<seconds> in systemd/faultline-agent.service')
  return Number(m[1]) * (m[2] === 'min' ? 60 : 1)
}

/** A distinct /32 per injection: 10.200.1.1, 10.200.1.2, … (250 per /24). */
const peerOf = (k: number) => `10.200.${1 + Math.floor(k / 250)}.${(k % 250) + 1}/32`

export async function runShutdownBench(opts: ShutdownBenchOptions = {}): Promise<ShutdownBenchResult> {
  const rounds = opts.rounds ?? 2
  const injections = opts.injections ?? 100
  const progress = opts.progress ?? stderrProgress
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`rounds must be a positive integer, not ${rounds}`)
  if (!Number.isInteger(injections) || injections < 1 || injections > 1000) throw new Error(`injections must be an integer from 1 to 1000, not ${injections}`)
  const timeoutStopSec = unitStopTimeoutSec(readFileSync(join(repoRoot, 'systemd', 'faultline-agent.service'), 'utf8'))

  return withCleanup(async (cleanup) => {
    const nsName = `fl-shutdown-${process.pid}`
    const nsPath = `/var/run/netns/${nsName}`
    sh(['ip', 'netns', 'add', nsName])
    cleanup.add(`delete network namespace ${nsName}`, () => sh(['ip', 'netns', 'del', nsName]))
    sh(['ip', '-n', nsName, 'link', 'set', 'lo', 'up'])
    const nftVersion = sh(['nft', '--version']).trim()
    const target = { type: 'netns', name: nsName }
    const body = (k: number, duration: string) =>
      JSON.stringify({ fault: { kind: 'network-partition', direction: 'both', peers: [peerOf(k)] }, target, duration })

    const results: ShutdownRound[] = []
    for (let round = 0; round < rounds; round++) {
      const stateDir = mkdtempSync(join(tmpdir(), 'fl-bench-shutdown-'))
      const removeStateDir = cleanup.add('remove the state directory', () => rmSync(stateDir, { recursive: true, force: true }))
      progress(`round ${round + 1}/${rounds}: starting the agent (state dir ${stateDir}); network namespace ${nsName}`)
      const agent = await startAgent(stateDir)
      let stopped = false
      // On failure: SIGTERM, and SIGKILL after systemd's timeout, as systemd would.
      const stopOnFailure = cleanup.add('stop the agent', async () => {
        if (stopped || agent.child.exitCode !== null || agent.child.signalCode !== null) return
        agent.child.kill('SIGTERM')
        const timer = setTimeout(() => agent.child.kill('SIGKILL'), timeoutStopSec * 1000)
        await agent.exited
        clearTimeout(timer)
      })
      const { pool, call } = agentClient(agent)
      const closePool = cleanup.add('close the HTTP pool', () => pool.destroy().catch(() => undefined))

      // The exact script and argv the agent runs, from a dry run; the baselines use them with
      // their own table names.
      const dry = JSON.parse(await call('POST', '/v1/injections', 200, JSON.stringify({ ...JSON.parse(body(0, '1h')), dryRun: true }))) as InjectionReply
      const applyArgv = dry.plan.steps.find((s) => s.phase === 'apply')?.argv
      const recoverArgv = dry.plan.steps.find((s) => s.phase === 'recover')?.argv
      if (!applyArgv || !recoverArgv || !applyArgv.includes(`--net=${nsPath}`)) throw new Error(`unexpected plan from the dry run: ${JSON.stringify(dry.plan)}`)
      const nftArgv = applyArgv.slice(0, applyArgv.indexOf('-f'))

      async function fillWithBareNft(prefix: string): Promise<string[]> {
        const names: string[] = []
        for (let k = 0; k < injections; k++) {
          const name = `fl_bench_${prefix}_${String(k).padStart(4, '0')}`
          const res = await run(applyArgv!, { input: dry.plan.script.replaceAll(dry.plan.table, name) })
          if (res.code !== 0) throw new Error(`creating table ${name} failed: ${res.stderr.trim()}`)
          names.push(name)
        }
        return names
      }
      const expectTables = (n: number, when: string) => {
        const found = nftTablesIn(nsPath).length
        if (found !== n) throw new Error(`${when}: expected ${n} nft tables in ${nsName}, found ${found}`)
      }

      progress(`round ${round + 1}: bare nft, ${injections} tables deleted one after the other`)
      let names = await fillWithBareNft('one')
      expectTables(injections, 'before the bare one-by-one delete')
      let t0 = performance.now()
      for (const name of names) {
        const res = await run(recoverArgv.map((w) => (w === dry.plan.table ? name : w)))
        if (res.code !== 0) throw new Error(`nft delete table inet ${name} failed: ${res.stderr.trim()}`)
      }
      const nftOneByOneMs = performance.now() - t0
      expectTables(0, 'after the bare one-by-one delete')

      progress(`round ${round + 1}: bare nft, ${injections} tables deleted in one transaction`)
      names = await fillWithBareNft('batch')
      expectTables(injections, 'before the bare batch delete')
      t0 = performance.now()
      const batch = await run([...nftArgv, '-f', '-'], { input: names.map((n) => `delete table inet ${n}\n`).join('') })
      const nftOneBatchMs = performance.now() - t0
      if (batch.code !== 0) throw new Error(`nft -f - (delete ${injections} tables) failed: ${batch.stderr.trim()}`)
      expectTables(0, 'after the bare batch delete')

      const post = async (): Promise<string[]> => {
        const ids: string[] = []
        for (let k = 0; k < injections; k++) {
          const created = JSON.parse(await call('POST', '/v1/injections', 201, body(k, '1h'))) as InjectionReply
          if (created.status !== 'active') throw new Error(`injection ${created.id} is ${created.status}, not active`)
          ids.push(created.id)
        }
        expectTables(injections, 'with the injections active')
        return ids
      }

      progress(`round ${round + 1}: ${injections} injections through the agent, recovered one DELETE after the other`)
      const ids = await post()
      t0 = performance.now()
      for (const id of ids) {
        const recovered = JSON.parse(await call('DELETE', `/v1/injections/${encodeURIComponent(id)}`, 200)) as InjectionReply
        if (recovered.status !== 'recovered') throw new Error(`injection ${id} answered status ${recovered.status} after DELETE`)
      }
      const apiDeleteOneByOneMs = performance.now() - t0
      expectTables(0, 'after the DELETEs')

      progress(`round ${round + 1}: ${injections} injections through the agent, then SIGTERM`)
      await post()
      await closePool()
      const warningsBefore = agent.warnings.length
      t0 = performance.now()
      agent.child.kill('SIGTERM')
      const killer = setTimeout(() => agent.child.kill('SIGKILL'), timeoutStopSec * 1000)
      await agent.exited
      clearTimeout(killer)
      const agentStopMs = performance.now() - t0
      stopped = true
      await stopOnFailure()
      if (agent.child.signalCode !== null || agent.child.exitCode !== 0) {
        throw new Error(`the agent ended with ${agent.child.signalCode ?? `exit ${agent.child.exitCode}`} after SIGTERM (killed at systemd's ${timeoutStopSec} s?)`)
      }
      const shutdownWarnings = agent.warnings.slice(warningsBefore)
      if (shutdownWarnings.length > 0) throw new Error(`the agent warned while stopping: ${shutdownWarnings.slice(0, 3).join('; ')}`)
      expectTables(0, 'after the agent stopped')
      await removeStateDir()
      results.push({ agentStopMs, apiDeleteOneByOneMs, nftOneByOneMs, nftOneBatchMs })
    }

    const worst = Math.max(...results.map((r) => r.agentStopMs))
    return {
      benchmark: 'shutdown/network-partition',
      machine: machineInfo(),
      nftVersion,
      injections,
      timeoutStopSec,
      rounds: results.map((r) => ({
        agentStopMs: Math.round(r.agentStopMs),
        apiDeleteOneByOneMs: Math.round(r.apiDeleteOneByOneMs),
        nftOneByOneMs: Math.round(r.nftOneByOneMs),
        nftOneBatchMs: Math.round(r.nftOneBatchMs),
      })),
      worstShareOfTimeout: ratio(worst, timeoutStopSec * 1000, 3),
      ratios: {
        vsNftOneByOne: results.map((r) => ratio(r.agentStopMs, r.nftOneByOneMs, 2)),
        vsNftOneBatch: results.map((r) => ratio(r.agentStopMs, r.nftOneBatchMs, 2)),
        vsApiDeleteOneByOne: results.map((r) => ratio(r.agentStopMs, r.apiDeleteOneByOneMs, 2)),
      },
    }
  })
}

const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`

export function formatShutdownResult(r: ShutdownBenchResult): string {
  return [
    `${r.benchmark}: SIGTERM to the agent with ${r.injections} injections active on one network namespace, ${r.rounds.length} rounds`,
    formatMachine(r.machine),
    r.nftVersion,
    '',
    table(
      ['round', 'agent stop (SIGTERM → exit)', 'DELETE one by one', 'bare nft one by one', 'bare nft, one transaction', 'stop / nft one by one', 'stop / nft batch', 'stop / DELETEs'],
      r.rounds.map((x, i) => [
        `${i + 1}`,
        s(x.agentStopMs),
        s(x.apiDeleteOneByOneMs),
        s(x.nftOneByOneMs),
        s(x.nftOneBatchMs),
        `${r.ratios.vsNftOneByOne[i]}×`,
        `${r.ratios.vsNftOneBatch[i]}×`,
        `${r.ratios.vsApiDeleteOneByOne[i]}×`,
      ]),
    ),
    '',
    `systemd TimeoutStopSec=${r.timeoutStopSec} s: the slowest stop used ${(r.worstShareOfTimeout * 100).toFixed(1)} % of it`,
  ].join('\n')
}
