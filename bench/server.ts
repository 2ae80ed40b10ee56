import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import { connectSimAgents, formatMachine, machineInfo, ratio, repoRoot, running, sleep, startServer, stderrProgress, table, track, withCleanup, type Cleanup, type MachineInfo } from './lib.js'

/**
 * The server with many simulated agents (DESIGN.md section 7): N light WebSocket clients in this
 * process (SimAgent in lib.ts) speak the link protocol to the built server (`faultline server`,
 * its own process, on loopback). Each client enrols, says hello and sends heartbeats like an
 * agent; on `inject` it answers with an active injection at once, on `halt` it reports the
 * injection recovered and acknowledges. No fault is applied: the figures are the server's and the link's share of a
 * fleet-wide run start and of a halt-all, not the cost of a fault on a host.
 *
 * Per round: POST /v1/experiments/NAME/runs (mode all), then POST /v1/halt.
 * - run → active: from just before the POST to the moment each client answered its inject
 *   (per agent), and to the moment GET /v1/runs/ID shows every record active (server side;
 *   polled every 10 ms, every 50 ms above 200 agents).
 * - halt → recovered: from just before POST /v1/halt to the moment each client acknowledged the
 *   halt (per agent), and to the answer of POST /v1/halt (every acknowledgement received).
 * - baseline: the same fan-out with nothing but WebSocket frames (bareFanout): what any server
 *   pays to reach N clients and hear back from each on this machine.
 */

export interface ServerBenchLevel {
  agents: number
  rounds: number
  connectMs: number
  /** Per agent, over every round: run start → this agent acknowledged active. */
  activeP50Ms: number
  activeP99Ms: number
  activeMaxMs: number
  /** Per round: run start → GET /v1/runs shows every record active; median and worst round. */
  allActiveMedianMs: number
  allActiveMaxMs: number
  /** Per agent: POST /v1/halt → this agent acknowledged (recovered). */
  haltP50Ms: number
  haltP99Ms: number
  haltMaxMs: number
  /** Per round: POST /v1/halt → its answer (every connected agent acknowledged). */
  haltAnswerMedianMs: number
  haltAnswerMaxMs: number
  /**
   * Baseline, same run and fleet size: a bare `ws` server (its own process, no schema, no
   * SQLite, no HTTP) sends one message to every client and waits for every reply. Per client
   * and until the last reply, median of the rounds.
   */
  bareP50Ms: number
  bareP99Ms: number
  bareAllMedianMs: number
}

export interface ServerBenchResult {
  machine: MachineInfo
  leaseMs: number
  levels: ServerBenchLevel[]
}

const median = (xs: number[]) => quantile(xs, 50)
function quantile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b)
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!
}
const r1 = (x: number) => Math.round(x * 10) / 10

export async function runServerBench(opts: { rounds?: number; warmupRounds?: number; levels?: number[]; progress?: (line: string) => void } = {}): Promise<ServerBenchResult> {
  const progress = opts.progress ?? stderrProgress
  const rounds = opts.rounds ?? 5
  const warmup = opts.warmupRounds ?? 1
  const leaseMs = 30_000
  return withCleanup(async (cleanup) => {
    const dir = mkdtempSync(join(tmpdir(), 'fl-bench-server-'))
    cleanup.add('state dir', () => rmSync(dir, { recursive: true, force: true }))
    const levels: ServerBenchLevel[] = []
    for (const n of opts.levels ?? [100, 1000]) {
      // A fresh server per level: an empty database, no agents from the level before.
      const server = await startServer(dir, `state-${n}`, cleanup, { leaseMs })
      const { api } = server
      const connectStart = performance.now()
      const agents = await connectSimAgents(server, n, cleanup)
      const connectMs = performance.now() - connectStart
      progress(`server bench: ${n} simulated agents connected in ${Math.round(connectMs)} ms`)
      await api('POST', '/v1/experiments', { name: 'bench', hosts: { labels: { bench: 'sim' } }, mode: 'all', target: { type: 'process', name: 'sleep' }, fault: { kind: 'process-stop' }, duration: '10m' })

      const active: number[] = []
      const halted: number[] = []
      const allActive: number[] = []
      const haltAnswer: number[] = []
      for (let round = 0; round < warmup + rounds; round++) {
        for (const a of agents) a.activeAt = a.haltAt = 0
        const t0 = performance.now()
        const { id } = await api<{ id: string }>('POST', '/v1/experiments/bench/runs')
        for (;;) {
          const run = await api<{ records: { status: string }[] }>('GET', `/v1/runs/${id}`)
          if (run.records.length === n && run.records.every((r) => r.status === 'active')) break
          // Each poll is a full run view (n records): poll less often for a large fleet.
          await sleep(n > 200 ? 50 : 10)
        }
        const allActiveMs = performance.now() - t0
        if (agents.some((a) => a.activeAt === 0)) throw new Error('a record is active but its agent never answered')
        const h0 = performance.now()
        const halt = await api<{ agents: { ok: boolean }[] }>('POST', '/v1/halt')
        const haltMs = performance.now() - h0
        if (halt.agents.length !== n || !halt.agents.every((a) => a.ok)) throw new Error(`halt reached ${halt.agents.filter((a) => a.ok).length} of ${n} agents`)
        for (;;) {
          const run = await api<{ status: string }>('GET', `/v1/runs/${id}`)
          if (run.status !== 'running') break
          await sleep(20)
        }
        if (round < warmup) continue
        for (const a of agents) {
          active.push(a.activeAt - t0)
          halted.push(a.haltAt - h0)
        }
        allActive.push(allActiveMs)
        haltAnswer.push(haltMs)
        progress(`server bench: ${n} agents, round ${round - warmup + 1}/${rounds}: all active ${Math.round(allActiveMs)} ms, halt answered ${Math.round(haltMs)} ms`)
      }
      for (const a of agents) a.close()
      agents.length = 0
      await server.stop()
      const bareResult = await bareFanout(n, rounds, warmup, cleanup)
      progress(`server bench: ${n} agents, bare ws fan-out: all replied in ${Math.round(median(bareResult.all))} ms (median)`)
      levels.push({
        agents: n,
        bareP50Ms: r1(quantile(bareResult.perClient, 50)),
        bareP99Ms: r1(quantile(bareResult.perClient, 99)),
        bareAllMedianMs: r1(median(bareResult.all)),
        rounds,
        connectMs: Math.round(connectMs),
        activeP50Ms: r1(quantile(active, 50)),
        activeP99Ms: r1(quantile(active, 99)),
        activeMaxMs: r1(Math.max(...active)),
        allActiveMedianMs: r1(median(allActive)),
        allActiveMaxMs: r1(Math.max(...allActive)),
        haltP50Ms: r1(quantile(halted, 50)),
        haltP99Ms: r1(quantile(halted, 99)),
        haltMaxMs: r1(Math.max(...halted)),
        haltAnswerMedianMs: r1(median(haltAnswer)),
        haltAnswerMaxMs: r1(Math.max(...haltAnswer)),
      })
    }
    return { machine: machineInfo(), leaseMs, levels }
  })
}

const BARE_SERVER = `
const { WebSocketServer } = require('ws')
const { performance } = require('node:perf_hooks')
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false })
let pending = 0
let t0 = 0
wss.on('connection', (ws) => ws.on('message', () => {
  if (pending > 0 && --pending === 0) process.stdout.write(JSON.stringify({ allMs: performance.now() - t0 }) + '\\n')
}))
wss.on('listening', () => process.stdout.write(JSON.stringify({ port: wss.address().port }) + '\\n'))
process.stdin.on('data', () => {
  pending = wss.clients.size
  t0 = performance.now()
  for (const ws of wss.clients) ws.send('{"type":"ping"}')
})
`

/**
 * The baseline: n clients of a bare ws server (a child process); `rounds` times, the server
 * sends each a frame and waits for every reply. Per client: from the bench's "go" to the frame's
 * arrival; all: the child's own clock from the first send to the last reply.
 */
async function bareFanout(n: number, rounds: number, warmup: number, cleanup: Cleanup): Promise<{ perClient: number[]; all: number[] }> {
  const child = spawn(process.execPath, ['-e', BARE_SERVER], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'inherit'] })
  const bare = track(child, 'bare ws server')
  const undo = cleanup.add('bare ws server', async () => {
    if (running(bare)) child.kill('SIGKILL')
    await bare.exited
  })
  const lines: Record<string, number>[] = []
  let buffered = ''
  child.stdout!.on('data', (c: Buffer) => {
    buffered += c.toString()
    let nl: number
    while ((nl = buffered.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buffered.slice(0, nl)) as Record<string, number>)
      buffered = buffered.slice(nl + 1)
    }
  })
  const waitLine = async (key: string, from: number) => {
    for (;;) {
      const line = lines.slice(from).find((l) => key in l)
      if (line) return line[key]!
      if (!running(bare)) throw new Error('the bare ws server exited')
      await sleep(2)
    }
  }
  const port = await waitLine('port', 0)
  const clients: { ws: WebSocket; at: number }[] = []
  for (let i = 0; i < n; i += 50) {
    const batch = Array.from({ length: Math.min(50, n - i) }, () => {
      const c = { ws: new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false }), at: 0 }
      c.ws.on('message', () => {
        c.at = performance.now()
        c.ws.send('{"type":"pong"}')
      })
      return c
    })
    clients.push(...batch)
    await Promise.all(batch.map((c) => new Promise((resolve, reject) => c.ws.once('open', resolve).once('error', reject))))
  }
  const perClient: number[] = []
  const all: number[] = []
  for (let round = 0; round < warmup + rounds; round++) {
    const from = lines.length
    const t0 = performance.now()
    child.stdin!.write('go\n')
    const allMs = await waitLine('allMs', from)
    if (round < warmup) continue
    for (const c of clients) perClient.push(c.at - t0)
    all.push(allMs)
  }
  for (const c of clients) c.ws.terminate()
  await undo()
  return { perClient, all }
}

export function formatServerResult(r: ServerBenchResult): string {
  const rows = r.levels.map((l) => [
    String(l.agents),
    String(l.rounds),
    `${l.connectMs} ms`,
    `${l.activeP50Ms} / ${l.activeP99Ms} / ${l.activeMaxMs} ms`,
    `${l.allActiveMedianMs} (${l.allActiveMaxMs}) ms`,
    `${l.haltP50Ms} / ${l.haltP99Ms} / ${l.haltMaxMs} ms`,
    `${l.haltAnswerMedianMs} (${l.haltAnswerMaxMs}) ms`,
    `${l.bareP50Ms} / ${l.bareP99Ms} ms, all ${l.bareAllMedianMs} ms`,
    `×${ratio(l.allActiveMedianMs, l.bareAllMedianMs)} / ×${ratio(l.haltAnswerMedianMs, l.bareAllMedianMs)}`,
  ])
  return [
    'Server: run start and halt-all across simulated agents (WebSocket clients in one process)',
    formatMachine(r.machine),
    table(['agents', 'rounds', 'enrol+hello', 'run→active p50/p99/max', 'all active (worst)', 'halt→recovered p50/p99/max', 'halt answered (worst)', 'bare ws p50/p99, all', 'all active / halt vs bare'], rows),
  ].join('\n')
}
