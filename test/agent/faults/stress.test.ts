// stress-cpu, stress-memory and stress-io on the real kernel: each test puts a `sleep` target
// into fresh cgroups of its own (fl-test-<pid>-<rand> in every v1 hierarchy and in v2, removed
// at teardown, also on failure), injects, and measures the effect from the target's cgroups
// (cpuacct.usage, memory.usage_in_bytes, blkio.throttle.io_service_bytes). Then recovery, and
// kill -9 of the agent with every kind active: no stressor may be left alive. Needs root; the
// stress-ng cases need stress-ng (Debian package stress-ng; the built-in burner needs nothing
// but `npm run build`), the IO case losetup and mkfs.ext4, the container case dockerd with the
// test image (scripts/test-runtimes.sh start).
//
// Bounded burning on a shared machine: tap runs test files in parallel on a 2-CPU machine, and
// this file must neither starve them nor be starved by them. Every test cgroup gets a CPU quota
// (v1 cpu.cfs_quota_us, v2 cpu.max): 0.3 CPU by default, whatever the stressors in it try to
// burn. Only the CPU measurements get more: a quota of 1.2 CPUs (one worker can use at most one
// CPU, so the quota never hides an over-burn up to 120 %) with cpu.shares 262144 (v2 cpu.weight
// 10000), so the scheduler gives the stressor the CPU it asks for and the measurement shows the
// stressor's precision, not the neighbours' load; the rest of the machine keeps 0.8 CPU.
// Durations are short and sizes small: the whole file runs in about two minutes.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { MARKER_VARIABLE, stressHelperPath, stressorNice } from '../../../agent/faults/shared/stress.js'
import { parseSize } from '../../../protocol/units.js'
import { memoryRequest } from '../../../agent/faults/stress-memory/index.js'
import { readCgroupMounts } from '../../../agent/targets/cgroupfs.js'
import { parseProcCgroup } from '../../../agent/targets/containers/cgroups.js'
import type { Injection } from '../../../protocol/injection.js'
import { http, sleep, sleeper, startAgentProcess, testAgent, tmpDir, waitFor, type TestLike } from '../../helpers.js'

t.setTimeout(600_000)

const root = process.getuid?.() === 0
const helper = stressHelperPath()
const mounts = readCgroupMounts('/proc')
const has = (program: string) => spawnSync('sh', ['-c', 'command -v "$1"', 'sh', program]).status === 0
const baseSkip = !root ? 'needs root' : !helper ? 'native/stress is not built (npm run build)' : mounts.v1.size === 0 && !mounts.v2 ? 'no cgroups mounted' : false
// Test options are made fresh for every test: tap writes into the object it is given
// (a --grep or --only filter sets `skip` on it), which must not leak into the next test.
const opts = () => ({ skip: baseSkip })
const stressNg = has('stress-ng')
const ngSkip = baseSkip || (stressNg ? false : 'stress-ng is not installed (Debian package stress-ng)')
const ngOpts = () => ({ skip: ngSkip })
const MiB = 1024 * 1024

// ---- fixtures -----------------------------------------------------------------------------

interface TestCgroup {
  name: string
  /** The test cgroup's directory in the hierarchy holding `controller` ("unified" for v2). */
  dir(controller: string): string
  add(pid: number): void
  pids(): number[]
}

/** How much CPU a test cgroup may burn (quota in CPUs) and whether it wins the CPU when contended. */
interface CpuBound {
  cpus: number
  favoured?: boolean
}
const DEFAULT_BOUND: CpuBound = { cpus: 0.3 }
/** For the CPU measurements: see the header. */
const MEASURE_BOUND: CpuBound = { cpus: 1.2, favoured: true }

/** Fresh cgroups fl-test-<pid>-<rand> in every mounted hierarchy; everything in them is killed and they are removed at teardown. */
function testCgroup(t: TestLike, bound: CpuBound = DEFAULT_BOUND): TestCgroup {
  const name = `fl-test-${process.pid}-${randomBytes(3).toString('hex')}`
  const mountPoints = [...new Set([...mounts.v1.values()]), ...(mounts.v2 ? [mounts.v2] : [])]
  const dirs = mountPoints.map((m) => join(m, name))
  t.teardown(async () => {
    for (let round = 0; round < 100; round++) {
      const left = dirs.flatMap((d) => readPids(d))
      if (left.length === 0) break
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {
          /* gone */
        }
      }
      await sleep(20)
    }
    for (const d of dirs) {
      for (let i = 0; i < 100 && existsSync(d); i++) {
        try {
          rmdirSync(d)
        } catch {
          await sleep(20)
        }
      }
    }
  })
  for (const d of dirs) mkdirSync(d)
  const cpuset = mounts.v1.get('cpuset')
  if (cpuset) {
    for (const file of ['cpuset.cpus', 'cpuset.mems']) writeFileSync(join(cpuset, name, file), readFileSync(join(cpuset, file)))
  }
  // see the header: bounded, and (for measurements) not at the mercy of the neighbours' load
  const quotaUs = String(Math.round(bound.cpus * 100_000))
  const cpu = mounts.v1.get('cpu')
  if (cpu) {
    writeFileSync(join(cpu, name, 'cpu.cfs_period_us'), '100000')
    writeFileSync(join(cpu, name, 'cpu.cfs_quota_us'), quotaUs)
    if (bound.favoured) writeFileSync(join(cpu, name, 'cpu.shares'), '262144')
  } else if (mounts.v2 && existsSync(join(mounts.v2, name, 'cpu.max'))) {
    writeFileSync(join(mounts.v2, name, 'cpu.max'), `${quotaUs} 100000`)
    if (bound.favoured) writeFileSync(join(mounts.v2, name, 'cpu.weight'), '10000')
  } else {
    throw new Error('no cpu controller to bound the test cgroup with: refusing to run stressors unbounded')
  }
  const dir = (controller: string) => join(controller === 'unified' ? mounts.v2! : (mounts.v1.get(controller) ?? mounts.v2!), name)
  return {
    name,
    dir,
    add: (pid) => {
      for (const d of dirs) writeFileSync(join(d, 'cgroup.procs'), String(pid))
    },
    pids: () => [...new Set(dirs.flatMap((d) => readPids(d)))].sort((a, b) => a - b),
  }
}

function readPids(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number)
  } catch {
    return []
  }
}

/** A `sleep` in fresh cgroups of its own: the target. */
function target(t: TestLike, bound?: CpuBound): { pid: number; cg: TestCgroup } {
  const cg = testCgroup(t, bound)
  const s = sleeper(t)
  cg.add(s.pid)
  return { pid: s.pid, cg }
}

const cgroupOf = (pid: number) => parseProcCgroup(readFileSync(`/proc/${pid}/cgroup`, 'utf8'))

/**
 * Live processes (not zombies) of this injection: those carrying its marker in their environment,
 * and every process in the session of one of them (stress-ng's workers overwrite their environment
 * area to rename themselves; the gate starts each stressor in a session of its own).
 */
function marked(id: string): number[] {
  const entry = `${MARKER_VARIABLE}=${id}`
  const procs: { pid: number; session: number; marked: boolean }[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (/^[ZX]$/.test(fields[0]!)) continue
      procs.push({ pid: Number(name), session: Number(fields[3]), marked: readFileSync(`/proc/${name}/environ`, 'utf8').split('\0').includes(entry) })
    } catch {
      /* gone */
    }
  }
  const sessions = new Set(procs.filter((p) => p.marked).map((p) => p.pid))
  return procs.filter((p) => p.marked || sessions.has(p.session)).map((p) => p.pid)
}

/** utime + stime of processes, in nanoseconds. */
function cpuTimeNs(pids: number[]): number {
  const tick = 1e9 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
  let sum = 0
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      sum += (Number(fields[14 - 3]) + Number(fields[15 - 3])) * tick
    } catch {
      /* exited */
    }
  }
  return sum
}

/** Percent of one CPU used by a cgroup over windowMs (cpuacct.usage, or v2 cpu.stat). */
async function cpuPercent(cg: TestCgroup | string, windowMs: number): Promise<number> {
  const cpuacct = typeof cg === 'string' ? cg : mounts.v1.has('cpuacct') ? cg.dir('cpuacct') : cg.dir('unified')
  const read = () =>
    existsSync(join(cpuacct, 'cpuacct.usage'))
      ? Number(readFileSync(join(cpuacct, 'cpuacct.usage'), 'utf8'))
      : Number(/^usage_usec (\d+)$/m.exec(readFileSync(join(cpuacct, 'cpu.stat'), 'utf8'))![1]) * 1000
  const t0 = process.hrtime.bigint()
  const u0 = read()
  await sleep(windowMs)
  const u1 = read()
  const t1 = process.hrtime.bigint()
  return ((u1 - u0) / Number(t1 - t0)) * 100
}

// the memory controller's files: v1, or v2 where no v1 memory hierarchy is mounted
const v1Memory = mounts.v1.has('memory')
const memFile = { usage: v1Memory ? 'memory.usage_in_bytes' : 'memory.current', limit: v1Memory ? 'memory.limit_in_bytes' : 'memory.max', oom: v1Memory ? 'memory.oom_control' : 'memory.events' }
const memoryUsage = (cg: TestCgroup) => Number(readFileSync(join(cg.dir('memory'), memFile.usage), 'utf8'))

type Agent = Awaited<ReturnType<typeof testAgent>>

let sharedAgent: Promise<Agent> | undefined
/**
 * One in-process agent for the whole file (building one takes seconds on a busy machine). Each
 * test recovers its injections; closing it at the end of the file recovers whatever a failed
 * test left (its stressors are killed by the test's cgroup teardown before that).
 */
function agent(): Promise<Agent> {
  sharedAgent ??= testAgent(t)
  return sharedAgent
}

/** The stress plan fields the tests read. */
const planOf = (inj: Injection) => inj.plan as Injection['plan'] & { engine: string; bytes?: number; limitBytes?: number; limitSource?: string }

async function inject(app: Agent, fault: Record<string, unknown>, targetSelector: Record<string, unknown>, duration = '5m'): Promise<Injection> {
  const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault, target: targetSelector, duration } })
  if (res.statusCode !== 201) throw new Error(`${res.statusCode}: ${res.body}`)
  return res.json<Injection>()
}

async function recover(app: Agent, id: string): Promise<Injection> {
  const res = await app.inject({ method: 'DELETE', url: `/v1/injections/${id}` })
  if (res.statusCode !== 200) throw new Error(`${res.statusCode}: ${res.body}`)
  return res.json<Injection>()
}

/** The injection's stressors are in exactly the target's cgroups, every hierarchy. */
function checkPlacement(t: Test, id: string, targetPid: number): number[] {
  const stressors = marked(id)
  t.ok(stressors.length > 0, `stressors running: ${stressors.join(', ')}`)
  const want = cgroupOf(targetPid)
  for (const pid of stressors) t.same(cgroupOf(pid), want, `stressor ${pid} is in every cgroup of the target`)
  for (const pid of stressors) t.equal(readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim(), '1000', `stressor ${pid} has oom_score_adj 1000`)
  for (const pid of stressors) t.equal(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[16], '0', `stressor ${pid} runs at nice 0 (its cgroup is not the agent's)`)
  return stressors
}

function noStressorLeft(t: Test, id: string, cg?: TestCgroup, targetPid?: number): void {
  t.same(marked(id), [], 'no process of the injection is alive')
  if (cg) t.same(cg.pids(), targetPid ? [targetPid] : [], "only the target is left in the target's cgroups")
}

// ---- the gate -------------------------------------------------------------------------------

t.test('the gate: a stressor runs its first instruction in the cgroups it was put in; EOF never runs it', opts(), async (t) => {
  const cg = testCgroup(t)
  const gated = spawn(helper!, ['gate', '/bin/cat', '/proc/self/cgroup'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  gated.stdout.on('data', (c: Buffer) => (out += c.toString()))
  const exited = new Promise<number | null>((r) => gated.on('exit', (code) => r(code)))
  await waitFor('the gate to block', () => readFileSync(`/proc/${gated.pid}/stat`, 'utf8').includes(') S '))
  cg.add(gated.pid!)
  gated.stdin.end('g')
  t.equal(await exited, 0)
  const seen = parseProcCgroup(out)
  for (const [hierarchy, path] of Object.entries(seen)) t.equal(path, `/${cg.name}`, `cat saw itself in ${hierarchy} /${cg.name} from its start`)

  const abandoned = spawn(helper!, ['gate', '/bin/echo', 'ran'], { stdio: ['pipe', 'pipe', 'ignore'] })
  let said = ''
  abandoned.stdout.on('data', (c: Buffer) => (said += c.toString()))
  const code = await new Promise<number | null>((r) => {
    abandoned.on('exit', (c) => r(c))
    abandoned.stdin.destroy()
  })
  t.equal(code, 125, 'EOF (the agent went away): exit 125')
  t.equal(said, '', 'and the program never ran')
})

t.test('sizes and percentages', async (t) => {
  t.equal(parseSize('128MiB', 'size'), 128 * MiB)
  t.equal(parseSize('128M', 'size'), 128 * MiB)
  t.equal(parseSize('1GiB', 'size'), 1024 * MiB)
  t.equal(parseSize('4096', 'size'), 4096)
  // One size grammar for every kind (protocol/units.ts): MB is SI here too, as in disk-fill.
  t.equal(parseSize('128MB', 'size'), 128e6)
  t.throws(() => parseSize('128Mbit', 'size'), /not a size/)
  t.equal(memoryRequest('50%', 256 * MiB), 128 * MiB)
  t.equal(memoryRequest('33.33%', 100 * 4096), 33 * 4096, 'whole pages, rounded down')
})

t.test('nice 19 exactly where the stressors would compete with the agent itself', async (t) => {
  const cg = (hierarchy: string, path: string) => ({ hierarchy, path, dir: `/sys/fs/cgroup/x${path}` })
  const agentAt = { cpu: '/system.slice/faultline.service', cpuacct: '/', unified: '/' }
  t.equal(stressorNice([cg('cpu', '/system.slice/faultline.service')], agentAt).nice, 19, "the agent's own cgroup")
  t.equal(stressorNice([cg('cpu', '/system.slice')], agentAt).nice, 19, 'an ancestor')
  t.equal(stressorNice([cg('cpu', '/')], agentAt).nice, 19, 'the root')
  t.equal(stressorNice([cg('cpu', '/system.slice/faultline')], agentAt).nice, 0, 'a name prefix is no ancestor')
  t.equal(stressorNice([cg('cpu', '/docker/abc')], agentAt).nice, 0, 'a sibling subtree')
  t.equal(stressorNice([cg('cpu', '/system.slice/faultline.service/x')], agentAt).nice, 0, 'below the agent: a weight of its own')
  t.equal(stressorNice([cg('cpuacct', '/'), cg('unified', '/a')], { cpuacct: '/', unified: '/a' }).nice, 19, 'no v1 cpu hierarchy: v2 decides')
  t.equal(stressorNice([cg('cpu,cpuacct', '/a')], { 'cpu,cpuacct': '/b' }).nice, 0, 'combined v1 hierarchy')
})

t.test('dryRun shows the exact argv and every cgroup file written', opts(), async (t) => {
  const app = await agent()
  const { pid, cg } = target(t)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'stress-cpu', load: 40, workers: 2, engine: 'builtin' }, target: { type: 'process', pid }, duration: '1m', dryRun: true },
  })
  t.equal(res.statusCode, 200, res.body)
  const inj = res.json<Injection>()
  const steps = inj.plan.steps
  const execs = steps.filter((s) => s.action === 'exec')
  t.equal(execs.length, 2, 'one exec per worker')
  t.same(execs[0]!.argv, [helper, 'gate', helper, 'cpu', '40', '100000', '<expiresAt in ms since the epoch>'])
  const writes = steps.filter((s) => s.action === 'write').map((s) => s.detail).join('\n')
  for (const hierarchy of Object.keys(cgroupOf(pid))) {
    const mount = hierarchy === 'unified' ? mounts.v2 : mounts.v1.get(hierarchy.split(',')[0]!)
    if (mount) t.match(writes, `<pid> to ${mount}/${cg.name}/cgroup.procs`, `writes the pid to ${hierarchy}`)
  }
  t.match(writes, /1000 to \/proc\/<pid>\/oom_score_adj/)
  t.equal((inj.plan as { nice?: number }).nice, 0, "a target in a cgroup of its own: the stressors run at nice 0")
  t.notOk(steps.some((s) => s.action === 'setpriority'))
  t.same(marked(inj.id), [], 'nothing started')
})

t.test("stressors charged to an ancestor of the agent's cpu cgroup (here the root) run at nice 19", opts(), async (t) => {
  const app = await agent()
  // the target in cgroups of its own, except in the cpu hierarchy: there in the root cgroup,
  // which holds (or is) the cgroup of this process, where the agent under test runs
  const { pid, cg } = target(t)
  const cpuMount = mounts.v1.get('cpu') ?? mounts.v2!
  writeFileSync(join(cpuMount, 'cgroup.procs'), String(pid))
  const inj = await inject(app, { kind: 'stress-cpu', load: 10, engine: 'builtin' }, { type: 'process', pid }, '1m')
  t.equal((inj.plan as { nice?: number }).nice, 19)
  t.match(inj.plan.steps.map((x) => x.detail).join('\n'), /nice 19 so the agent stays responsive/)
  const stressors = marked(inj.id)
  t.equal(stressors.length, 1)
  t.equal(readFileSync(`/proc/${stressors[0]}/stat`, 'utf8').split(') ')[1]!.split(' ')[16], '19', 'the running stressor has nice 19')
  t.same(cgroupOf(stressors[0]!), cgroupOf(pid), "in the target's cgroups")
  await recover(app, inj.id)
  t.same(marked(inj.id), [], 'stressor gone')
  t.same(cg.pids(), [pid])
})

// ---- stress-cpu -----------------------------------------------------------------------------

for (const engine of ['builtin', 'stress-ng'] as const) {
  t.test(`stress-cpu (${engine}) 50 % and 100 % of one CPU, measured in the target's cpuacct cgroup`, engine === 'builtin' ? opts() : ngOpts(), async (t) => {
    const app = await agent()
    const { pid, cg } = target(t, MEASURE_BOUND)
    const idleBefore = await cpuPercent(cg, 1000)
    t.ok(idleBefore < 2, `idle before: ${idleBefore.toFixed(2)} %`)
    for (const load of [50, 100]) {
      const inj = await inject(app, { kind: 'stress-cpu', load, engine }, { type: 'process', pid })
      t.equal(planOf(inj).engine, engine)
      checkPlacement(t, inj.id, pid)
      await sleep(1000)
      const used = await cpuPercent(cg, 4000)
      t.comment(`stress-cpu ${engine}: requested ${load} %, measured ${used.toFixed(2)} % of one CPU over 4 s`)
      t.ok(Math.abs(used - load) <= 5, `${load} % ± 5 points (measured ${used.toFixed(2)} %)`)
      const rec = await recover(app, inj.id)
      t.equal(rec.status, 'recovered')
      noStressorLeft(t, inj.id, cg, pid)
      const idle = await cpuPercent(cg, 1000)
      t.ok(idle < 2, `idle after recovery: ${idle.toFixed(2)} %`)
    }
  })
}

t.test('stress-cpu on the host runs in cgroups of its own, faultline-<id>, which recovery removes', opts(), async (t) => {
  const app = await agent()
  const inj = await inject(app, { kind: 'stress-cpu', load: 30, engine: 'builtin' }, { type: 'host' })
  const own = `faultline-${inj.id}`
  const stressors = marked(inj.id)
  t.equal(stressors.length, 1)
  for (const [hierarchy, path] of Object.entries(cgroupOf(stressors[0]!))) {
    const mount = hierarchy === 'unified' ? mounts.v2 : mounts.v1.get(hierarchy.split(',')[0]!)
    if (mount) t.equal(path, `/${own}`, `${hierarchy}: in its own cgroup`)
  }
  const cpuacct = join(mounts.v1.get('cpuacct') ?? mounts.v2!, own)
  await sleep(500)
  const used = await cpuPercent(cpuacct, 2000)
  t.comment(`host stress-cpu 30 %: ${used.toFixed(2)} % in ${cpuacct}`)
  t.ok(used > 15, 'the load is charged to its own cgroup')
  await recover(app, inj.id)
  t.same(marked(inj.id), [], 'stressor gone')
  const left = [...new Set(mounts.v1.values()), mounts.v2].filter((m): m is string => Boolean(m)).filter((m) => existsSync(join(m, own)))
  t.same(left, [], 'every faultline-<id> cgroup removed')
})

t.test('several processes of one cgroup are stressed once: the second is refused', opts(), async (t) => {
  const app = await agent()
  const { pid, cg } = target(t)
  const other = sleeper(t, 601)
  cg.add(other.pid)
  const first = await inject(app, { kind: 'stress-cpu', load: 10, engine: 'builtin' }, { type: 'process', pid })
  const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'stress-cpu', load: 10, engine: 'builtin' }, target: { type: 'process', pid: other.pid }, duration: '1m' } })
  t.equal(res.statusCode, 409, res.body)
  t.match(res.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_BUSY')
  t.equal((await recover(app, first.id)).status, 'recovered')
  t.same(marked(first.id), [], 'stressor gone')
})

// ---- stress-memory --------------------------------------------------------------------------

for (const engine of ['builtin', 'stress-ng'] as const) {
  t.test(`stress-memory (${engine}) 128 MiB: the target's memory cgroup rises by 128 MiB ± 5 % and stays there for 10 s`, engine === 'builtin' ? opts() : ngOpts(), async (t) => {
    const app = await agent()
    const { pid, cg } = target(t)
    const before = memoryUsage(cg)
    const inj = await inject(app, { kind: 'stress-memory', size: '128MiB', engine }, { type: 'process', pid })
    t.equal(planOf(inj).engine, engine)
    checkPlacement(t, inj.id, pid)
    await waitFor('the allocation', () => memoryUsage(cg) - before >= 0.95 * 128 * MiB, 15_000, 100)
    await sleep(500)
    const samples: number[] = []
    for (let i = 0; i < 10; i++) {
      samples.push((memoryUsage(cg) - before) / MiB)
      await sleep(1000)
    }
    t.comment(`stress-memory ${engine} 128 MiB: rise over 10 s, MiB: ${samples.map((s) => s.toFixed(1)).join(' ')}`)
    for (const s of samples) t.ok(s >= 128 * 0.95 && s <= 128 * 1.05, `${s.toFixed(2)} MiB within 128 MiB ± 5 %`)
    t.ok(Math.max(...samples) - Math.min(...samples) < 1, 'steady: it varies by less than 1 MiB')
    await recover(app, inj.id)
    noStressorLeft(t, inj.id, cg, pid)
    await waitFor('the charge to go', () => memoryUsage(cg) - before < 4 * MiB, 5_000, 50)
    t.pass('the charge is released at recovery')
  })

  t.test(`stress-memory (${engine}) above the cgroup's limit: the OOM killer takes the stressor, not the target`, engine === 'builtin' ? opts() : ngOpts(), async (t) => {
    const app = await agent()
    const { pid, cg } = target(t)
    writeFileSync(join(cg.dir('memory'), memFile.limit), String(64 * MiB))
    const inj = await inject(app, { kind: 'stress-memory', size: '128MiB', engine }, { type: 'process', pid })
    t.match(inj.plan.steps.map((s) => s.detail).join('\n'), /above the limit/)
    t.equal(planOf(inj).limitBytes, 64 * MiB, 'the limit is in the plan')
    await waitFor('the OOM kill', () => /^oom_kill [1-9]/m.test(readFileSync(join(cg.dir('memory'), memFile.oom), 'utf8')), 15_000, 50)
    await waitFor('the stressors to be gone', () => marked(inj.id).length === 0, 10_000, 50)
    t.ok(readFileSync(`/proc/${pid}/stat`, 'utf8').includes('(sleep) S'), 'the target is alive')
    const rec = await recover(app, inj.id)
    t.equal(rec.status, 'recovered')
    t.match(rec.notes.join('\n'), /OOM killer .* killed \d+ process/, rec.notes.join('\n'))
    t.same(cg.pids(), [pid])
  })
}

t.test('stress-memory as a percentage of the limit', opts(), async (t) => {
  const app = await agent()
  const { pid, cg } = target(t)
  writeFileSync(join(cg.dir('memory'), memFile.limit), String(256 * MiB))
  const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'stress-memory', size: '25%', engine: 'builtin' }, target: { type: 'process', pid }, duration: '1m', dryRun: true } })
  t.equal(res.statusCode, 200, res.body)
  const plan = planOf(res.json<Injection>())
  t.equal(plan.bytes, 64 * MiB)
  t.match(plan.limitSource, `${memFile.limit} of /${cg.name}`)
})

// ---- stress-io ------------------------------------------------------------------------------

/**
 * A 1 GiB ext4 file system on a loop device, mounted in a temporary directory; unmounted and
 * detached at teardown. cgroup v1 blkio counts a device's IO only once blk-throttle is active
 * on its queue (Linux >= 6.9 sets it up at the first throttle rule): the test gives its cgroup
 * a rule of 1 TiB/s on this loop device, which limits nothing and is gone with the device.
 */
function loopFs(t: TestLike): { mount: string; majmin: string } {
  const dir = mkdtempSync('/var/tmp/fl-test-loop-')
  const image = join(dir, 'image')
  const mount = join(dir, 'mnt')
  let device = ''
  t.teardown(() => {
    if (device) {
      spawnSync('umount', [mount])
      spawnSync('losetup', ['-d', device])
    }
    rmSync(dir, { recursive: true, force: true })
  })
  execFileSync('truncate', ['-s', '1G', image])
  execFileSync('mkfs.ext4', ['-q', '-F', image])
  device = execFileSync('losetup', ['--find', '--show', image], { encoding: 'utf8' }).trim()
  mkdirSync(mount)
  execFileSync('mount', [device, mount])
  const majmin = readFileSync(`/sys/block/${device.replace('/dev/', '')}/dev`, 'utf8').trim()
  return { mount, majmin }
}

const ioSkip = baseSkip || (!mounts.v1.has('blkio') ? 'no v1 blkio hierarchy on this host' : has('losetup') && has('mkfs.ext4') ? false : 'needs losetup and mkfs.ext4')

function blkioBytes(cg: TestCgroup, majmin: string): { read: number; write: number } {
  const text = readFileSync(join(cg.dir('blkio'), 'blkio.throttle.io_service_bytes'), 'utf8')
  const get = (op: string) => Number(new RegExp(`^${majmin} ${op} (\\d+)$`, 'm').exec(text)?.[1] ?? 0)
  return { read: get('Read'), write: get('Write') }
}

function procIo(pids: number[]): { read: number; write: number } {
  let read = 0
  let write = 0
  for (const pid of pids) {
    try {
      const text = readFileSync(`/proc/${pid}/io`, 'utf8')
      read += Number(/^read_bytes: (\d+)$/m.exec(text)![1])
      write += Number(/^write_bytes: (\d+)$/m.exec(text)![1])
    } catch {
      /* exited */
    }
  }
  return { read, write }
}

const ioCases = [
  { engine: 'builtin', mode: 'write' },
  { engine: 'builtin', mode: 'read' },
  { engine: 'stress-ng', mode: 'readwrite' },
] as const

for (const c of ioCases) {
  t.test(`stress-io (${c.engine}, ${c.mode}) is charged to the target's blkio cgroup`, { skip: c.engine === 'builtin' ? ioSkip : ioSkip || ngSkip }, async (t) => {
    const app = await agent()
    const { pid, cg } = target(t)
    const fs = loopFs(t)
    for (const file of ['blkio.throttle.read_bps_device', 'blkio.throttle.write_bps_device']) writeFileSync(join(cg.dir('blkio'), file), `${fs.majmin} ${2 ** 40}`)
    const before = blkioBytes(cg, fs.majmin)
    const inj = await inject(app, { kind: 'stress-io', workers: 2, bytes: '64MiB', mode: c.mode, path: fs.mount, engine: c.engine }, { type: 'process', pid })
    const stressors = checkPlacement(t, inj.id, pid)
    const scratch = join(fs.mount, `faultline-${inj.id}`)
    t.ok(existsSync(scratch), 'the scratch directory exists')
    await sleep(2000)
    const own = procIo(stressors.length > 0 ? marked(inj.id) : [])
    const after = blkioBytes(cg, fs.majmin)
    const read = (after.read - before.read) / MiB
    const write = (after.write - before.write) / MiB
    t.comment(`stress-io ${c.engine} ${c.mode}: blkio of the target's cgroup over 2 s: read ${read.toFixed(1)} MiB, write ${write.toFixed(1)} MiB; the stressors' own /proc/<pid>/io: read ${(own.read / MiB).toFixed(1)} MiB, write ${(own.write / MiB).toFixed(1)} MiB`)
    if (c.mode !== 'read') t.ok(write >= 16, `writes charged to the target (${write.toFixed(1)} MiB)`)
    if (c.mode !== 'write') t.ok(read >= 16, `reads charged to the target (${read.toFixed(1)} MiB)`)
    if (c.mode === 'write') t.ok(read < 1, 'write mode reads nothing')
    await recover(app, inj.id)
    noStressorLeft(t, inj.id, cg, pid)
    t.notOk(existsSync(scratch), 'the scratch directory is removed')
    t.same(readdirSync(fs.mount).filter((n) => n !== 'lost+found'), [], 'nothing left on the file system')
  })
}

t.test('stress-io refuses what stress-ng cannot do and what would fill the disk', opts(), async (t) => {
  const app = await agent()
  const { pid } = target(t)
  const post = (fault: Record<string, unknown>) => app.inject({ method: 'POST', url: '/v1/injections', payload: { fault, target: { type: 'process', pid }, duration: '1m', dryRun: true } })
  if (stressNg) {
    const ng = await post({ kind: 'stress-io', mode: 'write', engine: 'stress-ng' })
    t.equal(ng.statusCode, 400, ng.body)
    t.match(ng.body, /reads back what it writes/)
    const auto = await post({ kind: 'stress-io', mode: 'write' })
    t.equal(planOf(auto.json<Injection>()).engine, 'builtin', 'auto picks the burner for write-only IO')
  }
  const full = await post({ kind: 'stress-io', workers: 64, bytes: '1TiB' })
  t.equal(full.statusCode, 400)
  t.match(full.body, /would leave less than/)
})

// ---- crash: kill -9 of the agent ------------------------------------------------------------

/** A small tmpfs mounted on a temporary directory; unmounted and removed at teardown. */
function tmpfs(t: TestLike): string {
  const dir = mkdtempSync('/tmp/fl-test-tmpfs-')
  t.teardown(() => {
    spawnSync('umount', [dir])
    rmSync(dir, { recursive: true, force: true })
  })
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1g,mode=0700', 'tmpfs', dir])
  return dir
}

// One test, three agent processes (each takes seconds to start on a busy machine): the first
// dies between an apply and its journal write, the second recovers that and then dies with
// every kind active, the third recovers those.
t.test('kill -9 of the agent between an apply and its journal write, and with every stress kind active; restart: no stressor alive, nothing left', opts(), async (t) => {
  const stateDir = tmpDir(t)
  // two targets: one kind twice on one cgroup would be refused (see above); a third for the crash after apply
  const targets = [target(t), target(t)]
  const crashTarget = target(t)
  // The IO goes to a tmpfs: IO at full speed on the disk that holds the agent's journal would
  // make the restart (fsync per journal write) far slower than the test's 30 s for readiness.
  // On a tmpfs the IO stressors are CPU-bound: each target's cgroups are capped at 0.3 CPU (see
  // the header), the host injection burns 10 % of one CPU: the whole test burns < 0.7 CPU.
  const scratch = tmpfs(t)
  const cases = [
    { fault: { kind: 'stress-cpu', load: 10, workers: 2 }, on: 0 },
    { fault: { kind: 'stress-cpu', load: 10, engine: 'builtin' }, on: 'host' as const },
    { fault: { kind: 'stress-memory', size: '32MiB', engine: 'builtin' }, on: 0 },
    { fault: { kind: 'stress-memory', size: '32MiB', engine: 'stress-ng' }, on: 1, ng: true },
    { fault: { kind: 'stress-io', bytes: '16MiB', engine: 'builtin', path: scratch }, on: 0 },
    { fault: { kind: 'stress-io', bytes: '16MiB', mode: 'readwrite', engine: 'stress-ng', path: scratch }, on: 1, ng: true },
    // this one's deadline passes while the agent is dead: its stressors stop by themselves
    { fault: { kind: 'stress-cpu', load: 10, workers: 2, engine: 'builtin' }, on: 1, duration: '8s' },
  ].filter((c) => stressNg || !c.ng)
  const began = Date.now()
  const phase = (what: string) => t.comment(`${what} after ${((Date.now() - began) / 1000).toFixed(1)} s`)

  // 1. stressors started and released, the agent killed before the injection is journaled active
  const crashing = await startAgentProcess(t, stateDir, { env: { FAULTLINE_CRASH_AT: 'after-apply' } })
  phase('agent (crashing after apply) ready')
  const crashBody = { id: 'stress-crash-apply', fault: { kind: 'stress-cpu', load: 5, workers: 3, engine: 'builtin' }, target: { type: 'process', pid: crashTarget.pid }, duration: '10m' }
  await t.rejects(http(`${crashing.url}/v1/injections`, { method: 'POST', body: crashBody }))
  await crashing.exited
  t.equal(marked('stress-crash-apply').length, 3, 'killed after the apply: three stressors running, the agent dead')

  // 2. restart: the half-applied injection is recovered; then every kind, and kill -9
  const agent = await startAgentProcess(t, stateDir)
  phase('agent ready')
  t.same(marked('stress-crash-apply'), [], 'killed after the apply: none alive after the restart')
  t.same(crashTarget.cg.pids(), [crashTarget.pid], "killed after the apply: only the target in its cgroups")
  t.equal((await http<Injection>(`${agent.url}/v1/injections/stress-crash-apply`)).body.status, 'recovered')
  const ids: string[] = []
  for (const c of cases) {
    const on = c.on === 'host' ? { type: 'host' } : { type: 'process', pid: targets[c.on]!.pid }
    const res = await http<Injection>(`${agent.url}/v1/injections`, { method: 'POST', body: { fault: c.fault, target: on, duration: c.duration ?? '10m' } }).catch((err: Error) => {
      throw new Error(`${JSON.stringify(c.fault)}: ${err.message}; agent exit ${agent.child.exitCode ?? agent.child.signalCode}; its last log lines: ${agent.logs.slice(-8).map((l) => JSON.stringify(l)).join('\n')}`)
    })
    t.equal(res.status, 201, `${JSON.stringify(c.fault)}: ${JSON.stringify(res.body).slice(0, 300)}`)
    ids.push(res.body.id)
    t.ok(marked(res.body.id).length > 0, `${JSON.stringify(c.fault)}: stressors running`)
  }
  phase(`${ids.length} injections active`)
  const short = ids[ids.length - 1]!
  agent.child.kill('SIGKILL')
  await agent.exited
  await waitFor('the short injection to stop by itself at its deadline', () => marked(short).length === 0, 15_000, 50)
  t.pass('a deadline passed with the agent dead: its stressors stopped by themselves')
  for (const id of ids.slice(0, -1)) t.ok(marked(id).length > 0, `${id}: the stressors outlive the agent (the fault stays until recovery or its deadline)`)

  // 3. restart: everything recovered
  phase('the short injection stopped by itself')
  const restarted = await startAgentProcess(t, stateDir)
  phase('the restarted agent ready')
  for (const id of ids) t.same(marked(id), [], `${id}: no stressor alive by the time the restarted agent answers`)
  for (const tg of targets) t.same(tg.cg.pids(), [tg.pid], "only the target in the target's cgroups")
  for (const id of ids) t.equal((await http<Injection>(`${restarted.url}/v1/injections/${id}`)).body.status, 'recovered')
  const hostId = ids[1]!
  const own = [...new Set(mounts.v1.values()), mounts.v2].filter((m): m is string => Boolean(m)).filter((m) => existsSync(join(m, `faultline-${hostId}`)))
  t.same(own, [], "the host injection's own cgroups are removed")
  t.same(readdirSync(scratch), [], 'the scratch directories are removed')
})

// ---- a container ----------------------------------------------------------------------------

const IMAGE = 'localhost/faultline-test/busybox:latest'
const dockerUp = root && existsSync('/run/docker.sock') && spawnSync('docker', ['image', 'inspect', IMAGE]).status === 0

t.test("stress-cpu on a docker container is charged to the container's cgroups", { skip: baseSkip || (dockerUp ? false : 'needs dockerd with the test image (scripts/test-runtimes.sh start)') }, async (t) => {
  const app = await agent()
  const name = `fl-test-stress-${process.pid}`
  // cpu-shares: see the header
  execFileSync('docker', ['run', '-d', '--name', name, '--network', 'none', '--label', 'faultline-test=1', '--cpu-shares', '262144', '--cpus', '0.8', IMAGE, 'sleep', '600'])
  t.teardown(() => spawnSync('docker', ['rm', '-f', name]))
  const [id, initPid] = execFileSync('docker', ['inspect', '-f', '{{.Id}} {{.State.Pid}}', name], { encoding: 'utf8' }).trim().split(' ')
  const inj = await inject(app, { kind: 'stress-cpu', load: 50, engine: 'builtin' }, { type: 'container', name })
  t.match(inj.resolved, { type: 'container', id })
  checkPlacement(t, inj.id, Number(initPid))
  const cpuacct = join(mounts.v1.get('cpuacct') ?? mounts.v2!, parseProcCgroup(readFileSync(`/proc/${initPid}/cgroup`, 'utf8'))[mounts.v1.has('cpuacct') ? 'cpuacct' : 'unified']!)
  await sleep(1000)
  // The container's cgroup sits under docker's, which competes with the rest of the machine
  // at its own weight: on a busy machine the burner may get less than it asks for. What this
  // test proves is where its CPU time is charged: the container's cgroup grows by the
  // stressors' own CPU time.
  const stressors = marked(inj.id)
  const ownBefore = cpuTimeNs(stressors)
  const used = await cpuPercent(cpuacct, 6000)
  const own = ((cpuTimeNs(stressors) - ownBefore) / 6e9) * 100
  t.comment(`container ${name}: requested 50 %, the container's cpuacct grew by ${used.toFixed(2)} % of one CPU, the stressor's own CPU time by ${own.toFixed(2)} %`)
  t.ok(used > 20, `the load is charged to the container (${used.toFixed(2)} %)`)
  t.ok(Math.abs(used - own) <= 3, "the container's usage is the stressor's own CPU time (± 3 points: tick resolution, window edges)")
  t.ok(used <= 55, 'and no more than asked')
  await recover(app, inj.id)
  t.same(marked(inj.id), [], 'no stressor alive')
  t.equal(execFileSync('docker', ['inspect', '-f', '{{.State.Running}}', name], { encoding: 'utf8' }).trim(), 'true', 'the container runs on')
})
