import { spawn } from 'node:child_process'
import { closeSync, fstatSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import {
  agentClient,
  formatMachine,
  machineInfo,
  ratio,
  repoRoot,
  startAgent,
  stderrProgress,
  stopAgent,
  summarise,
  table,
  us,
  withCleanup,
  type LatencySummary,
  type MachineInfo,
} from './lib.js'

/**
 * The io-* kinds' FUSE pass-through (native/iofault) against the same directory without it,
 * measured in the same run (DESIGN.md section 7), with no rule: what laying the mount costs the
 * target before any fault. Two mount modes, as the agent chooses them: "cached" (no rule on read
 * or write: page cache on) and "direct_io" (a rule on read or write: every call reaches the
 * helper). Workloads, from this process with synchronous fs calls: sequential write and read of
 * a 64 MiB file in 128 KiB calls (MiB/s), 4 KiB preads at random offsets, open+close and stat
 * (per-op latency). The directory is measured directly, then through the mount, alternating
 * per repetition so drift hits both sides. Then inject + recover of io-latency through the agent
 * (HTTP, journal, helper start, mount, SIGTERM, detach) against the bare mechanism: start the
 * helper, wait for FUSE_INIT, SIGTERM, wait until it exited.
 *
 * Needs root, /dev/fuse and native/iofault built.
 */

export interface IofaultBenchOptions {
  /** Inject+recover pairs through the agent, and bare helper start/stop pairs (default 30). */
  rounds?: number
  /** Unmeasured pairs first (default 3). */
  warmupRounds?: number
  /** Repetitions of each workload per side (default 3). */
  repetitions?: number
  progress?: (line: string) => void
}

interface SideFigures {
  writeMiBs: number
  readMiBs: number
  pread4k: LatencySummary
  openClose: LatencySummary
  stat: LatencySummary
}

export interface IofaultBenchResult {
  benchmark: 'iofault'
  machine: MachineInfo
  fileMiB: number
  repetitions: number
  direct: SideFigures
  cached: SideFigures
  directIo: SideFigures
  inject: { rounds: number; agentPair: LatencySummary; bareHelperPair: LatencySummary; medianRatio: number }
}

const helper = join(repoRoot, 'native', 'iofault', 'faultline-iofault')
const FILE_MIB = 64
const CHUNK = 128 * 1024
const OPS = 2000

function writeRead(dir: string): { writeMiBs: number; readMiBs: number } {
  const path = join(dir, 'big.bin')
  const chunk = Buffer.alloc(CHUNK, 0x5a)
  let fd = openSync(path, 'w')
  let t0 = performance.now()
  for (let off = 0; off < FILE_MIB * 1024 * 1024; off += CHUNK) writeSync(fd, chunk, 0, CHUNK, off)
  fsyncSync(fd)
  const writeMs = performance.now() - t0
  closeSync(fd)
  fd = openSync(path, 'r')
  t0 = performance.now()
  for (let off = 0; ; off += CHUNK) if (readSync(fd, chunk, 0, CHUNK, off) === 0) break
  const readMs = performance.now() - t0
  closeSync(fd)
  rmSync(path)
  return { writeMiBs: (FILE_MIB * 1000) / writeMs, readMiBs: (FILE_MIB * 1000) / readMs }
}

function perOp(dir: string): { pread4k: number[]; openClose: number[]; stat: number[] } {
  const path = join(dir, 'small.bin')
  const buf = Buffer.alloc(4096)
  const pread4k: number[] = []
  const openClose: number[] = []
  const stat: number[] = []
  const fd = openSync(path, 'r')
  const blocks = fstatSync(fd).size / 4096
  for (let i = 0; i < OPS; i++) {
    const t0 = performance.now()
    readSync(fd, buf, 0, 4096, Math.floor(Math.random() * blocks) * 4096)
    pread4k.push(performance.now() - t0)
  }
  closeSync(fd)
  for (let i = 0; i < OPS; i++) {
    const t0 = performance.now()
    closeSync(openSync(path, 'r'))
    openClose.push(performance.now() - t0)
  }
  for (let i = 0; i < OPS; i++) {
    const t0 = performance.now()
    statSync(path)
    stat.push(performance.now() - t0)
  }
  return { pread4k, openClose, stat }
}

interface Mounted {
  pid: number
  exited: Promise<void>
}

/** Starts the helper over dir with no rule; resolves once it answered FUSE_INIT ("ready"). */
function mountHelper(dir: string, name: string, directIo: boolean, statsPath: string): Promise<Mounted> {
  const fuse = openSync('/dev/fuse', 'r+')
  const stats = openSync(statsPath, 'w')
  const deadline = String(Math.ceil(Date.now() / 1000) + 3600)
  const child = spawn(helper, ['--mount', dir, '--fsname', `faultline-iofault-${name}`, '--deadline', deadline, '--attr-timeout-ms', '1000', '--direct-io', directIo ? '1' : '0'], {
    stdio: ['ignore', 'pipe', 'pipe', fuse, stats],
  })
  closeSync(fuse)
  closeSync(stats)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  return new Promise((resolve, reject) => {
    let out = ''
    let err = ''
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()))
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString()
      if (out.includes('ready\n')) resolve({ pid: child.pid!, exited })
    })
    child.once('exit', (code) => reject(new Error(`faultline-iofault exited ${code}: ${err}`)))
  })
}

async function unmountHelper(m: Mounted): Promise<void> {
  process.kill(m.pid, 'SIGTERM')
  await m.exited
}

function mergeSides(samples: { writeMiBs: number; readMiBs: number; ops: ReturnType<typeof perOp> }[]): SideFigures {
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  return {
    writeMiBs: median(samples.map((s) => s.writeMiBs)),
    readMiBs: median(samples.map((s) => s.readMiBs)),
    pread4k: summarise(samples.flatMap((s) => s.ops.pread4k)),
    openClose: summarise(samples.flatMap((s) => s.ops.openClose)),
    stat: summarise(samples.flatMap((s) => s.ops.stat)),
  }
}

export async function runIofaultBench(opts: IofaultBenchOptions = {}): Promise<IofaultBenchResult> {
  const rounds = opts.rounds ?? 30
  const warmupRounds = opts.warmupRounds ?? 3
  const repetitions = opts.repetitions ?? 3
  const progress = opts.progress ?? stderrProgress
  return withCleanup(async (cleanup) => {
    const base = mkdtempSync(join(tmpdir(), 'fl-bench-io-'))
    cleanup.add('remove the bench directory', () => rmSync(base, { recursive: true, force: true }))
    const dir = join(base, 'data')
    mkdirSync(dir)
    const small = openSync(join(dir, 'small.bin'), 'w')
    writeSync(small, Buffer.alloc(16 * 1024 * 1024, 1))
    closeSync(small)
    let mounted: Mounted | undefined
    cleanup.add('stop the helper', () => (mounted ? unmountHelper(mounted) : undefined))

    const sides = { direct: [] as Parameters<typeof mergeSides>[0], cached: [] as Parameters<typeof mergeSides>[0], directIo: [] as Parameters<typeof mergeSides>[0] }
    for (let r = 0; r < repetitions; r++) {
      for (const side of ['direct', 'cached', 'directIo'] as const) {
        progress(`repetition ${r + 1}/${repetitions}: ${side}`)
        if (side !== 'direct') mounted = await mountHelper(dir, `bench-${process.pid}`, side === 'directIo', join(base, 'stats'))
        const wr = writeRead(dir)
        sides[side].push({ ...wr, ops: perOp(dir) })
        if (mounted) {
          await unmountHelper(mounted)
          mounted = undefined
        }
      }
    }

    progress(`inject + recover of io-latency through the agent: ${warmupRounds} + ${rounds} pairs`)
    const stateDir = join(base, 'state')
    const agent = await startAgent(stateDir)
    cleanup.add('stop the agent', () => stopAgent(agent))
    const { pool, call } = agentClient(agent)
    cleanup.add('close the HTTP pool', () => pool.destroy().catch(() => undefined))
    const body = JSON.stringify({ fault: { kind: 'io-latency', path: dir, latency: '1ms', operations: ['read'] }, target: { type: 'host' }, duration: '60s' })
    const agentPairs: number[] = []
    const barePairs: number[] = []
    for (let i = 0; i < warmupRounds + rounds; i++) {
      const t0 = performance.now()
      const created = JSON.parse(await call('POST', '/v1/injections', 201, body)) as { id: string; status: string }
      const recovered = JSON.parse(await call('DELETE', `/v1/injections/${created.id}`, 200)) as { status: string }
      const agentMs = performance.now() - t0
      if (created.status !== 'active' || recovered.status !== 'recovered') throw new Error(`io-latency ${created.id}: ${created.status} -> ${recovered.status}`)
      const t1 = performance.now()
      mounted = await mountHelper(dir, `bench-${process.pid}`, true, join(base, 'stats'))
      await unmountHelper(mounted)
      mounted = undefined
      const bareMs = performance.now() - t1
      if (i >= warmupRounds) {
        agentPairs.push(agentMs)
        barePairs.push(bareMs)
      }
    }
    const agentPair = summarise(agentPairs)
    const bareHelperPair = summarise(barePairs)
    if (readFileSync('/proc/self/mountinfo', 'utf8').includes('faultline-iofault-')) progress('warning: a faultline-iofault mount is still listed')
    return {
      benchmark: 'iofault',
      machine: machineInfo(),
      fileMiB: FILE_MIB,
      repetitions,
      direct: mergeSides(sides.direct),
      cached: mergeSides(sides.cached),
      directIo: mergeSides(sides.directIo),
      inject: { rounds, agentPair, bareHelperPair, medianRatio: agentPair.medianUs / bareHelperPair.medianUs },
    }
  })
}

export function formatIofaultResult(r: IofaultBenchResult): string {
  const mibs = (x: number) => `${x.toFixed(0)} MiB/s`
  const row = (what: string, f: (s: SideFigures) => number, fmt: (x: number) => string, higherIsBetter: boolean) => [
    what,
    fmt(f(r.direct)),
    `${fmt(f(r.cached))} (${ratio(higherIsBetter ? f(r.direct) : f(r.cached), higherIsBetter ? f(r.cached) : f(r.direct))}×)`,
    `${fmt(f(r.directIo))} (${ratio(higherIsBetter ? f(r.direct) : f(r.directIo), higherIsBetter ? f(r.directIo) : f(r.direct))}×)`,
  ]
  return [
    `iofault: FUSE pass-through with no rule vs the same directory directly (${r.repetitions} alternating repetitions, ${r.fileMiB} MiB file, 128 KiB calls, 2000 ops each)`,
    formatMachine(r.machine),
    table(
      ['workload', 'direct', 'through the mount, cached (cost ×)', 'through the mount, direct_io (cost ×)'],
      [
        row('sequential write + fsync', (s) => s.writeMiBs, mibs, true),
        row('sequential read', (s) => s.readMiBs, mibs, true),
        row('4 KiB pread, median', (s) => s.pread4k.medianUs, us, false),
        row('4 KiB pread, p99', (s) => s.pread4k.p99Us, us, false),
        row('open + close, median', (s) => s.openClose.medianUs, us, false),
        row('stat, median', (s) => s.stat.medianUs, us, false),
      ],
    ),
    '',
    table(
      ['inject + recover', 'median', 'p99'],
      [
        ['io-latency through the agent (POST + DELETE)', us(r.inject.agentPair.medianUs), us(r.inject.agentPair.p99Us)],
        ['bare helper: start, FUSE_INIT, SIGTERM, exit', us(r.inject.bareHelperPair.medianUs), us(r.inject.bareHelperPair.p99Us)],
        ['ratio (median)', `${ratio(r.inject.agentPair.medianUs, r.inject.bareHelperPair.medianUs)}×`, ''],
      ],
    ),
  ].join('\n')
}
