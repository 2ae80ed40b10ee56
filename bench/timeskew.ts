import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { addressAt, injectSkew, inspectVdso, pristineVdso, restoreSkew, timeskewHelperPath, vdsoFunctions, type PatchRequest, type PristineVdso } from '../agent/faults/time-skew/helper.js'
import {
  agentClient,
  formatMachine,
  machineInfo,
  ratio,
  repoRoot,
  running,
  startAgent,
  statFields,
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
 * time-skew: what a skewed process pays per clock read, against an unskewed twin measured in
 * the same run, and what an injection costs (the agent's POST + DELETE, the helper alone, and how
 * long the target's thread is held), against the floor of starting the helper at all.
 *
 * Needs root (ptrace), x86-64, gcc, and `npm run build` (the helper and dist/).
 */

export interface TimeskewBenchOptions {
  /** Measured inject rounds (default 200) and clock-cost rounds (a fifth of it, at least 10). */
  rounds?: number
  /** Unmeasured rounds first (default 20). */
  warmupRounds?: number
  /** Clock reads per timed batch (default 1,000,000). */
  calls?: number
  progress?: (line: string) => void
}

const clockFunctions = ['clock_gettime(REALTIME)', 'clock_gettime(MONOTONIC)', 'gettimeofday', 'time'] as const
type ClockFunction = (typeof clockFunctions)[number]
const command: Record<ClockFunction, string> = { 'clock_gettime(REALTIME)': 'rt', 'clock_gettime(MONOTONIC)': 'mono', gettimeofday: 'tod', time: 'time' }

export interface ClockCost {
  function: ClockFunction
  /** ns per call, median over the rounds. */
  unskewedNs: number
  skewedNs: number
  ratio: number
}

export interface TimeskewBenchResult {
  benchmark: 'time-skew'
  machine: MachineInfo
  rounds: number
  warmupRounds: number
  calls: number
  costRounds: number
  /** How the replacement reads the real clock: through the relocated vDSO entry, or the syscall. */
  relocation: string
  cost: ClockCost[]
  latency: {
    /** POST /v1/injections (time-skew, one fresh process) then DELETE, client-side. */
    agentPair: LatencySummary
    /** faultline-timeskew inject then restore on a fresh process (spawned, ptrace, mmap, patch; spawned, ptrace, restore). */
    helperPair: LatencySummary
    /** The helper started twice without arguments (it prints its usage): starting it, no ptrace. */
    spawnFloor: LatencySummary
  }
  ratios: { agentVsHelperMedian: number; helperVsSpawnFloorMedian: number }
  /** Longest gap a thread spinning on clock_gettime saw in a 200 ms window (median over rounds). */
  pause: { duringInjectUs: number; quietWindowUs: number; rounds: number }
}

/**
 * The program both twins run: reads "<fn> <n>" (or "spin <ms>") on stdin and answers one line.
 * Batches are timed with the clock_gettime syscall on CLOCK_MONOTONIC_RAW: neither the vDSO
 * nor the skew touches it.
 */
const BENCH_C = String.raw`
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
static long long raw_ns(void) { struct timespec t; syscall(SYS_clock_gettime, CLOCK_MONOTONIC_RAW, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
int main(void) {
  char fn[16]; long long n; volatile long long sink = 0;
  setvbuf(stdout, NULL, _IOLBF, 0);
  while (scanf("%15s %lld", fn, &n) == 2) {
    struct timespec ts; struct timeval tv;
    if (!strcmp(fn, "spin")) { /* n ms: the longest gap between two clock reads, in ns */
      clock_gettime(CLOCK_MONOTONIC, &ts); long long start = ts.tv_sec * 1000000000LL + ts.tv_nsec, prev = start, gap = 0;
      for (;;) { clock_gettime(CLOCK_MONOTONIC, &ts); long long now = ts.tv_sec * 1000000000LL + ts.tv_nsec;
        if (now - prev > gap) gap = now - prev; prev = now; if (now - start > n * 1000000LL) break; }
      printf("%lld\n", gap); continue;
    }
    long long t0 = raw_ns();
    for (long long i = 0; i < n; i++) {
      if (fn[0] == 'r') { clock_gettime(CLOCK_REALTIME, &ts); sink += ts.tv_nsec; }
      else if (fn[0] == 'm') { clock_gettime(CLOCK_MONOTONIC, &ts); sink += ts.tv_nsec; }
      else if (fn[0] == 't' && fn[1] == 'o') { gettimeofday(&tv, NULL); sink += tv.tv_usec; }
      else sink += time(NULL);
    }
    printf("%lld\n", raw_ns() - t0);
  }
  return (int)(sink & 1);
}
`

interface Twin extends Started {
  ask(line: string): Promise<string>
}

function startTwin(binary: string): Twin {
  const child: ChildProcess = spawn(binary, [], { stdio: ['pipe', 'pipe', 'inherit'] })
  const started = track(child, 'the clock benchmark program')
  const waiting: ((line: string) => void)[] = []
  createInterface({ input: child.stdout! }).on('line', (line) => waiting.shift()?.(line))
  return {
    ...started,
    ask: (line) =>
      new Promise((resolve) => {
        waiting.push(resolve)
        child.stdin!.write(`${line}\n`)
      }),
  }
}

async function killTwin(t: Started): Promise<void> {
  if (!running(t)) return
  t.child.kill('SIGKILL')
  await t.exited
}

/** Waits until a fresh twin sits in read(2) (state S): that is when a real service is idle. */
async function settled(t: Started): Promise<void> {
  for (let i = 0; i < 2_000 && statFields(t.pid)[0] !== 'S'; i++) await new Promise((r) => setImmediate(r))
}

const helper = timeskewHelperPath()

/** What the agent does for one process, without the HTTP API and the journal: read its vDSO, run the helper. */
async function helperInject(pid: number, start: number, pristine: PristineVdso): Promise<{ vdso: string; patches: PatchRequest[] }> {
  const { vdso } = await inspectVdso(pid)
  const patches = vdsoFunctions.map((symbol) => ({ symbol, address: addressAt(vdso, pristine.functions[symbol].offset), original: pristine.functions[symbol].bytes }))
  await injectSkew({ procRoot: '/proc' }, pid, start, vdso, '-3600000000000', 2337, patches)
  return { vdso, patches }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

export async function runTimeskewBench(opts: TimeskewBenchOptions = {}): Promise<TimeskewBenchResult> {
  const rounds = opts.rounds ?? 200
  const warmupRounds = opts.warmupRounds ?? 20
  const calls = opts.calls ?? 1_000_000
  const costRounds = Math.max(10, Math.round(rounds / 5))
  const pauseRounds = Math.max(10, Math.round(rounds / 10))
  const progress = opts.progress ?? stderrProgress
  if (process.arch !== 'x64') throw new Error(`time-skew is x86-64 only; this host is ${process.arch}`)

  return withCleanup(async (cleanup) => {
    const dir = mkdtempSync(join(tmpdir(), 'fl-bench-timeskew-'))
    cleanup.add('remove the temporary directory', () => rmSync(dir, { recursive: true, force: true }))
    writeFileSync(join(dir, 'clockbench.c'), BENCH_C)
    const binary = join(dir, 'clockbench')
    execFileSync('gcc', ['-O2', '-o', binary, join(dir, 'clockbench.c')])

    const self = await inspectVdso('self')
    const relocation = self.relocation === 'displaced' ? `displaced (${self.displaced} bytes of clock_gettime relocated)` : 'syscall'
    const pristine = await pristineVdso()

    progress(`starting the agent and two twins of the clock program (state dir ${dir}/state)`)
    const agent = await startAgent(join(dir, 'state'))
    cleanup.add('stop the agent (it recovers whatever is still skewed)', () => stopAgent(agent))
    const { pool, call } = agentClient(agent)
    cleanup.add('close the HTTP pool', () => pool.destroy().catch(() => undefined))

    // ---- clock cost: a skewed twin against an unskewed one --------------------------------
    const skewed = startTwin(binary)
    const plain = startTwin(binary)
    cleanup.add('kill the twins', async () => {
      await killTwin(skewed)
      await killTwin(plain)
    })
    await settled(skewed)
    const created = JSON.parse(
      await call('POST', '/v1/injections', 201, JSON.stringify({ fault: { kind: 'time-skew', offset: '-1h' }, target: { type: 'process', pid: skewed.pid }, duration: '30m' })),
    ) as { id: string }
    const cost: Record<ClockFunction, { skewed: number[]; plain: number[] }> = Object.fromEntries(clockFunctions.map((f) => [f, { skewed: [], plain: [] }])) as never
    progress(`clock cost: ${costRounds} rounds of ${calls} calls per function and twin (after 3 warm-up rounds)`)
    for (let i = -3; i < costRounds; i++) {
      for (const fn of clockFunctions) {
        // Alternate which twin goes first, so drift hits both alike.
        const order = i % 2 === 0 ? ([['skewed', skewed], ['plain', plain]] as const) : ([['plain', plain], ['skewed', skewed]] as const)
        for (const [name, twin] of order) {
          const ns = Number(await twin.ask(`${command[fn]} ${calls}`))
          if (i >= 0) cost[fn][name].push(ns / calls)
        }
      }
    }
    await call('DELETE', `/v1/injections/${created.id}`, 200)

    // ---- inject latency: fresh targets, agent pair / helper pair / spawn floor -------------
    async function agentPair(): Promise<number> {
      const target = startTwin(binary)
      try {
        await settled(target)
        const body = JSON.stringify({ fault: { kind: 'time-skew', offset: '-1h' }, target: { type: 'process', pid: target.pid }, duration: '60s' })
        const t0 = performance.now()
        const inj = JSON.parse(await call('POST', '/v1/injections', 201, body)) as { id: string; status: string }
        const done = JSON.parse(await call('DELETE', `/v1/injections/${inj.id}`, 200)) as { status: string }
        const ms = performance.now() - t0
        if (inj.status !== 'active' || done.status !== 'recovered') throw new Error(`injection ${inj.id}: ${inj.status} then ${done.status}`)
        return ms
      } finally {
        await killTwin(target)
      }
    }

    async function helperPair(): Promise<number> {
      const target = startTwin(binary)
      try {
        await settled(target)
        const start = Number(statFields(target.pid)[19]!)
        const t0 = performance.now()
        const injected = await helperInject(target.pid, start, pristine)
        await restoreSkew({ procRoot: '/proc' }, target.pid, start, injected.vdso, injected.patches)
        return performance.now() - t0
      } finally {
        await killTwin(target)
      }
    }

    async function spawnFloor(): Promise<number> {
      const t0 = performance.now()
      // Started with no arguments it prints its usage and exits 2: starting it, no ptrace.
      spawnSync(helper, [])
      spawnSync(helper, [])
      return performance.now() - t0
    }

    const samples = { agent: [] as number[], helper: [] as number[], floor: [] as number[] }
    const variants: [keyof typeof samples, () => Promise<number>][] = [
      ['agent', agentPair],
      ['helper', helperPair],
      ['floor', spawnFloor],
    ]
    progress(`inject latency: ${warmupRounds} warm-up rounds, then ${rounds} measured, interleaved`)
    for (let i = -warmupRounds; i < rounds; i++) {
      for (let j = 0; j < variants.length; j++) {
        const [name, run] = variants[(i + warmupRounds + j) % variants.length]!
        const ms = await run()
        if (i >= 0) samples[name].push(ms)
      }
    }

    // ---- how long the target is held: a thread spinning on clock_gettime ------------------
    progress(`target pause: ${pauseRounds} rounds of a 200 ms spin with and without an inject in it`)
    const during: number[] = []
    const quiet: number[] = []
    for (let i = 0; i < pauseRounds; i++) {
      const target = startTwin(binary)
      try {
        await settled(target)
        const start = Number(statFields(target.pid)[19]!)
        quiet.push(Number(await target.ask('spin 200')) / 1000)
        const answer = target.ask('spin 200')
        await new Promise((r) => setTimeout(r, 50))
        await helperInject(target.pid, start, pristine)
        during.push(Number(await answer) / 1000)
      } finally {
        await killTwin(target)
      }
    }

    await pool.close()
    if (agent.warnings.length > 0) progress(`the agent logged ${agent.warnings.length} warnings, e.g. ${agent.warnings[0]}`)

    const agentSummary = summarise(samples.agent)
    const helperSummary = summarise(samples.helper)
    const floorSummary = summarise(samples.floor)
    return {
      benchmark: 'time-skew',
      machine: machineInfo(),
      rounds,
      warmupRounds,
      calls,
      costRounds,
      relocation,
      cost: clockFunctions.map((fn) => {
        const unskewedNs = Math.round(median(cost[fn].plain) * 10) / 10
        const skewedNs = Math.round(median(cost[fn].skewed) * 10) / 10
        return { function: fn, unskewedNs, skewedNs, ratio: ratio(skewedNs, unskewedNs, 2) }
      }),
      latency: { agentPair: agentSummary, helperPair: helperSummary, spawnFloor: floorSummary },
      ratios: {
        agentVsHelperMedian: ratio(agentSummary.medianUs, helperSummary.medianUs),
        helperVsSpawnFloorMedian: ratio(helperSummary.medianUs, floorSummary.medianUs),
      },
      pause: { duringInjectUs: Math.round(median(during)), quietWindowUs: Math.round(median(quiet)), rounds: pauseRounds },
    }
  })
}

export function formatTimeskewResult(r: TimeskewBenchResult): string {
  const l = r.latency
  return [
    `${r.benchmark}: clock cost over ${r.costRounds} rounds of ${r.calls} calls; inject latency over ${r.rounds} rounds after ${r.warmupRounds} warm-up, interleaved`,
    formatMachine(r.machine),
    `replacement reads the real clock: ${r.relocation}`,
    '',
    table(
      ['ns per call (median)', 'unskewed', 'skewed -1h', 'ratio'],
      r.cost.map((c) => [c.function, c.unskewedNs.toFixed(1), c.skewedNs.toFixed(1), `${c.ratio}×`]),
    ),
    '',
    table(
      ['inject + recover pair', 'median', 'p99', 'min', 'max'],
      [
        ['agent: POST + DELETE /v1/injections', l.agentPair],
        ['helper: inject + restore', l.helperPair],
        ['floor: helper started twice (usage)', l.spawnFloor],
      ].map(([name, s]) => [name as string, us((s as LatencySummary).medianUs), us((s as LatencySummary).p99Us), us((s as LatencySummary).minUs), us((s as LatencySummary).maxUs)]),
    ),
    `ratios (median): agent / helper ${r.ratios.agentVsHelperMedian}×, helper / floor ${r.ratios.helperVsSpawnFloorMedian}×`,
    '',
    `target pause (longest gap between two clock reads of a spinning thread, median of ${r.pause.rounds}): ` +
      `${us(r.pause.duringInjectUs)} with an inject in the window, ${us(r.pause.quietWindowUs)} without`,
  ].join('\n')
}
