import Database from 'better-sqlite3'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { buildAgent } from '../agent/app.js'
import {
  agentClient,
  idleFootprints,
  procState,
  resumeAndKill,
  type Footprint,
  formatMachine,
  histogramMeanUs,
  machineInfo,
  parseHistograms,
  ratio,
  sleep,
  startBareNode,
  startAgent,
  stderrProgress,
  stopAgent,
  summarise,
  table,
  track,
  us,
  withCleanup,
  type Cleanup,
  type LatencySummary,
  type MachineInfo,
} from './lib.js'

export type { LatencySummary } from './lib.js'

/**
 * Inject-and-recover latency of process-stop through the real agent (HTTP, journal, signal),
 * against the bare kernel work it needs, measured in the same run; plus the agent's idle
 * footprint against a bare Node process. DESIGN.md section 7: figures are ratios against a
 * baseline measured in the same run, because the machines we run on are noisy.
 *
 * Needs root (or CAP_KILL over the sleep it spawns, and permission to read /proc of its children).
 */

export interface InjectBenchOptions {
  /** Measured rounds of each variant (default 200). */
  rounds?: number
  /** Unmeasured rounds first (default 20): JIT, the capability probe, SQLite page cache. */
  warmupRounds?: number
  /** Idle settle time before a footprint window (default 5 s). */
  idleSettleMs?: number
  /** Length of the CPU window (default 10 s). */
  idleWindowMs?: number
  /** Progress lines go here (stderr by default), so --json keeps stdout clean. */
  progress?: (line: string) => void
}

export interface InjectBenchResult {
  benchmark: 'inject-recover/process-stop'
  machine: MachineInfo
  rounds: number
  warmupRounds: number
  latency: {
    /** POST /v1/injections (201) then DELETE /v1/injections/<id> (200, recovered), client-side. */
    agentPair: LatencySummary
    /** kill(SIGSTOP), spin until state T, kill(SIGCONT), spin until state is not T. */
    killPairWithStateWait: LatencySummary
    /** kill(SIGSTOP), kill(SIGCONT): the two syscalls alone. */
    killPairBare: LatencySummary
    /** Two GET /healthz on the same connection: the HTTP floor of any two-request pair. */
    twoHealthzRequests: LatencySummary
    /**
     * Two commits with synchronous = FULL (WAL) of one small row in a scratch SQLite file next
     * to the agent's state dir: what the fsyncs a pair truly needs cost on this disk now.
     */
    twoSyncedCommits: LatencySummary
  }
  /**
   * Journal commits per pair, and of them fsynced, counted by the Journal itself over
   * `journalPairs` pairs through an in-process agent (Injector.stats) after the timed rounds.
   */
  journal: { pairs: number; commitsPerPair: number; syncedCommitsPerPair: number }
  /**
   * Issue 18's target for a pair: at most 2 × two GET /healthz plus the fsyncs it needs
   * (syncedCommitsPerPair × half of twoSyncedCommits), medians of this run.
   */
  target: { budgetUs: number; medianVsBudget: number; medianVsTwoHealthz: number }
  ratios: {
    medianVsStateWait: number
    p99VsStateWait: number
    medianVsBare: number
    p99VsBare: number
  }
  /** What the agent's own histograms say (mean over the measured rounds), from /metrics. */
  agentInternal: { applyMeanUs: number; recoverMeanUs: number }
  idle: {
    agentAtStart: Footprint
    bareNodeAtStart: Footprint
    agentAfterRounds: Footprint
    bareNodeAfterRounds: Footprint
    rssRatioAtStart: number
    rssRatioAfterRounds: number
  }
}

// ---- /proc ---------------------------------------------------------------------------------

const isStopped = (state: string) => state === 'T' || state === 't'

/** Busy-waits (synchronously, no timers) until the state matches; throws after timeoutMs. */
function spinUntilState(pid: number, wanted: (state: string) => boolean, timeoutMs = 2_000): void {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const state = procState(pid)
    if (wanted(state)) return
    if (performance.now() > deadline) throw new Error(`pid ${pid} still in state ${state} after ${timeoutMs} ms`)
  }
}

// ---- child processes -----------------------------------------------------------------------

// ---- the benchmark -------------------------------------------------------------------------

interface InjectionReply {
  id: string
  status: string
}

export async function runInjectBench(opts: InjectBenchOptions = {}): Promise<InjectBenchResult> {
  const rounds = opts.rounds ?? 200
  const warmupRounds = opts.warmupRounds ?? 20
  const settleMs = opts.idleSettleMs ?? 5_000
  const windowMs = opts.idleWindowMs ?? 10_000
  const progress = opts.progress ?? stderrProgress
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`rounds must be a positive integer, not ${rounds}`)

  // A Ctrl-C mid-run must not leave the sleep stopped or the agent running.
  return withCleanup(async (cleanup) => {
    const stateDir = mkdtempSync(join(tmpdir(), 'fl-bench-'))
    cleanup.add('remove the state directory', () => rmSync(stateDir, { recursive: true, force: true }))

    progress(`starting the agent (state dir ${stateDir}) and a bare node process`)
    const agent = await startAgent(stateDir)
    cleanup.add('stop the agent', () => stopAgent(agent))
    const bareNode = startBareNode(cleanup)
    const target = track(spawn('sleep', ['3600'], { stdio: 'ignore' }), 'sleep')
    cleanup.add('resume and kill the target', () => resumeAndKill(target))
    const agentPid = agent.pid
    const bareNodePid = bareNode.pid
    const pid = target.pid
    spinUntilState(pid, (s) => s === 'S')

    progress(`idle footprint at start (${settleMs / 1000} s settle, ${windowMs / 1000} s window)`)
    const [agentAtStart, bareNodeAtStart] = await idleFootprints([agentPid, bareNodePid], settleMs, windowMs)

    // One keep-alive connection, as a controller talking to one agent would use.
    const { pool, call } = agentClient(agent)
    const closePool = cleanup.add('close the HTTP pool', () => pool.destroy().catch(() => undefined))
    const body = JSON.stringify({ fault: { kind: 'process-stop' }, target: { type: 'process', pid }, duration: '60s' })

    async function agentPair(): Promise<number> {
      const t0 = performance.now()
      const created = JSON.parse(await call('POST', '/v1/injections', 201, body)) as InjectionReply
      const recovered = JSON.parse(await call('DELETE', `/v1/injections/${encodeURIComponent(created.id)}`, 200)) as InjectionReply
      const elapsed = performance.now() - t0
      if (created.status !== 'active') throw new Error(`injection ${created.id} answered status ${created.status}, not active`)
      if (recovered.status !== 'recovered') throw new Error(`injection ${created.id} answered status ${recovered.status} after DELETE`)
      return elapsed
    }

    function killPairWithStateWait(): number {
      const t0 = performance.now()
      process.kill(pid, 'SIGSTOP')
      spinUntilState(pid, isStopped)
      process.kill(pid, 'SIGCONT')
      spinUntilState(pid, (s) => !isStopped(s))
      return performance.now() - t0
    }

    function killPairBare(): number {
      const t0 = performance.now()
      process.kill(pid, 'SIGSTOP')
      process.kill(pid, 'SIGCONT')
      return performance.now() - t0
    }

    // The fsync floor: the same journal settings as the agent (WAL, synchronous = FULL), on the
    // same filesystem as its state dir, one small row updated per commit.
    const scratchDir = mkdtempSync(join(tmpdir(), 'fl-bench-fsync-'))
    cleanup.add('remove the scratch database', () => rmSync(scratchDir, { recursive: true, force: true }))
    const scratch = new Database(join(scratchDir, 'fsync-baseline.sqlite'))
    cleanup.add('close the scratch database', () => scratch.close())
    scratch.pragma('journal_mode = WAL')
    scratch.pragma('synchronous = FULL')
    scratch.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, status TEXT NOT NULL, updated_at INTEGER NOT NULL)')
    scratch.prepare("INSERT INTO t VALUES (1, 'pending', 0)").run()
    const touch = scratch.prepare('UPDATE t SET status = ?, updated_at = ? WHERE id = 1')

    function twoSyncedCommits(): number {
      const t0 = performance.now()
      touch.run('active', Date.now())
      touch.run('recovered', Date.now())
      return performance.now() - t0
    }

    async function twoHealthz(): Promise<number> {
      const t0 = performance.now()
      await call('GET', '/healthz', 200)
      await call('GET', '/healthz', 200)
      return performance.now() - t0
    }

    // The agent refuses to stop a process that is already stopped, and the bare pair may leave
    // SIGCONT's wake-up in flight: every variant starts from the sleep asleep in S.
    const settled = () => spinUntilState(pid, (s) => s === 'S')

    const samples = { agent: [] as number[], wait: [] as number[], bare: [] as number[], healthz: [] as number[], commits: [] as number[] }
    const variants: [keyof typeof samples, () => number | Promise<number>][] = [
      ['agent', agentPair],
      ['wait', killPairWithStateWait],
      ['bare', killPairBare],
      ['healthz', twoHealthz],
      ['commits', twoSyncedCommits],
    ]

    async function runRounds(n: number, record: boolean): Promise<void> {
      for (let i = 0; i < n; i++) {
        // Interleaved, and the order rotates each round, so drift and periodic noise hit
        // every variant alike.
        for (let j = 0; j < variants.length; j++) {
          const [name, run] = variants[(i + j) % variants.length]!
          settled()
          const ms = await run()
          if (record) samples[name].push(ms)
        }
      }
    }

    progress(`warm-up: ${warmupRounds} rounds`)
    await runRounds(warmupRounds, false)
    const before = parseHistograms(await call('GET', '/metrics', 200), 'process-stop')
    progress(`measuring: ${rounds} rounds`)
    await runRounds(rounds, true)
    const after = parseHistograms(await call('GET', '/metrics', 200), 'process-stop')
    settled()

    await pool.close()
    await closePool()
    progress(`idle footprint after the rounds (${settleMs / 1000} s settle, ${windowMs / 1000} s window)`)
    const [agentAfterRounds, bareNodeAfterRounds] = await idleFootprints([agentPid, bareNodePid], settleMs, windowMs)

    progress('counting journal commits per pair through an in-process agent')
    const journal = await countJournalCommits(pid, cleanup)

    if (agent.warnings.length > 0) progress(`the agent logged ${agent.warnings.length} warnings, e.g. ${agent.warnings[0]}`)

    const agentPairSummary = summarise(samples.agent)
    const waitSummary = summarise(samples.wait)
    const bareSummary = summarise(samples.bare)
    const healthzSummary = summarise(samples.healthz)
    const commitsSummary = summarise(samples.commits)
    const budgetUs = 2 * healthzSummary.medianUs + journal.syncedCommitsPerPair * (commitsSummary.medianUs / 2)
    return {
      benchmark: 'inject-recover/process-stop',
      machine: machineInfo(),
      rounds,
      warmupRounds,
      latency: {
        agentPair: agentPairSummary,
        killPairWithStateWait: waitSummary,
        killPairBare: bareSummary,
        twoHealthzRequests: healthzSummary,
        twoSyncedCommits: commitsSummary,
      },
      journal,
      target: {
        budgetUs: Math.round(budgetUs),
        medianVsBudget: ratio(agentPairSummary.medianUs, budgetUs),
        medianVsTwoHealthz: ratio(agentPairSummary.medianUs, healthzSummary.medianUs),
      },
      ratios: {
        medianVsStateWait: ratio(agentPairSummary.medianUs, waitSummary.medianUs),
        p99VsStateWait: ratio(agentPairSummary.p99Us, waitSummary.p99Us),
        medianVsBare: ratio(agentPairSummary.medianUs, bareSummary.medianUs),
        p99VsBare: ratio(agentPairSummary.p99Us, bareSummary.p99Us),
      },
      agentInternal: { applyMeanUs: histogramMeanUs(before, after, 'apply'), recoverMeanUs: histogramMeanUs(before, after, 'recover') },
      idle: {
        agentAtStart: agentAtStart!,
        bareNodeAtStart: bareNodeAtStart!,
        agentAfterRounds: agentAfterRounds!,
        bareNodeAfterRounds: bareNodeAfterRounds!,
        rssRatioAtStart: ratio(agentAtStart!.rssKiB, bareNodeAtStart!.rssKiB),
        rssRatioAfterRounds: ratio(agentAfterRounds!.rssKiB, bareNodeAfterRounds!.rssKiB),
      },
    }
  })
}

/**
 * Commits per pair as the Journal counts them (Injector.stats): the timed agent is a child
 * process with no endpoint for them, so a second agent runs in this process, on its own state
 * dir, against the same target, after the timed rounds.
 */
async function countJournalCommits(pid: number, cleanup: Cleanup): Promise<InjectBenchResult['journal']> {
  const pairs = 50
  const stateDir = mkdtempSync(join(tmpdir(), 'fl-bench-journal-'))
  const removeDir = cleanup.add('remove the journal-count state directory', () => rmSync(stateDir, { recursive: true, force: true }))
  const app = await buildAgent({ stateDir, maxDurationMs: 3_600_000 })
  const closeApp = cleanup.add('stop the in-process agent', () => app.close())
  const body = { fault: { kind: 'process-stop' }, target: { type: 'process', pid }, duration: '60s' }
  const before = app.injector.stats
  for (let i = 0; i < pairs; i++) {
    spinUntilState(pid, (s) => s === 'S')
    const created = await app.inject({ method: 'POST', url: '/v1/injections', payload: body })
    if (created.statusCode !== 201) throw new Error(`in-process agent: POST answered ${created.statusCode}: ${created.body}`)
    const recovered = await app.inject({ method: 'DELETE', url: `/v1/injections/${encodeURIComponent(created.json<InjectionReply>().id)}` })
    if (recovered.statusCode !== 200) throw new Error(`in-process agent: DELETE answered ${recovered.statusCode}: ${recovered.body}`)
  }
  const after = app.injector.stats
  await closeApp()
  await removeDir()
  return {
    pairs,
    commitsPerPair: (after.journalCommits - before.journalCommits) / pairs,
    syncedCommitsPerPair: (after.journalSyncedCommits - before.journalSyncedCommits) / pairs,
  }
}

// ---- output --------------------------------------------------------------------------------

export function formatInjectResult(r: InjectBenchResult): string {
  const l = r.latency
  const latencyRows: [string, LatencySummary][] = [
    ['agent: POST + DELETE /v1/injections', l.agentPair],
    ['baseline: SIGSTOP, wait T, SIGCONT, wait not T', l.killPairWithStateWait],
    ['baseline: SIGSTOP, SIGCONT (two syscalls)', l.killPairBare],
    ['reference: two GET /healthz', l.twoHealthzRequests],
    ['reference: two synced SQLite commits (WAL, FULL)', l.twoSyncedCommits],
  ]
  const fp = (f: Footprint) => [`${(f.rssKiB / 1024).toFixed(1)} MiB`, `${f.cpuPercentOfOneCore.toFixed(2)} %`]
  const i = r.idle
  return [
    `${r.benchmark}: ${r.rounds} rounds after ${r.warmupRounds} warm-up, interleaved`,
    formatMachine(r.machine),
    '',
    table(
      ['inject + recover pair', 'median', 'p99', 'min', 'max'],
      latencyRows.map(([name, s]) => [name, us(s.medianUs), us(s.p99Us), us(s.minUs), us(s.maxUs)]),
    ),
    '',
    table(
      ['ratio agent / baseline', 'median', 'p99'],
      [
        ['vs SIGSTOP/SIGCONT with state wait', `${r.ratios.medianVsStateWait}×`, `${r.ratios.p99VsStateWait}×`],
        ['vs SIGSTOP/SIGCONT bare', `${r.ratios.medianVsBare}×`, `${r.ratios.p99VsBare}×`],
      ],
    ),
    '',
    `journal commits per pair: ${r.journal.commitsPerPair}, of which fsynced: ${r.journal.syncedCommitsPerPair} (${r.journal.pairs} pairs, in-process agent)`,
    `pair median vs two GET /healthz: ${r.target.medianVsTwoHealthz}×; vs the target budget (2 × two GET /healthz + ${r.journal.syncedCommitsPerPair} synced commits = ${us(r.target.budgetUs)}): ${r.target.medianVsBudget}× (≤ 1 meets it)`,
    '',
    `agent's own histograms (mean): apply ${us(r.agentInternal.applyMeanUs)}, recover ${us(r.agentInternal.recoverMeanUs)}`,
    '',
    table(
      ['idle footprint', 'RSS', 'CPU (one core)'],
      [
        ['agent, after start', ...fp(i.agentAtStart)],
        ['bare node, same window', ...fp(i.bareNodeAtStart)],
        ['agent, after the rounds', ...fp(i.agentAfterRounds)],
        ['bare node, same window', ...fp(i.bareNodeAfterRounds)],
      ],
    ),
    `RSS ratio agent / bare node: ${i.rssRatioAtStart}× after start, ${i.rssRatioAfterRounds}× after the rounds`,
  ].join('\n')
}
