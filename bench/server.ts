import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { get } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { formatMachine, machineInfo, repoRoot, running, SIM_ADMIN_TOKEN, sleep, startServer, stderrProgress, table, track, withCleanup, type Cleanup, type MachineInfo, type Started } from './lib.js'
import { epochNow, fleetThreads, SimFleet } from './sim-fleet.js'

/**
 * The server with many simulated agents (DESIGN.md section 7): N light WebSocket clients
 * (SimAgent in lib.ts) spread over worker threads (SimFleet, sim-fleet.ts: one thread per 500
 * clients, at most one per CPU) speak the link protocol to the built server (`faultline server`,
 * its own process, on loopback). Each client enrols, says hello and sends heartbeats like an
 * agent; on `inject` it answers once with an active injection at once, on `halt` it reports the
 * injection recovered and acknowledges. No fault is applied: the figures are the server's and
 * the link's share of a fleet-wide run start and of a halt-all, not the cost of a fault on a host.
 *
 * Per round: POST /v1/experiments/NAME/runs (mode all), then POST /v1/halt.
 * - run → active: from just before the POST to the moment each client answered its inject
 *   (per agent), and to the moment GET /v1/runs/ID shows every record active (server side;
 *   polled every 2 ms from the moment the last client answered, since no record can be active
 *   before its agent answered, so the polls do not load the server during the fan-out).
 * - halt → recovered: from just before POST /v1/halt to the moment each client acknowledged the
 *   halt (per agent), and to the answer of POST /v1/halt (every acknowledgement received).
 * - baseline: the same fan-out with nothing but WebSocket frames (BareFanout), with its clients
 *   on the same threads: what any server pays to reach N clients and hear back from each here.
 *   A bare round runs just before each server round, so both meet the same machine load.
 * Times cross threads as epoch milliseconds at performance.now() resolution (epochNow).
 */

export interface ServerBenchLevel {
  agents: number
  /** Worker threads the simulated clients (and the baseline's clients) are spread over. */
  threads: number
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
  /**
   * The figures the targets are about: per round, all active (and halt answered) over the bare
   * round run just before it; the median of the rounds. Paired rounds meet the same load.
   */
  activeVsBare: number
  haltVsBare: number
  /** GET /v1/agents for this fleet: bytes on the wire plain, and with gzip and br asked for. */
  agentsListBytes: number
  agentsListGzipBytes: number
  agentsListBrBytes: number
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
const r2 = (x: number) => Math.round(x * 100) / 100

export async function runServerBench(opts: { rounds?: number; warmupRounds?: number; levels?: number[]; progress?: (line: string) => void } = {}): Promise<ServerBenchResult> {
  const progress = opts.progress ?? stderrProgress
  const rounds = opts.rounds ?? 5
  const warmup = opts.warmupRounds ?? 1
  const leaseMs = 30_000
  return withCleanup(async (cleanup) => {
    const dir = mkdtempSync(join(tmpdir(), 'fl-bench-server-'))
    cleanup.add('state dir', () => rmSync(dir, { recursive: true, force: true }))
    const levels: ServerBenchLevel[] = []
    for (const n of opts.levels ?? [100, 1000, 5000]) {
      // The baseline's server and clients stay up beside the real ones: a bare round runs just
      // before each server round, so both see the same load on a machine that is not quiet.
      const bare = await BareFanout.start(n, cleanup)
      // A fresh server per level: an empty database, no agents from the level before.
      const server = await startServer(dir, `state-${n}`, cleanup, { leaseMs })
      const { api } = server
      const connectStart = performance.now()
      const agents = await SimFleet.connect('agents', `${server.base.replace(/^http/, 'ws')}/v1/agents/connect`, n, cleanup)
      for (;;) {
        const health = await api<{ agents: number }>('GET', '/healthz')
        if (health.agents === n) break
        await sleep(50)
      }
      const connectMs = performance.now() - connectStart
      progress(`server bench: ${n} simulated agents on ${fleetThreads(n)} thread(s) connected in ${Math.round(connectMs)} ms`)
      const agentsList = { plain: await responseBytes(server.base, '/v1/agents', 'identity'), gzip: await responseBytes(server.base, '/v1/agents', 'gzip'), br: await responseBytes(server.base, '/v1/agents', 'br') }
      await api('POST', '/v1/experiments', { name: 'bench', hosts: { labels: { bench: 'sim' } }, mode: 'all', target: { type: 'process', name: 'sleep' }, fault: { kind: 'process-stop' }, duration: '10m' })
      // The run view of n records, uncompressed: the poll measures the server, not gzip.
      const runView = async <T>(id: string) => {
        const res = await fetch(`${server.base}/v1/runs/${id}`, { headers: { authorization: `Bearer ${SIM_ADMIN_TOKEN}`, 'accept-encoding': 'identity' } })
        if (res.status !== 200) throw new Error(`GET /v1/runs/${id}: ${res.status} ${await res.text()}`)
        return (await res.json()) as T
      }

      const active: number[] = []
      const halted: number[] = []
      const allActive: number[] = []
      const haltAnswer: number[] = []
      for (let round = 0; round < warmup + rounds; round++) {
        const bareMs = await bare.round(round >= warmup)
        await agents.reset()
        const injected = agents.allAnswered('inject')
        const t0 = epochNow()
        const { id } = await api<{ id: string }>('POST', '/v1/experiments/bench/runs')
        // No record can be active before its agent answered: poll the run view from then on.
        await injected
        for (;;) {
          const run = await runView<{ records: { status: string }[] }>(id)
          if (run.records.length === n && run.records.every((r) => r.status === 'active')) break
          await sleep(2)
        }
        const allActiveMs = epochNow() - t0
        const acknowledged = agents.allAnswered('halt')
        const h0 = epochNow()
        const halt = await api<{ agents: { ok: boolean }[] }>('POST', '/v1/halt')
        const haltMs = epochNow() - h0
        if (halt.agents.length !== n || !halt.agents.every((a) => a.ok)) throw new Error(`halt reached ${halt.agents.filter((a) => a.ok).length} of ${n} agents`)
        await acknowledged
        for (;;) {
          const run = await runView<{ status: string }>(id)
          if (run.status !== 'running') break
          await sleep(20)
        }
        if (round < warmup) continue
        const times = await agents.times()
        if (times.inject.some((at) => at === 0) || times.halt.some((at) => at === 0)) throw new Error('an agent never answered its inject or the halt')
        for (const at of times.inject) active.push(at - t0)
        for (const at of times.halt) halted.push(at - h0)
        allActive.push(allActiveMs)
        haltAnswer.push(haltMs)
        progress(`server bench: ${n} agents, round ${round - warmup + 1}/${rounds}: bare ws all replied ${Math.round(bareMs)} ms, all active ${Math.round(allActiveMs)} ms, halt answered ${Math.round(haltMs)} ms`)
      }
      await agents.close()
      await server.stop()
      await bare.close()
      const bareResult = { perClient: bare.perClient, all: bare.all }
      levels.push({
        agents: n,
        threads: fleetThreads(n),
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
        activeVsBare: r2(median(allActive.map((ms, i) => ms / bareResult.all[i]!))),
        haltVsBare: r2(median(haltAnswer.map((ms, i) => ms / bareResult.all[i]!))),
        agentsListBytes: agentsList.plain,
        agentsListGzipBytes: agentsList.gzip,
        agentsListBrBytes: agentsList.br,
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

/** The bytes of a GET's body as they come over the wire (not decoded), asking for `encoding`. */
function responseBytes(base: string, path: string, encoding: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = get(`${base}${path}`, { headers: { authorization: `Bearer ${SIM_ADMIN_TOKEN}`, 'accept-encoding': encoding } }, (res) => {
      let bytes = 0
      res.on('data', (c: Buffer) => (bytes += c.length))
      res.on('end', () => (res.statusCode === 200 ? resolve(bytes) : reject(new Error(`GET ${path}: ${res.statusCode}`))))
      res.on('error', reject)
    })
    req.on('error', reject)
  })
}

/**
 * The baseline: n clients of a bare ws server (a child process), on the same worker threads as
 * the simulated agents (SimFleet). Each round, the server sends each client a frame and waits
 * for every reply. Per client: from the bench's "go" to the frame's arrival; all: the child's own
 * clock from the first send to the last reply.
 */
class BareFanout {
  readonly #lines: Record<string, number>[] = []
  readonly perClient: number[] = []
  readonly all: number[] = []

  private constructor(
    readonly bare: Started,
    readonly undo: () => Promise<void>,
    public clients?: SimFleet,
  ) {}

  static async start(n: number, cleanup: Cleanup): Promise<BareFanout> {
    const child = spawn(process.execPath, ['-e', BARE_SERVER], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'inherit'] })
    const bare = track(child, 'bare ws server')
    const undo = cleanup.add('bare ws server', async () => {
      if (running(bare)) child.kill('SIGKILL')
      await bare.exited
    })
    const fanout = new BareFanout(bare, undo)
    let buffered = ''
    child.stdout!.on('data', (c: Buffer) => {
      buffered += c.toString()
      let nl: number
      while ((nl = buffered.indexOf('\n')) >= 0) {
        fanout.#lines.push(JSON.parse(buffered.slice(0, nl)) as Record<string, number>)
        buffered = buffered.slice(nl + 1)
      }
    })
    const port = await fanout.#waitLine('port', 0)
    fanout.clients = await SimFleet.connect('bare', `ws://127.0.0.1:${port}`, n, cleanup)
    return fanout
  }

  async #waitLine(key: string, from: number): Promise<number> {
    for (;;) {
      const line = this.#lines.slice(from).find((l) => key in l)
      if (line) return line[key]!
      if (!running(this.bare)) throw new Error('the bare ws server exited')
      await sleep(2)
    }
  }

  /** One round; its figures are kept unless it is a warm-up round. */
  async round(keep: boolean): Promise<number> {
    const clients = this.clients!
    await clients.reset()
    const replied = clients.allAnswered('bare')
    const from = this.#lines.length
    const t0 = epochNow()
    this.bare.child.stdin!.write('go\n')
    const allMs = await this.#waitLine('allMs', from)
    await replied
    if (keep) {
      for (const at of (await clients.times()).bare) this.perClient.push(at - t0)
      this.all.push(allMs)
    }
    return allMs
  }

  async close(): Promise<void> {
    await this.clients?.close()
    await this.undo()
  }
}

export function formatServerResult(r: ServerBenchResult): string {
  const rows = r.levels.map((l) => [
    String(l.agents),
    String(l.threads),
    String(l.rounds),
    `${l.connectMs} ms`,
    `${l.activeP50Ms} / ${l.activeP99Ms} / ${l.activeMaxMs} ms`,
    `${l.allActiveMedianMs} (${l.allActiveMaxMs}) ms`,
    `${l.haltP50Ms} / ${l.haltP99Ms} / ${l.haltMaxMs} ms`,
    `${l.haltAnswerMedianMs} (${l.haltAnswerMaxMs}) ms`,
    `${l.bareP50Ms} / ${l.bareP99Ms} ms, all ${l.bareAllMedianMs} ms`,
    `×${l.activeVsBare} / ×${l.haltVsBare}`,
  ])
  return [
    'Server: run start and halt-all across simulated agents (WebSocket clients on worker threads)',
    formatMachine(r.machine),
    table(['agents', 'threads', 'rounds', 'enrol+hello', 'run→active p50/p99/max', 'all active (worst)', 'halt→recovered p50/p99/max', 'halt answered (worst)', 'bare ws p50/p99, all', 'all active / halt vs bare (median of rounds)'], rows),
    '',
    'GET /v1/agents, bytes on the wire',
    table(['agents', 'plain', 'gzip', 'br'], r.levels.map((l) => [String(l.agents), kib(l.agentsListBytes), kib(l.agentsListGzipBytes), kib(l.agentsListBrBytes)])),
  ].join('\n')
}

const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`

