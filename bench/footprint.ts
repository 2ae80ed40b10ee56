import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'
import { writeHeapSnapshot } from 'node:v8'
import {
  agentClient,
  idleFootprints,
  procState,
  resumeAndKill,
  type Footprint,
  formatMachine,
  machineInfo,
  ratio,
  sleep,
  startBareNode,
  startAgent,
  stderrProgress,
  stopAgent,
  table,
  track,
  withCleanup,
  type MachineInfo,
} from './lib.js'

/**
 * The agent's idle footprint (issue 18, target 1), run on its own:
 *
 *   node --import tsx bench/footprint.ts [--pairs N] [--settle S] [--window S] [--node-flags "F ..."] [--json]
 *
 * 1. RSS and CPU of the built agent (`node dist/cli/main.js agent`, as `npm start` and the
 *    package run it) against a bare `node -e "setInterval(()=>{},1000)"` started by the same
 *    run, over the same windows: once after start, once after N process-stop inject + recover
 *    pairs over HTTP. Neither process gets a Node or V8 flag, unless --node-flags gives both the
 *    same ones.
 * 2. A heap snapshot diff of an agent built in this process (agent/app.ts, app.inject): after
 *    warm-up pairs, and after N more pairs. `v8.writeHeapSnapshot` collects garbage first, so
 *    what grows between the two is what the pairs retained; the table lists the object kinds
 *    whose count grew most.
 *
 * Needs root (it stops and resumes a real process) and `npm run build` (the built agent).
 * Leaves nothing behind: the agent, the bare node and the target are stopped, the state
 * directories and snapshots removed, also on failure or Ctrl-C.
 */

interface HeapGrowth {
  name: string
  countBefore: number
  countAfter: number
  bytesBefore: number
  bytesAfter: number
}

export interface FootprintResult {
  benchmark: 'footprint'
  date: string
  machine: MachineInfo
  pairs: number
  /** Node flags both the agent and the bare node were started with. */
  nodeFlags: string[]
  settleMs: number
  windowMs: number
  atStart: { agent: Footprint; bareNode: Footprint; rssRatio: number }
  afterPairs: { agent: Footprint; bareNode: Footprint; rssRatio: number }
  /** Agent RSS after the pairs / after start. */
  rssGrowth: number
  heap: { warmupPairs: number; pairs: number; totalBefore: number; totalAfter: number; countBefore: number; countAfter: number; topGrowth: HeapGrowth[] }
}

/** Waits (no timers: a tight loop, a few ms at most) until the sleep is asleep again. */
function untilSleeping(pid: number): void {
  const deadline = performance.now() + 2_000
  while (procState(pid) !== 'S') if (performance.now() > deadline) throw new Error(`pid ${pid} not back in S within 2 s`)
}

/** Per (node type, constructor name): how many objects and their self size. */
function heapCensus(file: string): Map<string, { count: number; bytes: number }> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } }
    nodes: number[]
    strings: string[]
  }
  const fields = snap.snapshot.meta.node_fields
  const types = snap.snapshot.meta.node_types[0]
  const width = fields.length
  const [typeAt, nameAt, sizeAt] = [fields.indexOf('type'), fields.indexOf('name'), fields.indexOf('self_size')]
  const census = new Map<string, { count: number; bytes: number }>()
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt]!]!
    // Strings are named by their content: group them by type only.
    const name = type === 'string' || type === 'concatenated string' || type === 'sliced string' || type === 'number' ? type : `${type}: ${snap.strings[snap.nodes[i + nameAt]!]!.slice(0, 60)}`
    const entry = census.get(name) ?? { count: 0, bytes: 0 }
    entry.count++
    entry.bytes += snap.nodes[i + sizeAt]!
    census.set(name, entry)
  }
  return census
}

async function heapDiff(warmupPairs: number, pairs: number, progress: (line: string) => void): Promise<FootprintResult['heap']> {
  const { buildAgent } = await import('../agent/app.js')
  return withCleanup(async (cleanup) => {
    const dir = mkdtempSync(join(tmpdir(), 'fl-footprint-'))
    cleanup.add('remove the state directory and snapshots', () => rmSync(dir, { recursive: true, force: true }))
    const app = await buildAgent({ stateDir: join(dir, 'state'), maxDurationMs: 3_600_000 })
    cleanup.add('close the in-process agent', () => app.close())
    const target = track(spawn('sleep', ['3600'], { stdio: 'ignore' }), 'sleep')
    cleanup.add('resume and kill the target', () => resumeAndKill(target))
    untilSleeping(target.pid)
    const payload = { fault: { kind: 'process-stop' }, target: { type: 'process', pid: target.pid }, duration: '60s' }
    const pair = async () => {
      const created = await app.inject({ method: 'POST', url: '/v1/injections', payload })
      if (created.statusCode !== 201) throw new Error(`POST /v1/injections: ${created.statusCode} ${created.body}`)
      const id = created.json<{ id: string }>().id
      const recovered = await app.inject({ method: 'DELETE', url: `/v1/injections/${encodeURIComponent(id)}` })
      if (recovered.statusCode !== 200) throw new Error(`DELETE: ${recovered.statusCode} ${recovered.body}`)
      untilSleeping(target.pid)
    }
    progress(`heap diff: ${warmupPairs} warm-up pairs in process`)
    for (let i = 0; i < warmupPairs; i++) await pair()
    // Both snapshots first, then the census: a census held while the second snapshot is taken
    // would show up in it as growth.
    const beforeFile = writeHeapSnapshot(join(dir, 'before.heapsnapshot'))
    progress(`heap diff: ${pairs} pairs in process`)
    for (let i = 0; i < pairs; i++) await pair()
    const afterFile = writeHeapSnapshot(join(dir, 'after.heapsnapshot'))
    const before = heapCensus(beforeFile)
    const after = heapCensus(afterFile)
    const sum = (m: Map<string, { count: number; bytes: number }>, k: 'count' | 'bytes') => [...m.values()].reduce((s, e) => s + e[k], 0)
    const names = new Set([...before.keys(), ...after.keys()])
    const topGrowth = [...names]
      .map((name) => ({
        name,
        countBefore: before.get(name)?.count ?? 0,
        countAfter: after.get(name)?.count ?? 0,
        bytesBefore: before.get(name)?.bytes ?? 0,
        bytesAfter: after.get(name)?.bytes ?? 0,
      }))
      .sort((a, b) => b.bytesAfter - b.bytesBefore - (a.bytesAfter - a.bytesBefore))
      .slice(0, 8)
    return { warmupPairs, pairs, totalBefore: sum(before, 'bytes'), totalAfter: sum(after, 'bytes'), countBefore: sum(before, 'count'), countAfter: sum(after, 'count'), topGrowth }
  })
}

export async function runFootprintBench(
  opts: { pairs?: number; windowMs?: number; settleMs?: number; nodeFlags?: string[]; progress?: (line: string) => void } = {},
): Promise<FootprintResult> {
  const pairs = opts.pairs ?? 1000
  const nodeFlags = opts.nodeFlags ?? []
  const windowMs = opts.windowMs ?? 30_000
  const settleMs = opts.settleMs ?? 5_000
  const progress = opts.progress ?? stderrProgress
  const http = await withCleanup(async (cleanup) => {
    const stateDir = mkdtempSync(join(tmpdir(), 'fl-footprint-'))
    cleanup.add('remove the state directory', () => rmSync(stateDir, { recursive: true, force: true }))
    progress('starting the built agent and a bare node process')
    // Node flags reach the agent through NODE_OPTIONS (startAgent runs the CLI with this
    // process's environment) and the bare node on its command line: both start the same way.
    const savedNodeOptions = process.env.NODE_OPTIONS
    if (nodeFlags.length > 0) process.env.NODE_OPTIONS = [savedNodeOptions, ...nodeFlags].filter(Boolean).join(' ')
    let agent: Awaited<ReturnType<typeof startAgent>>
    try {
      agent = await startAgent(stateDir)
    } finally {
      if (savedNodeOptions === undefined) delete process.env.NODE_OPTIONS
      else process.env.NODE_OPTIONS = savedNodeOptions
    }
    cleanup.add('stop the agent', () => stopAgent(agent))
    const bareNode = startBareNode(cleanup, nodeFlags)
    const target = track(spawn('sleep', ['3600'], { stdio: 'ignore' }), 'sleep')
    cleanup.add('resume and kill the target', () => resumeAndKill(target))
    untilSleeping(target.pid)

    progress(`idle window after start (${settleMs / 1000} s settle, ${windowMs / 1000} s window)`)
    const [agentAtStart, bareAtStart] = await idleFootprints([agent.pid, bareNode.pid], settleMs, windowMs)

    const { pool, call } = agentClient(agent)
    cleanup.add('close the HTTP pool', () => pool.destroy().catch(() => undefined))
    const body = JSON.stringify({ fault: { kind: 'process-stop' }, target: { type: 'process', pid: target.pid }, duration: '60s' })
    progress(`${pairs} inject + recover pairs over HTTP`)
    for (let i = 0; i < pairs; i++) {
      const created = JSON.parse(await call('POST', '/v1/injections', 201, body)) as { id: string }
      await call('DELETE', `/v1/injections/${encodeURIComponent(created.id)}`, 200)
      untilSleeping(target.pid)
    }
    progress(`idle window after the pairs (${settleMs / 1000} s settle, ${windowMs / 1000} s window)`)
    const [agentAfter, bareAfter] = await idleFootprints([agent.pid, bareNode.pid], settleMs, windowMs)
    return { agentAtStart: agentAtStart!, bareAtStart: bareAtStart!, agentAfter: agentAfter!, bareAfter: bareAfter! }
  })
  const heap = await heapDiff(100, pairs, progress)
  return {
    benchmark: 'footprint',
    date: new Date().toISOString(),
    machine: machineInfo(),
    pairs,
    nodeFlags,
    settleMs,
    windowMs,
    atStart: { agent: http.agentAtStart, bareNode: http.bareAtStart, rssRatio: ratio(http.agentAtStart.rssKiB, http.bareAtStart.rssKiB, 2) },
    afterPairs: { agent: http.agentAfter, bareNode: http.bareAfter, rssRatio: ratio(http.agentAfter.rssKiB, http.bareAfter.rssKiB, 2) },
    rssGrowth: ratio(http.agentAfter.rssKiB, http.agentAtStart.rssKiB, 3),
    heap,
  }
}

export function formatFootprintResult(r: FootprintResult): string {
  const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`
  const fp = (f: Footprint) => [mib(f.rssKiB), `${f.cpuPercentOfOneCore.toFixed(2)} %`]
  const h = r.heap
  return [
    `footprint: ${r.settleMs / 1000} s settle + ${r.windowMs / 1000} s window, ${r.pairs} process-stop pairs, node flags: ${r.nodeFlags.join(' ') || 'none'} (${r.date})`,
    formatMachine(r.machine),
    '',
    table(
      ['idle footprint', 'RSS', 'CPU (one core)'],
      [
        ['agent, after start', ...fp(r.atStart.agent)],
        ['bare node, same window', ...fp(r.atStart.bareNode)],
        [`agent, after ${r.pairs} pairs`, ...fp(r.afterPairs.agent)],
        ['bare node, same window', ...fp(r.afterPairs.bareNode)],
      ],
    ),
    `RSS ratio agent / bare node: ${r.atStart.rssRatio}× after start, ${r.afterPairs.rssRatio}× after the pairs; agent RSS after / before the pairs: ${r.rssGrowth}×`,
    '',
    `heap (in process, after GC): ${mib(h.totalBefore / 1024)} in ${h.countBefore} objects after ${h.warmupPairs} warm-up pairs, ${mib(h.totalAfter / 1024)} in ${h.countAfter} after ${h.pairs} more`,
    table(
      ['grew most', 'objects before', 'after', 'bytes before', 'after'],
      h.topGrowth.map((g) => [g.name, String(g.countBefore), String(g.countAfter), String(g.bytesBefore), String(g.bytesAfter)]),
    ),
  ].join('\n')
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      pairs: { type: 'string' },
      window: { type: 'string' },
      settle: { type: 'string' },
      'node-flags': { type: 'string' },
      json: { type: 'boolean' },
    },
  })
  const seconds = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined
    const n = Number(v)
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} takes a number of ${name === 'pairs' ? 'pairs' : 'seconds'}, not ${JSON.stringify(v)}`)
    return n
  }
  const pairs = seconds('pairs', values.pairs)
  const windowS = seconds('window', values.window)
  const settleS = seconds('settle', values.settle)
  const result = await runFootprintBench({
    nodeFlags: (values['node-flags'] ?? '').split(/\s+/).filter(Boolean),
    ...(pairs !== undefined ? { pairs } : {}),
    ...(windowS !== undefined ? { windowMs: windowS * 1000 } : {}),
    ...(settleS !== undefined ? { settleMs: settleS * 1000 } : {}),
  })
  process.stdout.write(values.json ? `${JSON.stringify(result, null, 2)}\n` : `${formatFootprintResult(result)}\n`)
}
