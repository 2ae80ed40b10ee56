import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
// The agent's own spawn helper: the baseline starts nsenter + nft exactly the way the agent does.
import { run } from '../agent/exec.js'
import { nftEnv } from '../agent/faults/shared/network.js'
import {
  CLOCK_TICKS_PER_SECOND,
  agentClient,
  childCpuTicks,
  cpuTicks,
  formatMachine,
  histogramMeanUs,
  machineInfo,
  parseHistograms,
  ratio,
  startAgent,
  stderrProgress,
  stopAgent,
  summarise,
  table,
  us,
  withCleanup,
  type LatencySummary,
  type MachineInfo,
  nftTablesIn,
  sh,
} from './lib.js'

/**
 * Inject and recover latency of network-partition through the real agent, with 0, 10 and 100
 * injections already active on the same network namespace, against the bare nft commands the
 * injection needs, run in the same namespace at the same level in the same run. DESIGN.md
 * section 7: the agent's figures must stay flat as injections pile up.
 *
 * Needs root: it creates a network namespace (ip netns add) and nft tables in it.
 */

export interface NetworkBenchOptions {
  /** Measured rounds per level (default 40). */
  rounds?: number
  /** Unmeasured rounds first at every level (default 5). */
  warmupRounds?: number
  /** Numbers of injections already active while a level is measured (default 0, 10, 100). */
  levels?: number[]
  progress?: (line: string) => void
}

export interface StepComparison {
  /** Through the agent: the HTTP request until its answer, client-side. */
  agent: LatencySummary
  /** The bare nft command, spawned with nsenter the way the agent spawns it (the caller's environment). */
  nft: LatencySummary
  /** The same bare command with the environment the agent gives nft (nftEnv: glibc malloc tunables). */
  nftAgentEnv: LatencySummary
  ratioMedian: number
  ratioP99: number
  /** agent median / median of nft with the agent's environment. */
  ratioMedianAgentEnv: number
  /** agent median - nft median: what the agent adds to the command it runs. */
  overheadMedianUs: number
}

export interface NetworkLevelResult {
  /** Injections active on the namespace (each with its own table) while this level was measured. */
  active: number
  /** POST /v1/injections until 201 active, vs `nsenter --net=<ns> -- nft -f -` with the same script. */
  inject: StepComparison
  /** DELETE /v1/injections/<id> until 200 recovered, vs `nsenter --net=<ns> -- nft delete table inet <t>`. */
  recover: StepComparison
  /** Means of the agent's own apply/recover histograms over this level's measured rounds. */
  agentInternal: { applyMeanUs: number; recoverMeanUs: number }
  /**
   * CPU time per inject + recover pair over the measured rounds (ticks of 1/CLK_TCK s, so the
   * resolution is 1000 / CLK_TCK / rounds ms): the agent process itself, the nsenter + nft
   * children it ran, and the nsenter + nft children the baseline ran.
   */
  cpuPerPairMs: { agentProcess: number; agentChildren: number; baselineChildren: number; baselineAgentEnvChildren: number }
}

export interface Flatness {
  /** Median at the highest level / median at the lowest level. */
  agentMedian: number
  nftMedian: number
  nftAgentEnvMedian: number
  agentP99: number
  nftP99: number
  /** Agent median minus nft median at the lowest and at the highest level (a difference, not a ratio). */
  agentOverheadMedianUs: [number, number]
}

export interface NetworkBenchResult {
  benchmark: 'inject-latency/network-partition'
  machine: MachineInfo
  nftVersion: string
  rounds: number
  warmupRounds: number
  levels: NetworkLevelResult[]
  /** From the lowest to the highest level. */
  flatness: { from: number; to: number; inject: Flatness; recover: Flatness }
  /** Recovering the pre-created injections at the end, one DELETE after the other, in total. */
  recoverPreCreatedMs: number
  /** The nft script of one measured injection (the baseline runs it with its own table name). */
  script: string
}

interface InjectionReply {
  id: string
  status: string
  plan: { table: string; script: string; steps: { phase: string; argv?: string[] }[] }
}

/** A distinct /32 per pre-created injection: 10.200.1.1, 10.200.1.2, … (250 per /24). */
const backgroundPeer = (k: number) => `10.200.${1 + Math.floor(k / 250)}.${(k % 250) + 1}/32`
/** The measured injections' peer; no pre-created injection uses it. */
const measuredPeer = '10.200.0.1/32'

export async function runNetworkBench(opts: NetworkBenchOptions = {}): Promise<NetworkBenchResult> {
  const rounds = opts.rounds ?? 40
  const warmupRounds = opts.warmupRounds ?? 5
  const levels = [...(opts.levels ?? [0, 10, 100])].sort((a, b) => a - b)
  const progress = opts.progress ?? stderrProgress
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`rounds must be a positive integer, not ${rounds}`)
  if (!Number.isInteger(warmupRounds) || warmupRounds < 0) throw new Error(`warmupRounds must be a non-negative integer, not ${warmupRounds}`)
  if (levels.length === 0 || levels.some((l) => !Number.isInteger(l) || l < 0 || l > 1000)) {
    throw new Error(`levels must be integers from 0 to 1000, not ${JSON.stringify(opts.levels)}`)
  }

  // On success, failure or Ctrl-C: close the connection, stop the agent (SIGTERM: it recovers
  // every injection), delete the namespace (and with it anything left in it), remove the state dir.
  return withCleanup(async (cleanup) => {
    const stateDir = mkdtempSync(join(tmpdir(), 'fl-bench-'))
    cleanup.add('remove the state directory', () => rmSync(stateDir, { recursive: true, force: true }))

    const nsName = `fl-bench-${process.pid}`
    const nsPath = `/var/run/netns/${nsName}`
    // Fails if the name is taken: then it is not ours, and the cleanup below is not registered.
    sh(['ip', 'netns', 'add', nsName])
    cleanup.add(`delete network namespace ${nsName}`, () => sh(['ip', 'netns', 'del', nsName]))
    sh(['ip', '-n', nsName, 'link', 'set', 'lo', 'up'])
    const nftVersion = sh(['nft', '--version']).trim()

    progress(`starting the agent (state dir ${stateDir}); network namespace ${nsName}`)
    const agent = await startAgent(stateDir)
    const stopTheAgent = cleanup.add('stop the agent', () => stopAgent(agent))
    const { pool, call } = agentClient(agent)
    cleanup.add('close the HTTP pool', () => pool.destroy().catch(() => undefined))

    const target = { type: 'netns', name: nsName }
    const partition = (peer: string) => ({ kind: 'network-partition', direction: 'both', peers: [peer] })
    const measuredBody = JSON.stringify({ fault: partition(measuredPeer), target, duration: '10m' })

    // The exact script and argv the agent would run, from a dry run; the baseline runs them with
    // its own table name (a new one per round, as the agent names a table per injection).
    const dry = JSON.parse(
      await call('POST', '/v1/injections', 200, JSON.stringify({ fault: partition(measuredPeer), target, duration: '10m', dryRun: true })),
    ) as InjectionReply
    const applyArgv = dry.plan.steps.find((s) => s.phase === 'apply')?.argv
    const recoverArgv = dry.plan.steps.find((s) => s.phase === 'recover')?.argv
    if (!applyArgv || !recoverArgv || !dry.plan.script.includes(dry.plan.table)) {
      throw new Error(`unexpected network-partition plan from the dry run: ${JSON.stringify(dry.plan)}`)
    }
    if (!applyArgv.includes(`--net=${nsPath}`)) throw new Error(`the plan does not enter ${nsPath}: ${applyArgv.join(' ')}`)
    const agentTable = dry.plan.table
    let baselineCounter = 0
    const baselineTable = () => `fl_bench_${(baselineCounter++).toString().padStart(6, '0')}_baseline`
    const swapTable = (words: string[], name: string) => words.map((w) => (w === agentTable ? name : w))

    async function agentRound(): Promise<[number, number]> {
      const t0 = performance.now()
      const created = JSON.parse(await call('POST', '/v1/injections', 201, measuredBody)) as InjectionReply
      const t1 = performance.now()
      const recovered = JSON.parse(await call('DELETE', `/v1/injections/${encodeURIComponent(created.id)}`, 200)) as InjectionReply
      const t2 = performance.now()
      if (created.status !== 'active') throw new Error(`injection ${created.id} answered status ${created.status}, not active`)
      if (recovered.status !== 'recovered') throw new Error(`injection ${created.id} answered status ${recovered.status} after DELETE`)
      return [t1 - t0, t2 - t1]
    }

    async function baselineRound(env?: NodeJS.ProcessEnv): Promise<[number, number]> {
      const name = baselineTable()
      const script = dry.plan.script.replaceAll(agentTable, name)
      const t0 = performance.now()
      const created = await run(applyArgv!, { input: script, ...(env ? { env } : {}) })
      const t1 = performance.now()
      const deleted = await run(swapTable(recoverArgv!, name), env ? { env } : {})
      const t2 = performance.now()
      if (created.code !== 0) throw new Error(`${applyArgv!.join(' ')} failed: ${created.stderr.trim()}`)
      if (deleted.code !== 0) throw new Error(`nft delete table inet ${name} failed: ${deleted.stderr.trim()}`)
      return [t1 - t0, t2 - t1]
    }

    const activeIds: string[] = []
    async function raiseActiveTo(n: number): Promise<void> {
      while (activeIds.length < n) {
        const body = JSON.stringify({ fault: partition(backgroundPeer(activeIds.length)), target, duration: '1h' })
        const created = JSON.parse(await call('POST', '/v1/injections', 201, body)) as InjectionReply
        if (created.status !== 'active') throw new Error(`pre-created injection ${created.id} is ${created.status}, not active`)
        activeIds.push(created.id)
      }
    }

    async function checkLevel(n: number, when: string): Promise<void> {
      const active = (JSON.parse(await call('GET', '/v1/injections?status=active', 200)) as { injections: unknown[] }).injections.length
      const tables = nftTablesIn(nsPath).length
      if (active !== n || tables !== n) throw new Error(`${when}: expected ${n} active injections and nft tables, found ${active} and ${tables}`)
    }

    const results: NetworkLevelResult[] = []
    for (const level of levels) {
      progress(`level ${level}: pre-creating injections`)
      await raiseActiveTo(level)
      await checkLevel(level, `before level ${level}`)

      const samples = {
        agentInject: [] as number[],
        agentRecover: [] as number[],
        nftInject: [] as number[],
        nftRecover: [] as number[],
        nftAgentEnvInject: [] as number[],
        nftAgentEnvRecover: [] as number[],
      }
      const agentEnv = nftEnv()
      // CPU of the baselines' children, per variant: ticks of this process's reaped children
      // before and after each baseline round.
      const baselineTicks = { nft: 0, nftAgentEnv: 0 }
      async function runRounds(n: number, record: boolean): Promise<void> {
        const variants = ['agent', 'nft', 'nftAgentEnv'] as const
        for (let i = 0; i < n; i++) {
          // Interleaved, and the order rotates each round, so drift and periodic noise hit
          // the agent and the baselines alike.
          const order = variants.map((_, k) => variants[(i + k) % variants.length]!)
          for (const variant of order) {
            const ticksBefore = childCpuTicks('self')
            const [inject, recover] =
              variant === 'agent' ? await agentRound() : await baselineRound(variant === 'nftAgentEnv' ? agentEnv : undefined)
            if (!record) continue
            if (variant !== 'agent') baselineTicks[variant] += childCpuTicks('self') - ticksBefore
            samples[`${variant}Inject`].push(inject)
            samples[`${variant}Recover`].push(recover)
          }
        }
      }

      progress(`level ${level}: warm-up ${warmupRounds} rounds, then ${rounds} measured rounds`)
      await runRounds(warmupRounds, false)
      const before = parseHistograms(await call('GET', '/metrics', 200), 'network-partition')
      const cpuBefore = [cpuTicks(agent.pid), childCpuTicks(agent.pid)]
      await runRounds(rounds, true)
      const cpuAfter = [cpuTicks(agent.pid), childCpuTicks(agent.pid)]
      const after = parseHistograms(await call('GET', '/metrics', 200), 'network-partition')
      const perPairMs = (ticks: number) => Math.round(((ticks / CLOCK_TICKS_PER_SECOND) * 1000 * 100) / rounds) / 100
      const cpuMs = (i: number) => perPairMs(cpuAfter[i]! - cpuBefore[i]!)
      await checkLevel(level, `after level ${level}`)

      const compare = (agentMs: number[], nftMs: number[], nftAgentEnvMs: number[]): StepComparison => {
        const a = summarise(agentMs)
        const n = summarise(nftMs)
        const e = summarise(nftAgentEnvMs)
        return {
          agent: a,
          nft: n,
          nftAgentEnv: e,
          ratioMedian: ratio(a.medianUs, n.medianUs, 2),
          ratioP99: ratio(a.p99Us, n.p99Us, 2),
          ratioMedianAgentEnv: ratio(a.medianUs, e.medianUs, 2),
          overheadMedianUs: Math.round((a.medianUs - n.medianUs) * 10) / 10,
        }
      }
      results.push({
        active: level,
        inject: compare(samples.agentInject, samples.nftInject, samples.nftAgentEnvInject),
        recover: compare(samples.agentRecover, samples.nftRecover, samples.nftAgentEnvRecover),
        agentInternal: { applyMeanUs: histogramMeanUs(before, after, 'apply'), recoverMeanUs: histogramMeanUs(before, after, 'recover') },
        cpuPerPairMs: {
          agentProcess: cpuMs(0),
          agentChildren: cpuMs(1),
          baselineChildren: perPairMs(baselineTicks.nft),
          baselineAgentEnvChildren: perPairMs(baselineTicks.nftAgentEnv),
        },
      })
    }

    // Take the pre-created injections back out through the API, one DELETE each, then stop the
    // agent: the namespace must be empty. (A SIGTERM recovers them too: bench/shutdown.ts times that.)
    progress(`recovering the ${activeIds.length} pre-created injections`)
    const recoverStarted = performance.now()
    while (activeIds.length > 0) {
      const id = activeIds.pop()!
      const recovered = JSON.parse(await call('DELETE', `/v1/injections/${encodeURIComponent(id)}`, 200)) as InjectionReply
      if (recovered.status !== 'recovered') throw new Error(`pre-created injection ${id} answered status ${recovered.status} after DELETE`)
    }
    const recoverAllMs = performance.now() - recoverStarted
    if (agent.warnings.length > 0) progress(`the agent logged ${agent.warnings.length} warnings, e.g. ${agent.warnings[0]}`)
    await stopTheAgent()
    const left = nftTablesIn(nsPath)
    if (left.length > 0) throw new Error(`${left.length} nft tables are left in ${nsName} after recovery: ${left.slice(0, 3).join(', ')}`)

    const first = results[0]!
    const last = results[results.length - 1]!
    const flat = (step: 'inject' | 'recover'): Flatness => ({
      agentMedian: ratio(last[step].agent.medianUs, first[step].agent.medianUs, 2),
      nftMedian: ratio(last[step].nft.medianUs, first[step].nft.medianUs, 2),
      nftAgentEnvMedian: ratio(last[step].nftAgentEnv.medianUs, first[step].nftAgentEnv.medianUs, 2),
      agentP99: ratio(last[step].agent.p99Us, first[step].agent.p99Us, 2),
      nftP99: ratio(last[step].nft.p99Us, first[step].nft.p99Us, 2),
      agentOverheadMedianUs: [first[step].overheadMedianUs, last[step].overheadMedianUs],
    })
    return {
      benchmark: 'inject-latency/network-partition',
      machine: machineInfo(),
      nftVersion,
      rounds,
      warmupRounds,
      levels: results,
      flatness: { from: first.active, to: last.active, inject: flat('inject'), recover: flat('recover') },
      recoverPreCreatedMs: Math.round(recoverAllMs),
      script: dry.plan.script,
    }
  })
}

// ---- output --------------------------------------------------------------------------------

const signedUs = (x: number) => (x < 0 ? `-${us(-x)}` : us(x))

export function formatNetworkResult(r: NetworkBenchResult): string {
  const rows: string[][] = []
  for (const l of r.levels) {
    for (const step of ['inject', 'recover'] as const) {
      const c = l[step]
      rows.push([
        `${l.active}`,
        step,
        us(c.agent.medianUs),
        us(c.agent.p99Us),
        us(c.nft.medianUs),
        us(c.nft.p99Us),
        `${c.ratioMedian}×`,
        `${c.ratioP99}×`,
        us(c.nftAgentEnv.medianUs),
        `${c.ratioMedianAgentEnv}×`,
        signedUs(c.overheadMedianUs),
        us(step === 'inject' ? l.agentInternal.applyMeanUs : l.agentInternal.recoverMeanUs),
      ])
    }
  }
  const f = r.flatness
  return [
    `${r.benchmark}: ${r.rounds} rounds per level after ${r.warmupRounds} warm-up, interleaved`,
    formatMachine(r.machine),
    r.nftVersion,
    '',
    table(
      ['active', 'step', 'agent median', 'agent p99', 'nft median', 'nft p99', 'ratio median', 'ratio p99', 'nft, agent env, median', 'ratio to it', 'agent - nft median', 'agent internal mean'],
      rows,
    ),
    '',
    'inject: POST /v1/injections until 201 (agent) vs nsenter --net=<ns> -- nft -f - with the same script (nft)',
    'recover: DELETE /v1/injections/<id> until 200 (agent) vs nsenter --net=<ns> -- nft delete table inet <t> (nft)',
    "nft, agent env: the same bare commands with the environment the agent gives nft (GLIBC_TUNABLES from nftEnv)",
    '',
    table(
      [`flatness: at ${f.to} active / at ${f.from} active`, 'agent median', 'nft median', 'nft, agent env, median', 'agent p99', 'nft p99', `agent - nft median, ${f.from} → ${f.to}`],
      (['inject', 'recover'] as const).map((step) => [
        step,
        `${f[step].agentMedian}×`,
        `${f[step].nftMedian}×`,
        `${f[step].nftAgentEnvMedian}×`,
        `${f[step].agentP99}×`,
        `${f[step].nftP99}×`,
        `${signedUs(f[step].agentOverheadMedianUs[0])} → ${signedUs(f[step].agentOverheadMedianUs[1])}`,
      ]),
    ),
    '',
    table(
      ['CPU per inject + recover pair', ...r.levels.map((l) => `${l.active} active`)],
      [
        ['agent process', ...r.levels.map((l) => `${l.cpuPerPairMs.agentProcess.toFixed(2)} ms`)],
        ["agent's nsenter + nft children", ...r.levels.map((l) => `${l.cpuPerPairMs.agentChildren.toFixed(2)} ms`)],
        ["baseline's nsenter + nft children", ...r.levels.map((l) => `${l.cpuPerPairMs.baselineChildren.toFixed(2)} ms`)],
        ["baseline's children, agent env", ...r.levels.map((l) => `${l.cpuPerPairMs.baselineAgentEnvChildren.toFixed(2)} ms`)],
      ],
    ),
    `recovering the pre-created injections at the end (one DELETE after the other): ${(r.recoverPreCreatedMs / 1000).toFixed(1)} s`,
  ].join('\n')
}
