import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { cpus, release } from 'node:os'
import { dirname, join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { Pool } from 'undici'
import WebSocket from 'ws'
import { LINK_PROTOCOL_VERSION } from '../protocol/link.js'

/**
 * What the benchmarks in bench/ share: statistics, the built agent as a child process, an HTTP
 * client for it, cleanup that also runs on Ctrl-C, the built server with simulated agents, and
 * the table formatting.
 */

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..')
// The built agent, as it ships (npm run bench builds first): no TypeScript loader in the figures.
export const cliEntry = join(repoRoot, 'dist', 'cli', 'main.js')

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Progress lines go to stderr by default, so --json keeps stdout clean. */
export const stderrProgress = (line: string) => {
  process.stderr.write(`${line}\n`)
}

// ---- statistics ----------------------------------------------------------------------------

export interface LatencySummary {
  n: number
  minUs: number
  medianUs: number
  p99Us: number
  maxUs: number
  meanUs: number
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: number[], p: number): number {
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!
}

/** Samples in milliseconds (performance.now() differences) to a summary in microseconds. */
export function summarise(samplesMs: number[]): LatencySummary {
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

/** a / b, rounded to `digits` decimals (one by default). */
export const ratio = (a: number, b: number, digits = 1) => {
  const scale = 10 ** digits
  return Math.round((a / b) * scale) / scale
}

// ---- the machine ---------------------------------------------------------------------------

export interface MachineInfo {
  cpus: number
  cpuModel: string
  kernel: string
  node: string
  os: string
}

export function machineInfo(): MachineInfo {
  const cpu = cpus()
  return {
    cpus: cpu.length,
    cpuModel: cpu[0]?.model ?? 'unknown',
    kernel: release(),
    node: process.version,
    os: osName(),
  }
}

function osName(): string {
  try {
    return /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

export const formatMachine = (m: MachineInfo) => `machine: ${m.cpus} × ${m.cpuModel}, ${m.os}, kernel ${m.kernel}, Node ${m.node}`

// ---- /proc ---------------------------------------------------------------------------------

/** The fields of /proc/<pid>/stat after the command name: fields[0] is field 3 (state). */
export function statFields(pid: number | 'self'): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // comm may contain spaces and ")": split after the last ")".
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
}

export const CLOCK_TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100

/** CPU time of the process itself: utime + stime (proc_pid_stat(5) fields 14 and 15), in ticks. */
export function cpuTicks(pid: number | 'self'): number {
  const f = statFields(pid)
  return Number(f[14 - 3]) + Number(f[15 - 3])
}

/** Resident set size (VmRSS of /proc/PID/status), in KiB. */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`)
  return Number(m[1])
}

/** The process state letter (proc_pid_stat(5) field 3): R, S, T, ... */
export function procState(pid: number): string {
  return statFields(pid)[0]!
}

export interface Footprint {
  rssKiB: number
  cpuPercentOfOneCore: number
  windowMs: number
}

/**
 * Settles, then measures RSS and CPU of several processes over the same idle window (CPU over
 * it, RSS at its end), so whatever else the machine does during the window hits all of them.
 */
export async function idleFootprints(pids: number[], settleMs: number, windowMs: number): Promise<Footprint[]> {
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

/** Runs argv (no shell) and returns its stdout; throws with its stderr when it fails. */
export function sh(argv: string[]): string {
  const res = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' })
  if (res.error) throw new Error(`${argv.join(' ')}: ${res.error.message}`)
  if (res.status !== 0) throw new Error(`${argv.join(' ')} failed (exit ${res.status ?? res.signal}): ${res.stderr.trim()}`)
  return res.stdout
}

/** Names of the nft tables in the network namespace at nsPath. */
export function nftTablesIn(nsPath: string): string[] {
  return sh(['nsenter', `--net=${nsPath}`, '--', 'nft', 'list', 'tables'])
    .split('\n')
    .filter((l) => l.startsWith('table '))
    .map((l) => l.split(' ').pop()!)
}

/** CPU time of its waited-for children: cutime + cstime (fields 16 and 17), in ticks. */
export function childCpuTicks(pid: number | 'self'): number {
  const f = statFields(pid)
  return Number(f[16 - 3]) + Number(f[17 - 3])
}

/** Resumes first, so a process we stopped is never left stopped, then kills it. */
export async function resumeAndKill(target: Started): Promise<void> {
  if (!running(target)) return
  try {
    process.kill(target.pid, 'SIGCONT')
    process.kill(target.pid, 'SIGKILL')
  } catch {
    /* already gone */
  }
  await target.exited
}

// ---- cleanup -------------------------------------------------------------------------------

/**
 * Undo steps, run last-in first-out: register each right after the thing it undoes exists.
 * Every step runs at most once, and a failing step does not stop the others.
 */
export class Cleanup {
  readonly #steps: { what: string; undo: () => unknown }[] = []
  #running: Promise<void> | undefined

  /** Registers an undo step; the returned function runs it now (once) and unregisters it. */
  add(what: string, undo: () => unknown): () => Promise<void> {
    const step = { what, undo }
    this.#steps.push(step)
    return async () => {
      const i = this.#steps.indexOf(step)
      if (i < 0) return
      this.#steps.splice(i, 1)
      await step.undo()
    }
  }

  /** Runs every remaining step, newest first. Concurrent calls share one run. */
  run(): Promise<void> {
    return (this.#running ??= (async () => {
      try {
        for (let step = this.#steps.pop(); step; step = this.#steps.pop()) {
          try {
            await step.undo()
          } catch (err) {
            process.stderr.write(`bench: cleanup step "${step.what}" failed: ${(err as Error).message}\n`)
          }
        }
      } finally {
        this.#running = undefined
      }
    })())
  }
}

/**
 * Runs body with a Cleanup that runs when body ends, however it ends, and on SIGINT/SIGTERM
 * (then the process exits 130/143): a Ctrl-C mid-run must not leave anything behind.
 */
export async function withCleanup<T>(body: (cleanup: Cleanup) => Promise<T>): Promise<T> {
  const cleanup = new Cleanup()
  const onSignal = (signal: NodeJS.Signals) => {
    void cleanup.run().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    return await body(cleanup)
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    await cleanup.run()
  }
}

// ---- child processes -----------------------------------------------------------------------

export interface Started {
  child: ChildProcess
  pid: number
  exited: Promise<void>
}

export function track(child: ChildProcess, what: string): Started {
  if (child.pid === undefined) throw new Error(`could not start ${what}`)
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    else child.once('exit', () => resolve())
  })
  return { child, pid: child.pid, exited }
}

export const running = (s: Started) => s.child.exitCode === null && s.child.signalCode === null

/**
 * The baseline of every footprint figure: a bare `node -e "setInterval(()=>{},1000)"` with the
 * given Node flags, killed by the cleanup.
 */
export function startBareNode(cleanup: Cleanup, nodeFlags: readonly string[] = []): Started {
  const bareNode = track(spawn(process.execPath, [...nodeFlags, '-e', 'setInterval(()=>{},1000)'], { stdio: 'ignore' }), 'bare node')
  cleanup.add('kill the bare node process', async () => {
    if (!running(bareNode)) return
    bareNode.child.kill('SIGKILL')
    await bareNode.exited
  })
  return bareNode
}

export interface StartedAgent extends Started {
  url: string
  /** The bearer token the agent made in its state dir: its TCP API wants it. */
  token: string
  /** msg of every log line at level warn or above, for the whole run. */
  warnings: string[]
}

/**
 * Starts the built agent on a free loopback port with its own state directory (and extraArgs),
 * and resolves once it logs "faultline agent ready" (with its url).
 */
export async function startAgent(stateDir: string, extraArgs: string[] = []): Promise<StartedAgent> {
  const child = spawn(
    process.execPath,
    [cliEntry, 'agent', '--listen', '127.0.0.1:0', '--state-dir', stateDir, '--log-level', 'info', ...extraArgs],
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
    return { ...started, url, token: readFileSync(join(stateDir, 'agent.token'), 'utf8').trim(), warnings }
  } catch (err) {
    // Not ready, so it holds no injection: nothing to recover, no need for a graceful stop.
    if (running(started)) child.kill('SIGKILL')
    await started.exited
    throw err
  }
}

/** SIGTERM (the agent recovers every injection before it exits), SIGKILL after 35 s. */
export async function stopAgent(agent: Started): Promise<void> {
  if (!running(agent)) return
  agent.child.kill('SIGTERM')
  const timer = setTimeout(() => agent.child.kill('SIGKILL'), 35_000)
  await agent.exited
  clearTimeout(timer)
}

// ---- talking to the agent ------------------------------------------------------------------

export interface AgentClient {
  pool: Pool
  /** One request; throws unless the status is expectStatus. Resolves with the body text. */
  call(method: 'POST' | 'DELETE' | 'GET', path: string, expectStatus: number, payload?: string): Promise<string>
}

/** One keep-alive connection, as a controller talking to one agent would use (with its token). */
export function agentClient(agent: { url: string; token: string }): AgentClient {
  const pool = new Pool(agent.url, { connections: 1, pipelining: 1 })
  const authorization = `Bearer ${agent.token}`
  return {
    pool,
    async call(method, path, expectStatus, payload) {
      const res = await pool.request({
        method,
        path,
        headers: { authorization, ...(payload !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(payload !== undefined ? { body: payload } : {}),
      })
      const text = await res.body.text()
      if (res.statusCode !== expectStatus) throw new Error(`${method} ${path}: expected ${expectStatus}, got ${res.statusCode}: ${text}`)
      return text
    },
  }
}

export interface HistogramTotals {
  apply: { sum: number; count: number }
  recover: { sum: number; count: number }
}

/** Sum and count of the apply and recover histograms of one fault kind in a Prometheus text page. */
export function parseHistograms(text: string, kind: string): HistogramTotals {
  const value = (name: string) => {
    const m = new RegExp(`^${name}\\{kind="${kind}"\\} (\\S+)$`, 'm').exec(text)
    return m ? Number(m[1]) : 0
  }
  return {
    apply: { sum: value('faultline_apply_seconds_sum'), count: value('faultline_apply_seconds_count') },
    recover: { sum: value('faultline_recover_seconds_sum'), count: value('faultline_recover_seconds_count') },
  }
}

/** Mean apply or recover time in µs between two readings of the histograms. */
export function histogramMeanUs(before: HistogramTotals, after: HistogramTotals, name: 'apply' | 'recover'): number {
  return Math.round(((after[name].sum - before[name].sum) / Math.max(1, after[name].count - before[name].count)) * 1e6 * 10) / 10
}

// ---- output --------------------------------------------------------------------------------

/** A plain-text table: first column left-aligned, the others right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

/** Microseconds, as µs below 1 ms and as ms above. */
export const us = (x: number) => (x >= 1000 ? `${(x / 1000).toFixed(2)} ms` : `${x.toFixed(1)} µs`)

// ---- a server and simulated agents ---------------------------------------------------------

export const SIM_ENROL_TOKEN = 'bench-enrol-token-0123456789abcdef'
export const SIM_ADMIN_TOKEN = 'bench-admin-token-0123456789abcdef'

/** What a simulated agent reports in hello: by default one kind (process-stop), available. */
export function simCapabilities(kinds: Record<string, { available: boolean; reason?: string }> = { 'process-stop': { available: true } }) {
  return {
    probedAt: new Date().toISOString(),
    probeMs: 1,
    host: { hostname: 'sim', platform: 'linux', distro: 'sim', release: '0', kernel: '0', arch: 'x64', cpuModel: 'sim', cpuCores: 1, memTotalBytes: 1, agentPid: 1, agentVersion: '0.0.0', nodeVersion: process.version },
    features: {},
    kinds: Object.fromEntries(Object.entries(kinds).map(([kind, k]) => [kind, { ...k, requires: ['signals'], targets: ['process'], recoverable: true }])),
  }
}

function simInjection(id: string, status: string) {
  const now = new Date().toISOString()
  return {
    id,
    requestId: id,
    kind: 'process-stop',
    status,
    fault: { kind: 'process-stop' },
    target: { type: 'process', name: 'sleep' },
    resolved: { type: 'process', pid: 4242, startTime: 1, comm: 'sleep', cmdline: 'sleep 600', state: 'S' },
    plan: { steps: [] },
    duration: '10m',
    durationMs: 600_000,
    recoverable: true,
    createdAt: now,
    expiresAt: now,
    updatedAt: now,
    notes: [],
  }
}

export interface SimAgentOptions {
  /** Default { bench: 'sim' }. */
  labels?: Record<string, string>
  /** Default simCapabilities(). */
  capabilities?: ReturnType<typeof simCapabilities>
  /** Called right after this agent answered an inject ('inject') or acknowledged a halt ('halt'). */
  onAnswer?: (what: 'inject' | 'halt') => void
}

/**
 * One simulated agent: a WebSocket client in this process that speaks the link protocol like
 * agent/link. It enrols, says hello and sends heartbeats; on `inject` it answers with an active
 * injection at once, on `halt` or `recover` it reports the injection recovered and acknowledges.
 * No fault is applied anywhere.
 */
export class SimAgent {
  readonly ws: WebSocket
  readonly open = new Map<string, ReturnType<typeof simInjection>>()
  ready: Promise<void>
  /** performance.now() of the last inject answered and of the last halt acknowledged. */
  activeAt = 0
  haltAt = 0
  #heartbeat: NodeJS.Timeout | undefined

  constructor(url: string, name: string, opts: SimAgentOptions = {}) {
    const labels = opts.labels ?? { bench: 'sim' }
    const capabilities = opts.capabilities ?? simCapabilities()
    this.ws = new WebSocket(url, { headers: { authorization: `Bearer ${SIM_ENROL_TOKEN}`, 'x-faultline-agent-name': name }, perMessageDeflate: false })
    const send = (m: unknown) => this.ws.send(JSON.stringify(m))
    this.ready = new Promise((resolve, reject) => {
      this.ws.once('error', reject)
      this.ws.on('message', (data: Buffer) => {
        const m = JSON.parse(data.toString()) as { type: string; agentId?: string; heartbeatMs?: number; requestId?: string; runId?: string }
        if (m.type === 'welcome') {
          send({ v: LINK_PROTOCOL_VERSION, type: 'hello', agentId: m.agentId, version: '0.0.0-sim', hostname: name, labels, capabilities, targets: [], open: [] })
          send({ v: LINK_PROTOCOL_VERSION, type: 'heartbeat', at: new Date().toISOString() })
          this.#heartbeat = setInterval(() => send({ v: LINK_PROTOCOL_VERSION, type: 'heartbeat', at: new Date().toISOString() }), m.heartbeatMs)
          resolve()
        } else if (m.type === 'inject') {
          const inj = simInjection(m.requestId!, 'active')
          this.open.set(inj.id, inj)
          // Like agent/link: the inject-result alone reports the apply (one answer per inject).
          send({ v: LINK_PROTOCOL_VERSION, type: 'inject-result', requestId: m.requestId, injections: [inj] })
          this.activeAt = performance.now()
          opts.onAnswer?.('inject')
        } else if (m.type === 'halt' || m.type === 'recover') {
          for (const inj of this.open.values()) send({ v: LINK_PROTOCOL_VERSION, type: 'injection-update', injection: { ...inj, status: 'recovered' }, reason: m.type === 'halt' ? 'halt' : 'abort' })
          this.open.clear()
          send({ v: LINK_PROTOCOL_VERSION, type: 'ack', requestId: m.requestId })
          this.haltAt = performance.now()
          if (m.type === 'halt') opts.onAnswer?.('halt')
        }
      })
    })
  }

  close(): void {
    clearInterval(this.#heartbeat)
    this.ws.terminate()
  }
}

export interface BenchServer extends Started {
  /** http://127.0.0.1:PORT */
  base: string
  /** One API call with the admin token; throws on a status of 300 or more; resolves with the parsed body. */
  api<T>(method: string, path: string, body?: unknown): Promise<T>
  /** SIGTERM, and resolves once the server exited. */
  stop(): Promise<void>
}

/**
 * The built server (`faultline server`) in its own process on a free loopback port, with a fresh
 * state dir under `dir` and the bench's enrolment and admin tokens; killed by `cleanup` if still
 * running. Resolves once it logs "faultline server ready".
 */
export async function startServer(dir: string, stateName: string, cleanup: Cleanup, opts: { leaseMs?: number } = {}): Promise<BenchServer> {
  writeFileSync(join(dir, 'enrol'), SIM_ENROL_TOKEN, { mode: 0o600 })
  writeFileSync(join(dir, 'admin'), SIM_ADMIN_TOKEN, { mode: 0o600 })
  const child = spawn(
    process.execPath,
    [cliEntry, 'server', '--listen', '127.0.0.1:0', '--state-dir', join(dir, stateName), '--lease', `${(opts.leaseMs ?? 30_000) / 1000}s`, '--enrol-token-file', join(dir, 'enrol'), '--admin-token-file', join(dir, 'admin'), '--log-level', 'info'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  const server = track(child, 'faultline server')
  cleanup.add('server', async () => {
    if (running(server)) child.kill('SIGKILL')
    await server.exited
  })
  const base = await serverUrl(child)
  return {
    ...server,
    base,
    async api<T>(method: string, path: string, body?: unknown): Promise<T> {
      const res = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${SIM_ADMIN_TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      })
      const text = await res.text()
      if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${text}`)
      return JSON.parse(text) as T
    },
    async stop() {
      if (running(server)) child.kill('SIGTERM')
      await server.exited
    },
  }
}

/** The URL the server logs once it listens ("faultline server ready"). */
function serverUrl(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = ''
    const timer = setTimeout(() => reject(new Error('the server was not ready within 60 s')), 60_000)
    child.once('exit', (code) => reject(new Error(`the server exited (${code}) before it was ready`)))
    // Keep reading stdout for the whole run: the server logs every request, and a full pipe
    // would block it.
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered = (buffered + chunk.toString()).slice(-65_536)
      const m = /"url":"(http:\/\/[^"]+)"[^\n]*"msg":"faultline server ready"/.exec(buffered)
      if (m) {
        clearTimeout(timer)
        resolve(m[1]!)
      }
    })
  })
}

/**
 * n simulated agents named `${prefix}-${i}` connected to the server (closed by `cleanup`), and
 * resolves once /healthz counts n agents. They enrol in batches of 50, as a fleet coming up over
 * some seconds would, not 1000 at once. `optsOf(i)` gives each its labels and capabilities.
 */
export async function connectSimAgents(server: BenchServer, n: number, cleanup: Cleanup, optsOf: (i: number) => SimAgentOptions = () => ({}), prefix = 'sim'): Promise<SimAgent[]> {
  const agents: SimAgent[] = []
  cleanup.add('simulated agents', () => agents.forEach((a) => a.close()))
  const url = `${server.base.replace(/^http/, 'ws')}/v1/agents/connect`
  for (let i = 0; i < n; i += 50) {
    const batch = Array.from({ length: Math.min(50, n - i) }, (_, j) => new SimAgent(url, `${prefix}-${i + j}`, optsOf(i + j)))
    agents.push(...batch)
    await Promise.all(batch.map((a) => a.ready))
  }
  for (;;) {
    const health = await server.api<{ agents: number }>('GET', '/healthz')
    if (health.agents === n) break
    await sleep(50)
  }
  return agents
}
