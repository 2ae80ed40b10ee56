import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { Pool } from 'undici'
import {
  agentClient,
  formatMachine,
  machineInfo,
  ratio,
  running,
  sleep,
  startAgent,
  stderrProgress,
  stopAgent,
  summarise,
  table,
  track,
  us,
  withCleanup,
  type LatencySummary,
  type MachineInfo,
  type Started,
} from './lib.js'

/**
 * The chaosd-compatible API's cost: an attack + recover pair through it (POST /api/attack/process
 * with signal 19, DELETE /api/attack/<uid>, as Chaos Mesh sends them) against the same fault
 * through /v1/injections (POST process-stop, DELETE), on the same agent, the same target and
 * one keep-alive connection each, in interleaved rounds; the figure is the ratio of medians.
 * Needs root (or CAP_KILL over the sleep it spawns).
 */
export interface ChaosdBenchOptions {
  /** Measured rounds of each variant (default 200). */
  rounds?: number
  /** Unmeasured rounds of each first (default 20). */
  warmupRounds?: number
  progress?: (line: string) => void
}

export interface ChaosdBenchResult {
  benchmark: 'chaosd-api/process-stop'
  machine: MachineInfo
  rounds: number
  warmupRounds: number
  latency: { chaosdPair: LatencySummary; v1Pair: LatencySummary }
  ratios: { median: number; p99: number }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0))
    })
  })
}

function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]
  } catch {
    return undefined
  }
}

export async function runChaosdBench(opts: ChaosdBenchOptions = {}): Promise<ChaosdBenchResult> {
  const rounds = opts.rounds ?? 200
  const warmupRounds = opts.warmupRounds ?? 20
  const progress = opts.progress ?? stderrProgress
  return withCleanup(async (cleanup) => {
    const stateDir = mkdtempSync(join(tmpdir(), 'fl-bench-'))
    cleanup.add('remove the state directory', () => rmSync(stateDir, { recursive: true, force: true }))
    const port = await freePort()
    progress(`starting the agent with --chaosd-listen 127.0.0.1:${port}`)
    const agent = await startAgent(stateDir, ['--chaosd-listen', `127.0.0.1:${port}`])
    cleanup.add('stop the agent', () => stopAgent(agent))
    const target: Started = track(spawn('sleep', ['3600'], { stdio: 'ignore' }), 'sleep')
    cleanup.add('resume and kill the target', async () => {
      if (!running(target)) return
      target.child.kill('SIGCONT')
      target.child.kill('SIGKILL')
      await target.exited
    })
    const pid = target.pid

    const { pool, call } = agentClient(agent)
    cleanup.add('close the v1 pool', () => pool.destroy().catch(() => undefined))
    const chaosd = new Pool(`http://127.0.0.1:${port}`, { connections: 1, pipelining: 1 })
    cleanup.add('close the chaosd pool', () => chaosd.destroy().catch(() => undefined))
    const chaosdCall = async (method: 'POST' | 'DELETE' | 'GET', path: string, body?: string) => {
      const res = await chaosd.request({ method, path, ...(body ? { body, headers: { 'content-type': 'application/json' } } : {}) })
      const text = await res.body.text()
      if (res.statusCode !== 200) throw new Error(`${method} ${path}: ${res.statusCode} ${text}`)
      return text
    }
    for (let i = 0; i < 100; i++) {
      if (await chaosdCall('GET', '/api/system/health').then(() => true, () => false)) break
      await sleep(100)
    }

    const v1Body = JSON.stringify({ fault: { kind: 'process-stop' }, target: { type: 'process', pid }, duration: '60s' })
    async function v1Pair(): Promise<number> {
      const t0 = performance.now()
      const created = JSON.parse(await call('POST', '/v1/injections', 201, v1Body)) as { id: string; status: string }
      await call('DELETE', `/v1/injections/${encodeURIComponent(created.id)}`, 200)
      const elapsed = performance.now() - t0
      if (created.status !== 'active') throw new Error(`v1 injection answered ${created.status}`)
      return elapsed
    }
    async function chaosdPair(): Promise<number> {
      const uid = randomUUID()
      const t0 = performance.now()
      await chaosdCall('POST', '/api/attack/process', JSON.stringify({ uid, process: String(pid), signal: 19 }))
      await chaosdCall('DELETE', `/api/attack/${uid}`)
      return performance.now() - t0
    }

    progress(`warm-up: ${warmupRounds} rounds of each`)
    for (let i = 0; i < warmupRounds; i++) {
      await v1Pair()
      await chaosdPair()
    }
    progress(`measuring: ${rounds} interleaved rounds of each`)
    const v1: number[] = []
    const viaChaosd: number[] = []
    for (let i = 0; i < rounds; i++) {
      // Alternate which goes first, so neither always follows the other's recovery.
      if (i % 2 === 0) {
        v1.push(await v1Pair())
        viaChaosd.push(await chaosdPair())
      } else {
        viaChaosd.push(await chaosdPair())
        v1.push(await v1Pair())
      }
    }
    if (procState(pid) === 'T') throw new Error('the target is still stopped after the last round')
    const chaosdPairLatency = summarise(viaChaosd)
    const v1PairLatency = summarise(v1)
    return {
      benchmark: 'chaosd-api/process-stop',
      machine: machineInfo(),
      rounds,
      warmupRounds,
      latency: { chaosdPair: chaosdPairLatency, v1Pair: v1PairLatency },
      ratios: { median: ratio(chaosdPairLatency.medianUs, v1PairLatency.medianUs, 2), p99: ratio(chaosdPairLatency.p99Us, v1PairLatency.p99Us, 2) },
    }
  })
}

export function formatChaosdResult(r: ChaosdBenchResult): string {
  const row = (name: string, l: LatencySummary) => [name, us(l.medianUs), us(l.p99Us)]
  return [
    `chaosd-compatible API: attack + recover of process-stop (signal 19), ${r.rounds} interleaved rounds (${r.warmupRounds} warm-up)`,
    formatMachine(r.machine),
    table(['pair', 'median', 'p99'], [row('chaosd API: POST /api/attack/process + DELETE /api/attack/<uid>', r.latency.chaosdPair), row('v1: POST /v1/injections + DELETE /v1/injections/<id>', r.latency.v1Pair)]),
    `ratio chaosd / v1: median ${r.ratios.median}×, p99 ${r.ratios.p99}×`,
  ].join('\n')
}
