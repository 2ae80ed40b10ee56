import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { cpus, release, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { Pool } from 'undici'

/**
 * Inject-and-recover latency of process-stop through the real agent (HTTP, journal, signal),
 * against the bare kernel work it needs, measured in the same run; plus the agent's idle
 * footprint against a bare Node process. DESIGN.md section 7: figures are ratios against a
 * baseline measured in the same run, because the machines we run on are noisy.
 *
 * Needs root (or CAP_KILL over the sleep it spawns, and permission to read /proc of its children).
 */

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..')
// The built agent, as it ships (npm run bench builds first): no TypeScript loader in the figures.
const cliEntry = join(repoRoot, 'dist', 'cli', 'main.js')

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

export interface LatencySummary {
  n: number
  minUs: number
  medianUs: number
  p99Us: number
  maxUs: number
  meanUs: number
}

export interface Footprint {
  rssKiB: number
  cpuPercentOfOneCore: number
  windowMs: number
}

export interface InjectBenchResult {
  benchmark: 'inject-recover/process-stop'
  machine: { cpus: number; cpuModel: string; kernel: string; node: string; os: string }
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
  }
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

function statFields(pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // comm may contain spaces and ")": split after the last ")"; fields[0] is field 3 (state).
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
}

function procState(pid: number): string {
  return statFields(pid)[0]!
}

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

const CLOCK_TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100

function cpuTicks(pid: number): number {
  const f = statFields(pid)
  // utime is field 14, stime field 15 (proc_pid_stat(5)); fields[0] is field 3.
  return Number(f[14 - 3]) + Number(f[15 - 3])
}

function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`)
  return Number(m[1])
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Settles, then measures RSS and CPU of several processes over the same idle window, so
 * whatever else the machine does during the window hits all of them.
 */
async function idleFootprints(pids: number[], settleMs: number, windowMs: number): Promise<Footprint[]> {
  await sleep(settleMs)
  const startTicks = pids.map(cpuTicks)
  const started = performance.now()
  await sleep(windowMs)
  const elapsedMs = performance.now() - started
  return pids.map((pid, i) => ({
    rssKiB: rssKiB(pid),
    cpuPercentOfOneCore: (((cpuTicks(pid) - startTicks[i]!) / CLOCK_TICKS_PER_SECOND) * 1000 * 100) / elapsedMs,
    windowMs: Math.round(elapsedMs),
  }))
}

// ---- statistics ----------------------------------------------------------------------------

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: number[], p: number): number {
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!
}

function summarise(samplesMs: number[]): LatencySummary {
  const us = samplesMs.map((ms) => ms * 1000).sort((a, b) => a - b)
  const round = (x: number) => Math.round(x * 10) / 10
  return {
    n: us.length,
    minUs: round(us[0]!),
    medianUs: round(percentile(us, 50)),
    p99Us: round(percentile(us, 99)),
    maxUs: round(us[us.length - 1]!),
    meanUs: round(us.reduce((a, b) => a + b, 0) / us.length),
  }
}

const ratio = (a: number, b: number) => Math.round((a / b) * 10) / 10

// ---- child processes -----------------------------------------------------------------------

interface Started {
  child: ChildProcess
  pid: number
  exited: Promise<void>
}

function track(child: ChildProcess, what: string): Started {
  if (child.pid === undefined) throw new Error(`could not start ${what}`)
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    else child.once('exit', () => resolve())
  })
  return { child, pid: child.pid, exited }
}

const running = (s: Started) => s.child.exitCode === null && s.child.signalCode === null

async function startAgent(stateDir: string): Promise<Started & { url: string; warnings: string[] }> {
  const child = spawn(
    process.execPath,
    [cliEntry, 'agent', '--listen', '127.0.0.1:0', '--state-dir', stateDir, '--log-level', 'info'],
    { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const started = track(child, 'the agent')
  const warnings: string[] = []
  let stderr = ''
  let buffered = ''
  const ready = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the agent was not ready within 30 s: ${stderr}`)), 30_000)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`the agent exited (${signal ?? code}) before it was ready: ${stderr}`))
    })
    // Keep reading stdout for the whole run: the agent logs every request, and a full pipe
    // would block it.
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      let nl: number
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        let entry: Record<string, unknown>
        try {
          entry = JSON.parse(line) as Record<string, unknown>
        } catch {
          continue
        }
        // pino levels: 40 warn, 50 error, 60 fatal.
        if (typeof entry.level === 'number' && entry.level >= 40) warnings.push(String(entry.msg))
        if (entry.msg === 'faultline agent ready') {
          clearTimeout(timer)
          resolve(String(entry.url))
        }
      }
    })
  })
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  try {
    const url = await ready
    return { ...started, url, warnings }
  } catch (err) {
    // Not ready, so it holds no injection: nothing to recover, no need for a graceful stop.
    if (running(started)) child.kill('SIGKILL')
    await started.exited
    throw err
  }
}

/** SIGTERM (the agent recovers every injection before it exits), SIGKILL after 35 s. */
async function stopAgent(agent: Started): Promise<void> {
  if (!running(agent)) return
  agent.child.kill('SIGTERM')
  const timer = setTimeout(() => agent.child.kill('SIGKILL'), 35_000)
  await agent.exited
  clearTimeout(timer)
}

/** Resumes first, so a process we stopped is never left stopped, then kills it. */
async function killTarget(target: Started): Promise<void> {
  if (!running(target)) return
  try {
    process.kill(target.pid, 'SIGCONT')
    process.kill(target.pid, 'SIGKILL')
  } catch {
    /* already gone */
  }
  await target.exited
}

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
  const progress = opts.progress ?? ((line: string) => process.stderr.write(`${line}\n`))
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`rounds must be a positive integer, not ${rounds}`)

  const stateDir = mkdtempSync(join(tmpdir(), 'fl-bench-'))
  let agent: (Started & { url: string; warnings: string[] }) | undefined
  let target: Started | undefined
  let bareNode: Started | undefined
  let pool: Pool | undefined
  const cleanUp = async () => {
    await pool?.destroy().catch(() => undefined)
    if (target) await killTarget(target)
    if (bareNode && running(bareNode)) {
      bareNode.child.kill('SIGKILL')
      await bareNode.exited
    }
    if (agent) await stopAgent(agent)
    rmSync(stateDir, { recursive: true, force: true })
  }
  // A Ctrl-C mid-run must not leave the sleep stopped or the agent running.
  const onSignal = (signal: NodeJS.Signals) => {
    void cleanUp().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  try {
    progress(`starting the agent (state dir ${stateDir}) and a bare node process`)
    agent = await startAgent(stateDir)
    bareNode = track(spawn(process.execPath, ['-e', 'setInterval(()=>{},1000)'], { stdio: 'ignore' }), 'bare node')
    target = track(spawn('sleep', ['3600'], { stdio: 'ignore' }), 'sleep')
    const agentPid = agent.pid
    const bareNodePid = bareNode.pid
    const pid = target.pid
    spinUntilState(pid, (s) => s === 'S')

    progress(`idle footprint at start (${settleMs / 1000} s settle, ${windowMs / 1000} s window)`)
    const [agentAtStart, bareNodeAtStart] = await idleFootprints([agentPid, bareNodePid], settleMs, windowMs)

    // One keep-alive connection, as a controller talking to one agent would use.
    pool = new Pool(agent.url, { connections: 1, pipelining: 1 })
    const client = pool
    const body = JSON.stringify({ fault: { kind: 'process-stop' }, target: { type: 'process', pid }, duration: '60s' })

    async function call(method: 'POST' | 'DELETE' | 'GET', path: string, expectStatus: number, payload?: string): Promise<string> {
      const res = await client.request({
        method,
        path,
        ...(payload !== undefined ? { body: payload, headers: { 'content-type': 'application/json' } } : {}),
      })
      const text = await res.body.text()
      if (res.statusCode !== expectStatus) throw new Error(`${method} ${path}: expected ${expectStatus}, got ${res.statusCode}: ${text}`)
      return text
    }

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

    async function twoHealthz(): Promise<number> {
      const t0 = performance.now()
      await call('GET', '/healthz', 200)
      await call('GET', '/healthz', 200)
      return performance.now() - t0
    }

    // The agent refuses to stop a process that is already stopped, and the bare pair may leave
    // SIGCONT's wake-up in flight: every variant starts from the sleep asleep in S.
    const settled = () => spinUntilState(pid, (s) => s === 'S')

    const samples = { agent: [] as number[], wait: [] as number[], bare: [] as number[], healthz: [] as number[] }
    const variants: [keyof typeof samples, () => number | Promise<number>][] = [
      ['agent', agentPair],
      ['wait', killPairWithStateWait],
      ['bare', killPairBare],
      ['healthz', twoHealthz],
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
    const before = parseHistograms(await call('GET', '/metrics', 200))
    progress(`measuring: ${rounds} rounds`)
    await runRounds(rounds, true)
    const after = parseHistograms(await call('GET', '/metrics', 200))
    settled()

    await pool.close()
    pool = undefined
    progress(`idle footprint after the rounds (${settleMs / 1000} s settle, ${windowMs / 1000} s window)`)
    const [agentAfterRounds, bareNodeAfterRounds] = await idleFootprints([agentPid, bareNodePid], settleMs, windowMs)

    if (agent.warnings.length > 0) progress(`the agent logged ${agent.warnings.length} warnings, e.g. ${agent.warnings[0]}`)

    const agentPairSummary = summarise(samples.agent)
    const waitSummary = summarise(samples.wait)
    const bareSummary = summarise(samples.bare)
    const meanUs = (name: 'apply' | 'recover') =>
      Math.round(((after[name].sum - before[name].sum) / Math.max(1, after[name].count - before[name].count)) * 1e6 * 10) / 10
    const cpu = cpus()
    return {
      benchmark: 'inject-recover/process-stop',
      machine: {
        cpus: cpu.length,
        cpuModel: cpu[0]?.model ?? 'unknown',
        kernel: release(),
        node: process.version,
        os: osName(),
      },
      rounds,
      warmupRounds,
      latency: {
        agentPair: agentPairSummary,
        killPairWithStateWait: waitSummary,
        killPairBare: bareSummary,
        twoHealthzRequests: summarise(samples.healthz),
      },
      ratios: {
        medianVsStateWait: ratio(agentPairSummary.medianUs, waitSummary.medianUs),
        p99VsStateWait: ratio(agentPairSummary.p99Us, waitSummary.p99Us),
        medianVsBare: ratio(agentPairSummary.medianUs, bareSummary.medianUs),
        p99VsBare: ratio(agentPairSummary.p99Us, bareSummary.p99Us),
      },
      agentInternal: { applyMeanUs: meanUs('apply'), recoverMeanUs: meanUs('recover') },
      idle: {
        agentAtStart: agentAtStart!,
        bareNodeAtStart: bareNodeAtStart!,
        agentAfterRounds: agentAfterRounds!,
        bareNodeAfterRounds: bareNodeAfterRounds!,
        rssRatioAtStart: ratio(agentAtStart!.rssKiB, bareNodeAtStart!.rssKiB),
        rssRatioAfterRounds: ratio(agentAfterRounds!.rssKiB, bareNodeAfterRounds!.rssKiB),
      },
    }
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    await cleanUp()
  }
}

/** Sum and count of the process-stop apply and recover histograms in a Prometheus text page. */
function parseHistograms(text: string): Record<'apply' | 'recover', { sum: number; count: number }> {
  const value = (name: string) => {
    const m = new RegExp(`^${name}\\{kind="process-stop"\\} (\\S+)$`, 'm').exec(text)
    return m ? Number(m[1]) : 0
  }
  return {
    apply: { sum: value('faultline_apply_seconds_sum'), count: value('faultline_apply_seconds_count') },
    recover: { sum: value('faultline_recover_seconds_sum'), count: value('faultline_recover_seconds_count') },
  }
}

function osName(): string {
  try {
    return /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

// ---- output --------------------------------------------------------------------------------

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

const us = (x: number) => (x >= 1000 ? `${(x / 1000).toFixed(2)} ms` : `${x.toFixed(1)} µs`)

export function formatInjectResult(r: InjectBenchResult): string {
  const l = r.latency
  const latencyRows: [string, LatencySummary][] = [
    ['agent: POST + DELETE /v1/injections', l.agentPair],
    ['baseline: SIGSTOP, wait T, SIGCONT, wait not T', l.killPairWithStateWait],
    ['baseline: SIGSTOP, SIGCONT (two syscalls)', l.killPairBare],
    ['reference: two GET /healthz', l.twoHealthzRequests],
  ]
  const fp = (f: Footprint) => [`${(f.rssKiB / 1024).toFixed(1)} MiB`, `${f.cpuPercentOfOneCore.toFixed(2)} %`]
  const i = r.idle
  return [
    `${r.benchmark}: ${r.rounds} rounds after ${r.warmupRounds} warm-up, interleaved`,
    `machine: ${r.machine.cpus} × ${r.machine.cpuModel}, ${r.machine.os}, kernel ${r.machine.kernel}, Node ${r.machine.node}`,
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
