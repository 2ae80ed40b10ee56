import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
// How the agent finds cgroup mounts: the benchmark builds its target cgroups the same way.
import { readCgroupMounts } from '../agent/targets/cgroupfs.js'
import {
  agentClient,
  formatMachine,
  machineInfo,
  sleep,
  startAgent,
  stderrProgress,
  stopAgent,
  table,
  track,
  withCleanup,
  type MachineInfo,
  type Started,
} from './lib.js'

/**
 * Fidelity of stress-cpu and stress-memory: requested vs measured from the target's own cgroup,
 * through the real agent with each engine (the built-in burner, and stress-ng where installed),
 * against stress-ng run directly in the same cgroup in the same run as the baseline
 * (`stress-ng --cpu 1 --cpu-load P`; `stress-ng --vm 1 --vm-bytes N`, its defaults).
 *
 * The target is a `sleep` in fresh cgroups fl-bench-<pid>-<rand> (every v1 hierarchy and v2). Its
 * cpu cgroup gets cpu.shares 262144 (v2 cpu.weight 10000), so other work on the machine does not
 * starve what is measured: the figures show the stressor's precision, not the neighbours' load;
 * and a quota of 1.2 CPUs (cpu.cfs_quota_us, v2 cpu.max), so it never takes more than that from
 * the machine (one worker uses at most one CPU: the quota does not cap a level measured here).
 * Needs root.
 */

export interface StressBenchOptions {
  /** Rounds per level and method (default 3). */
  rounds?: number
  cpuLevels?: number[]
  memoryLevelsMiB?: number[]
  /** CPU: measuring window per round (default 5000 ms), after 1000 ms of warm-up. */
  cpuWindowMs?: number
  /** Memory: sampling window per round (default 10000 ms, a sample every 250 ms). */
  memoryWindowMs?: number
  progress?: (line: string) => void
}

export type StressMethod = 'agent builtin' | 'agent stress-ng' | 'stress-ng direct'

export interface Spread {
  n: number
  mean: number
  min: number
  max: number
}

export interface CpuLevelResult {
  requestedPercent: number
  /** Percent of one CPU used by the target's cgroup (cpuacct.usage) over each window. */
  measured: Partial<Record<StressMethod, Spread>>
}

export interface MemoryLevelResult {
  requestedMiB: number
  /** Rise of the target cgroup's memory.usage_in_bytes, MiB: mean of each round's samples, and the lowest and highest sample of all rounds. */
  measured: Partial<Record<StressMethod, Spread>>
}

export interface StressBenchResult {
  benchmark: 'fidelity/stress'
  machine: MachineInfo
  stressNgVersion: string | undefined
  rounds: number
  cpuWindowMs: number
  memoryWindowMs: number
  loadAverage: { start: number[]; end: number[] }
  cpu: CpuLevelResult[]
  memory: MemoryLevelResult[]
}

const MiB = 1024 * 1024
/** The target cgroup's CPU quota: 1.2 CPUs per 100 ms period. */
const QUOTA_US = 120_000

function spread(values: number[]): Spread {
  const r = (x: number) => Math.round(x * 100) / 100
  return { n: values.length, mean: r(values.reduce((a, b) => a + b, 0) / values.length), min: r(Math.min(...values)), max: r(Math.max(...values)) }
}

interface BenchCgroup {
  name: string
  dirs: string[]
  dir(controller: string): string
}

/** Fresh cgroups in every hierarchy; what is left in them is killed when they are removed. */
function makeCgroup(): BenchCgroup {
  const mounts = readCgroupMounts('/proc')
  const name = `fl-bench-${process.pid}-${randomBytes(3).toString('hex')}`
  const mountPoints = [...new Set(mounts.v1.values()), ...(mounts.v2 ? [mounts.v2] : [])]
  const dirs: string[] = []
  for (const m of mountPoints) {
    mkdirSync(join(m, name))
    dirs.push(join(m, name))
  }
  const cpuset = mounts.v1.get('cpuset')
  if (cpuset) for (const f of ['cpuset.cpus', 'cpuset.mems']) writeFileSync(join(cpuset, name, f), readFileSync(join(cpuset, f)))
  const cpu = mounts.v1.get('cpu')
  if (cpu) {
    writeFileSync(join(cpu, name, 'cpu.shares'), '262144')
    writeFileSync(join(cpu, name, 'cpu.cfs_period_us'), '100000')
    writeFileSync(join(cpu, name, 'cpu.cfs_quota_us'), String(QUOTA_US))
  } else if (mounts.v2) {
    try {
      writeFileSync(join(mounts.v2, name, 'cpu.weight'), '10000')
      writeFileSync(join(mounts.v2, name, 'cpu.max'), `${QUOTA_US} 100000`)
    } catch (err) {
      throw new Error(`cannot bound the benchmark's cgroup (is the cpu controller enabled in ${mounts.v2}/cgroup.subtree_control?): ${(err as Error).message}`)
    }
  }
  return {
    name,
    dirs,
    dir: (controller) => join(controller === 'unified' ? mounts.v2! : (mounts.v1.get(controller) ?? mounts.v2!), name),
  }
}

async function removeCgroup(cg: BenchCgroup): Promise<void> {
  for (let round = 0; round < 200; round++) {
    const pids = cg.dirs.flatMap((d) => {
      try {
        return readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number)
      } catch {
        return []
      }
    })
    if (pids.length === 0) break
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        /* gone */
      }
    }
    await sleep(20)
  }
  for (const d of cg.dirs) {
    for (let i = 0; i < 100; i++) {
      try {
        rmdirSync(d)
        break
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') break
        await sleep(20)
      }
    }
  }
}

/** cpuacct.usage (v1) or cpu.stat usage_usec (v2), in ns. */
function cpuUsageNs(cg: BenchCgroup): number {
  try {
    return Number(readFileSync(join(cg.dir('cpuacct'), 'cpuacct.usage'), 'utf8'))
  } catch {
    return Number(/^usage_usec (\d+)$/m.exec(readFileSync(join(cg.dir('unified'), 'cpu.stat'), 'utf8'))![1]) * 1000
  }
}

function memoryUsage(cg: BenchCgroup): number {
  try {
    return Number(readFileSync(join(cg.dir('memory'), 'memory.usage_in_bytes'), 'utf8'))
  } catch {
    return Number(readFileSync(join(cg.dir('unified'), 'memory.current'), 'utf8'))
  }
}

/** Percent of one CPU the cgroup used over windowMs. */
async function cpuPercent(cg: BenchCgroup, windowMs: number): Promise<number> {
  const t0 = process.hrtime.bigint()
  const u0 = cpuUsageNs(cg)
  await sleep(windowMs)
  const u1 = cpuUsageNs(cg)
  const t1 = process.hrtime.bigint()
  return ((u1 - u0) / Number(t1 - t0)) * 100
}

/** The baseline: stress-ng started directly in the cgroup (a shell moves itself in, then execs it). */
function startStressNgDirect(cg: BenchCgroup, args: string[]): Started {
  const child = spawn('sh', ['-c', 'for f in $FL_PROCS; do echo $$ > "$f"; done; exec stress-ng "$@"', 'sh', ...args], {
    stdio: 'ignore',
    detached: true,
    env: { ...process.env, FL_PROCS: cg.dirs.map((d) => join(d, 'cgroup.procs')).join(' ') },
  })
  return track(child, 'stress-ng')
}

async function stopDirect(s: Started): Promise<void> {
  // SIGTERM to the group: stress-ng stops its workers and exits
  try {
    process.kill(-s.pid, 'SIGTERM')
  } catch {
    /* gone */
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-s.pid, 'SIGKILL')
    } catch {
      /* gone */
    }
  }, 5_000)
  await s.exited
  clearTimeout(timer)
}

export async function runStressBench(opts: StressBenchOptions = {}): Promise<StressBenchResult> {
  const rounds = opts.rounds ?? 3
  const cpuLevels = opts.cpuLevels ?? [25, 50, 100]
  const memoryLevels = opts.memoryLevelsMiB ?? [64, 256]
  const cpuWindowMs = opts.cpuWindowMs ?? 5_000
  const memoryWindowMs = opts.memoryWindowMs ?? 10_000
  const progress = opts.progress ?? stderrProgress
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`rounds must be a positive integer, not ${rounds}`)
  const ngVersion = spawnSync('stress-ng', ['--version'], { encoding: 'utf8' })
  const stressNgVersion = ngVersion.status === 0 ? ngVersion.stdout.trim() : undefined
  if (!stressNgVersion) progress('stress-ng is not installed: only the built-in burner is measured, without the baseline')
  const loadStart = loadavg()

  return withCleanup(async (cleanup) => {
    const stateDir = mkdtempSync(join(tmpdir(), 'fl-bench-'))
    cleanup.add('remove the state directory', () => rmSync(stateDir, { recursive: true, force: true }))
    const cg = makeCgroup()
    cleanup.add(`remove cgroups ${cg.name}`, () => removeCgroup(cg))
    const sleeper = track(spawn('sleep', ['3600'], { stdio: 'ignore' }), 'sleep')
    cleanup.add('stop the target', () => sleeper.child.kill('SIGKILL'))
    for (const d of cg.dirs) writeFileSync(join(d, 'cgroup.procs'), String(sleeper.pid))

    progress(`starting the agent (state dir ${stateDir}); target: sleep ${sleeper.pid} in cgroups ${cg.name}`)
    const agent = await startAgent(stateDir)
    const stopTheAgent = cleanup.add('stop the agent', () => stopAgent(agent))
    const { pool, call } = agentClient(agent)
    cleanup.add('close the HTTP pool', () => pool.destroy().catch(() => undefined))
    const target = { type: 'process', pid: sleeper.pid }

    const methods: StressMethod[] = stressNgVersion ? ['agent builtin', 'agent stress-ng', 'stress-ng direct'] : ['agent builtin']

    /** Starts one method; resolves with its stop function. */
    async function start(method: StressMethod, fault: Record<string, unknown>, directArgs: string[]): Promise<() => Promise<void>> {
      if (method === 'stress-ng direct') {
        const s = startStressNgDirect(cg, directArgs)
        return () => stopDirect(s)
      }
      const engine = method === 'agent builtin' ? 'builtin' : 'stress-ng'
      const created = JSON.parse(await call('POST', '/v1/injections', 201, JSON.stringify({ fault: { ...fault, engine }, target, duration: '10m' }))) as { id: string; status: string }
      if (created.status !== 'active') throw new Error(`injection ${created.id} is ${created.status}`)
      return async () => {
        await call('DELETE', `/v1/injections/${encodeURIComponent(created.id)}`, 200)
      }
    }

    const cpu: CpuLevelResult[] = []
    for (const load of cpuLevels) {
      const samples: Partial<Record<StressMethod, number[]>> = {}
      for (let round = 0; round < rounds; round++) {
        // the order rotates each round, so drift hits every method alike
        const order = methods.map((_, i) => methods[(i + round) % methods.length]!)
        for (const method of order) {
          progress(`stress-cpu ${load} %: ${method}, round ${round + 1} of ${rounds}`)
          const stop = await start(method, { kind: 'stress-cpu', load }, ['--cpu', '1', '--cpu-load', String(load), '--timeout', String(Math.ceil(cpuWindowMs / 1000) + 30)])
          try {
            await sleep(1000)
            ;(samples[method] ??= []).push(await cpuPercent(cg, cpuWindowMs))
          } finally {
            await stop()
          }
          await sleep(500)
        }
      }
      cpu.push({ requestedPercent: load, measured: Object.fromEntries(Object.entries(samples).map(([m, v]) => [m, spread(v)])) })
    }

    const memory: MemoryLevelResult[] = []
    for (const mib of memoryLevels) {
      const means: Partial<Record<StressMethod, number[]>> = {}
      const all: Partial<Record<StressMethod, number[]>> = {}
      for (let round = 0; round < rounds; round++) {
        const order = methods.map((_, i) => methods[(i + round) % methods.length]!)
        for (const method of order) {
          progress(`stress-memory ${mib} MiB: ${method}, round ${round + 1} of ${rounds}`)
          const before = memoryUsage(cg)
          const stop = await start(method, { kind: 'stress-memory', size: `${mib}MiB` }, ['--vm', '1', '--vm-bytes', String(mib * MiB), '--timeout', String(Math.ceil(memoryWindowMs / 1000) + 30)])
          try {
            // settle: until 95 % is charged (at most 5 s), then half a second more
            for (let waited = 0; waited < 5_000 && memoryUsage(cg) - before < 0.95 * mib * MiB; waited += 50) await sleep(50)
            await sleep(500)
            const round: number[] = []
            for (let t = 0; t < memoryWindowMs; t += 250) {
              round.push((memoryUsage(cg) - before) / MiB)
              await sleep(250)
            }
            ;(means[method] ??= []).push(round.reduce((a, b) => a + b, 0) / round.length)
            ;(all[method] ??= []).push(...round)
          } finally {
            await stop()
          }
          for (let waited = 0; waited < 5_000 && memoryUsage(cg) - before > 2 * MiB; waited += 50) await sleep(50)
        }
      }
      const measured: MemoryLevelResult['measured'] = {}
      for (const m of Object.keys(means) as StressMethod[]) {
        const s = spread(means[m]!)
        measured[m] = { ...s, min: spread(all[m]!).min, max: spread(all[m]!).max }
      }
      memory.push({ requestedMiB: mib, measured })
    }

    if (agent.warnings.length > 0) progress(`the agent logged ${agent.warnings.length} warnings, e.g. ${agent.warnings[0]}`)
    await stopTheAgent()
    return {
      benchmark: 'fidelity/stress',
      machine: machineInfo(),
      stressNgVersion,
      rounds,
      cpuWindowMs,
      memoryWindowMs,
      loadAverage: { start: loadStart.map((x) => Math.round(x * 100) / 100), end: loadavg().map((x) => Math.round(x * 100) / 100) },
      cpu,
      memory,
    }
  })
}

// ---- output --------------------------------------------------------------------------------

const methodOrder: StressMethod[] = ['agent builtin', 'agent stress-ng', 'stress-ng direct']

export function formatStressResult(r: StressBenchResult): string {
  const cpuRows = r.cpu.flatMap((l) =>
    methodOrder
      .filter((m) => l.measured[m])
      .map((m) => {
        const s = l.measured[m]!
        return [`${l.requestedPercent} %`, m, `${s.mean.toFixed(2)} %`, `${(s.mean - l.requestedPercent >= 0 ? '+' : '') + (s.mean - l.requestedPercent).toFixed(2)}`, `${s.min.toFixed(2)}–${s.max.toFixed(2)} %`]
      }),
  )
  const memRows = r.memory.flatMap((l) =>
    methodOrder
      .filter((m) => l.measured[m])
      .map((m) => {
        const s = l.measured[m]!
        return [`${l.requestedMiB} MiB`, m, `${s.mean.toFixed(1)} MiB`, `${(((s.mean - l.requestedMiB) / l.requestedMiB) * 100).toFixed(1)} %`, `${s.min.toFixed(1)}–${s.max.toFixed(1)} MiB`]
      }),
  )
  return [
    `stress fidelity, measured from the target's cgroup (${r.rounds} rounds per level and method)`,
    formatMachine(r.machine),
    `stress-ng: ${r.stressNgVersion ?? 'not installed'}; load average at start ${r.loadAverage.start.join(' ')}, at end ${r.loadAverage.end.join(' ')}`,
    '',
    `stress-cpu: percent of one CPU over ${r.cpuWindowMs / 1000} s windows (cpuacct.usage)`,
    table(['requested', 'method', 'measured (mean)', 'error (points)', 'range of rounds'], cpuRows),
    '',
    `stress-memory: rise of memory.usage_in_bytes, sampled every 250 ms over ${r.memoryWindowMs / 1000} s`,
    table(['requested', 'method', 'measured (mean)', 'error', 'lowest–highest sample'], memRows),
  ].join('\n')
}
