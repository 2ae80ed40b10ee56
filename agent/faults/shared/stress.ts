import { nativePath } from '../../native/paths.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants as fsConstants, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { setPriority } from 'node:os'
import { dirname, join } from 'node:path'
import { Type, type Static, type TProperties } from 'typebox'
import type { Feature, FeatureMap } from '../../../protocol/capabilities.js'
import type { engines } from '../../../protocol/faults/fields.js'
import { FaultlineError } from '../../../protocol/errors.js'
import { PlanStepSchema, type PlanStep } from '../../../protocol/plan.js'
import { describeTarget, type ResolvedTarget } from '../../../protocol/target.js'
import { parseProcCgroup } from '../../targets/containers/cgroups.js'
import { findProgram, run } from '../../exec.js'
import { readCgroupMounts, type CgroupMounts } from '../../targets/cgroupfs.js'
import { listPids, readStat } from '../../targets/procfs.js'
import { signalExactProcess } from '../../targets/signal.js'
import type { ApplyContext, GatherContext, PlanContext, RecoverContext, RecoverOutcome } from '../types.js'
import {
  CgroupDirSchema,
  OwnCgroupSchema,
  cgroupDirs,
  cgroupPids,
  cgroupsOfProcess,
  createOwnCgroup,
  hierarchyWith,
  memTotalBytes,
  memoryLimit,
  misplacement,
  oomCounterFile,
  ownCgroupsFor,
  placeInCgroups,
  readOomKills,
  readRootCpuset,
  removeOwnCgroup,
  type CgroupDir,
} from './stress-cgroups.js'

/**
 * What stress-cpu, stress-memory and stress-io share: how a stressor is started, placed, tracked
 * and killed.
 *
 * Every stressor (stress-ng, or our own burner) is started through `faultline-stress gate`
 * (native/stress), which blocks on its stdin before it runs anything. While it blocks, the
 * agent journals it (pid + start time), sets its oom_score_adj to 1000, writes its pid to
 * cgroup.procs of every cgroup of the target and checks /proc/<pid>/cgroup; only then does it
 * write "g", and the gate execs the stressor. So the stressor's first instruction already runs
 * in the target's cgroups, charged to the target, and if the agent dies before the release, the
 * gate reads EOF and exits without running anything.
 *
 * Each stressor also carries FAULTLINE_STRESS=<injection id> in its environment, which its
 * children inherit: recovery kills the recorded stressors and every process with that marker
 * (stress-ng's workers, or a stressor started just before a crash), so nothing survives it.
 * Every stressor is also given the injection's deadline, and exits by itself then, even if the
 * agent never comes back.
 *
 * The agent's own responsiveness: stressors compete for CPU inside the cgroup they are charged
 * to, at nice 0, like the target's own work. Where that cgroup (in the cpu hierarchy, or v2) is
 * the agent's own or one of its ancestors (e.g. a process target in the root cgroup of a host
 * without slices, where the agent also runs), each stressor would weigh as much as the agent or
 * as the agent's whole subtree: there they run at nice 19 (STRESSOR_SHARED_NICE), so the agent
 * always wins the CPU it needs. The load they ask for is still met on idle CPUs; under
 * contention they yield first. The plan shows the nice value it uses.
 */

// ---- the native helper --------------------------------------------------------------------

export const STRESS_HELPER = 'faultline-stress'
let helperPath: string | undefined

/** native/stress/build/faultline-stress, or undefined when it is not built. */
export function stressHelperPath(): string | undefined {
  if (helperPath) return helperPath
  const candidate = nativePath('stress', 'build', STRESS_HELPER)
  try {
    accessSync(candidate, fsConstants.X_OK)
    return (helperPath = candidate)
  } catch {
    return undefined
  }
}

const notBuilt = 'native/stress is not built: run "npm run build" (needs gcc and make)'

/** Capability probe: the helper is built and its gate releases a program. */
export async function probeStressHelper(): Promise<Feature> {
  const path = stressHelperPath()
  if (!path) return { available: false, detail: notBuilt }
  const res = await run([path, 'gate', '/bin/true'], { input: 'g' })
  if (res.code === 0) return { available: true, detail: `${path} (its gate ran /bin/true)` }
  return { available: false, detail: `${path} gate /bin/true failed: ${res.stderr.trim() || `exit ${res.code ?? res.signal}`}` }
}

/** The engine a plan runs (the spec's "auto" resolved): stress-ng or the built-in burner. */
export type Engine = Exclude<(typeof engines)[number], 'auto'>

// ---- plan and state -------------------------------------------------------------------------

/** Stands for the injection's deadline (ms since the epoch, the journal's expiresAt) until apply knows it. */
export const DEADLINE_ARG = '<expiresAt in ms since the epoch>'
/** Stands for the seconds left until the deadline (stress-ng --timeout) until apply knows them. */
export const SECONDS_LEFT_ARG = '<seconds until expiresAt>'
/** The environment variable that marks a stressor and its children as this injection's. */
export const MARKER_VARIABLE = 'FAULTLINE_STRESS'
export const STRESSOR_OOM_SCORE_ADJ = 1000
/** The nice value of stressors that would share the agent's cpu cgroup or weigh against it (see the top of this file). */
export const STRESSOR_SHARED_NICE = 19
const RELEASE = 'g'

export const StressorSchema = Type.Object({ pid: Type.Integer({ minimum: 1 }), startTime: Type.Integer({ minimum: 0 }) })
export type Stressor = Static<typeof StressorSchema>

const UndoFields = {
  engine: Type.Enum(['stress-ng', 'builtin']),
  /** The value of FAULTLINE_STRESS in every stressor's environment: the injection id. */
  marker: Type.String(),
  /** Host targets: the cgroups the injection creates, and removes at recovery. */
  ownCgroups: Type.Array(OwnCgroupSchema),
  /** stress-io: the directory the stressors' files live in, removed at recovery. */
  scratchDir: Type.Optional(Type.String()),
}

export const StressPlanFields = {
  ...UndoFields,
  /** Each stressor's exact argv, gate first; DEADLINE_ARG / SECONDS_LEFT_ARG are filled in at apply. */
  launches: Type.Array(Type.Array(Type.String())),
  /** Where every stressor goes before it runs: each cgroup of the target, or the own cgroups. */
  cgroups: Type.Array(CgroupDirSchema),
  /** A process target: it must still be this process when the stressors start. */
  process: Type.Optional(StressorSchema),
  /** The memory cgroup's OOM-kill counter (v1 memory.oom_control, v2 memory.events). */
  oomCounter: Type.Optional(Type.String()),
  /** The stressors' nice value: 0, or STRESSOR_SHARED_NICE where they would compete with the agent itself. */
  nice: Type.Integer({ minimum: 0, maximum: 19 }),
}

/** A stress kind's plan schema: the shared fields, the kind's own, steps and claims. */
export function stressPlanSchema<Fields extends TProperties>(fields: Fields) {
  return Type.Object({
    ...StressPlanFields,
    ...fields,
    steps: Type.Array(PlanStepSchema),
    claims: Type.Optional(Type.Array(Type.String())),
  })
}

export const StressStateSchema = Type.Object({
  ...UndoFields,
  /** Recorded right after they are started, before they are released. */
  stressors: Type.Array(StressorSchema),
  oom: Type.Optional(Type.Object({ file: Type.String(), before: Type.Integer() })),
})
export type StressState = Static<typeof StressStateSchema>

export interface StressPlan {
  engine: Engine
  marker: string
  ownCgroups: Static<typeof OwnCgroupSchema>[]
  scratchDir?: string
  launches: string[][]
  cgroups: CgroupDir[]
  process?: Stressor
  oomCounter?: string
  nice: number
  steps: PlanStep[]
}

/** What recovery needs if the agent dies before apply returns: the marker finds every stressor. */
export function undoFromStressPlan(plan: StressPlan): StressState {
  return {
    engine: plan.engine,
    marker: plan.marker,
    ownCgroups: plan.ownCgroups,
    ...(plan.scratchDir !== undefined ? { scratchDir: plan.scratchDir } : {}),
    stressors: [],
  }
}

// ---- gather ---------------------------------------------------------------------------------

export interface StressFacts {
  /** native/stress/build/faultline-stress. */
  helper: string
  stressNg: string | undefined
  mounts: CgroupMounts
  /** The target's cgroups (process, container); empty for the host. */
  cgroups: CgroupDir[]
  /** Hierarchies the target is in that this agent has not mounted. */
  unmounted: string[]
  /** Host targets: the root cpuset, which the own cpuset cgroup copies. */
  rootCpuset?: { cpus: string; mems: string }
  process?: Stressor
  memTotalBytes: number
  /**
   * The memory cgroup the stressors are charged to, the limit that binds it and its OOM-kill
   * counter. Host targets: the injection's own memory cgroup, planned from the id (no limit).
   */
  memory: { limit: { bytes: number; source: string }; oomCounter?: string }
  /** Whether the agent may lock memory (CAP_IPC_LOCK), which stress-ng's --vm-locked needs. */
  canLockMemory: boolean
  /** The agent's own cgroup paths (/proc/self/cgroup): hierarchy -> path. */
  agentCgroups: Record<string, string>
}

/** CAP_IPC_LOCK is bit 14 of the capability sets (include/uapi/linux/capability.h). */
function hasCapIpcLock(procRoot: string): boolean {
  try {
    const m = /^CapEff:\s+([0-9a-f]+)$/m.exec(readFileSync(join(procRoot, 'self', 'status'), 'utf8'))
    return m ? (BigInt(`0x${m[1]}`) & (1n << 14n)) !== 0n : false
  } catch {
    return false
  }
}

export async function gatherStress(target: ResolvedTarget, ctx: GatherContext): Promise<StressFacts> {
  const helper = stressHelperPath()
  if (!helper) throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', notBuilt)
  const mounts = readCgroupMounts(ctx.paths.procRoot)
  if (mounts.v1.size === 0 && !mounts.v2) throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', 'no cgroup hierarchy is mounted: stressors could not be charged to a target')
  const memTotal = memTotalBytes(ctx.paths.procRoot)
  const facts: StressFacts = {
    helper,
    stressNg: findProgram('stress-ng'),
    mounts,
    cgroups: [],
    unmounted: [],
    memTotalBytes: memTotal,
    memory: { limit: { bytes: memTotal, source: "the host RAM (MemTotal): the injection's own cgroup has no limit" } },
    canLockMemory: hasCapIpcLock(ctx.paths.procRoot),
    agentCgroups: agentCgroups(ctx.paths.procRoot),
  }
  if (target.type === 'process') {
    Object.assign(facts, cgroupsOfProcess(ctx.paths.procRoot, target.pid, mounts))
    facts.process = { pid: target.pid, startTime: target.startTime }
    facts.memory = memoryOf(facts.cgroups, facts.memTotalBytes)
  } else if (target.type === 'container') {
    Object.assign(facts, cgroupDirs(target.cgroupPaths, mounts))
    facts.memory = memoryOf(facts.cgroups, facts.memTotalBytes)
  } else if (target.type === 'host') {
    const cpusetMount = mounts.v1.get('cpuset')
    const rootCpuset = cpusetMount ? readRootCpuset(cpusetMount) : undefined
    if (rootCpuset) facts.rootCpuset = rootCpuset
  } else {
    throw new FaultlineError('FAULTLINE_ERR_TARGET_UNSUPPORTED', `stress faults act on a host, a process or a container, not on a ${target.type}`)
  }
  return facts
}

function agentCgroups(procRoot: string): Record<string, string> {
  try {
    return parseProcCgroup(readFileSync(join(procRoot, String(process.pid), 'cgroup'), 'utf8'))
  } catch {
    return {}
  }
}

// ---- plan -----------------------------------------------------------------------------------

/**
 * STRESSOR_SHARED_NICE when the stressors' cpu cgroup (v1 cpu hierarchy, else v2) is the agent's
 * own or an ancestor of it: there they would compete with the agent task for task, or outweigh
 * the agent's whole subtree. 0 otherwise (a sibling or a cgroup below: its weight is its own).
 */
export function stressorNice(cgroups: readonly CgroupDir[], agent: Record<string, string>): { nice: number; why?: string } {
  const cpu = hierarchyWith(cgroups, 'cpu')
  if (!cpu) return { nice: 0 }
  const mine = agent[cpu.hierarchy]
  if (mine === undefined) return { nice: 0 }
  const within = cpu.path === '/' || mine === cpu.path || mine.startsWith(`${cpu.path}/`)
  if (!within) return { nice: 0 }
  return {
    nice: STRESSOR_SHARED_NICE,
    why: `the stressors' cpu cgroup ${cpu.path} (${cpu.hierarchy}) ${mine === cpu.path ? "is the agent's own" : `holds the agent's (${mine})`}: they run at nice ${STRESSOR_SHARED_NICE} so the agent stays responsive; on idle CPUs they still get the load asked for, under contention they yield first`,
  }
}

/**
 * stress-ng when the spec allows it and it is installed (and can do what is asked: `limitation`
 * says why not); else the built-in burner.
 */
export function chooseEngine(requested: (typeof engines)[number] | undefined, facts: StressFacts, limitation?: string): Engine {
  if (requested === 'builtin') return 'builtin'
  if (requested === 'stress-ng') {
    if (!facts.stressNg) throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', 'engine stress-ng: stress-ng is not installed (Debian package stress-ng); use engine builtin or auto')
    if (limitation) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `engine stress-ng: ${limitation}; use engine builtin or auto`)
    return 'stress-ng'
  }
  return facts.stressNg && !limitation ? 'stress-ng' : 'builtin'
}

/** Where the stressors go and what the plan says about it. */
export function placement(target: ResolvedTarget, facts: StressFacts, injectionId: string): { cgroups: CgroupDir[]; ownCgroups: StressPlan['ownCgroups']; note?: string } {
  if (target.type === 'host') {
    const own = ownCgroupsFor(injectionId, facts.mounts, facts.rootCpuset)
    return { cgroups: own.map(({ cpuset: _cpuset, ...c }) => c), ownCgroups: own }
  }
  if (facts.cgroups.length === 0) throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `${describeTarget(target)} is in no cgroup this agent can write to`)
  const note = facts.unmounted.length > 0 ? `hierarchies ${facts.unmounted.join(', ')} are not mounted here: in those the stressors stay in the agent's cgroup` : undefined
  return { cgroups: facts.cgroups, ownCgroups: [], ...(note ? { note } : {}) }
}

/** The memory cgroup stressors in these cgroups are charged to: its binding limit and OOM counter. */
function memoryOf(cgroups: readonly CgroupDir[], memTotal: number): StressFacts['memory'] {
  const memcg = hierarchyWith(cgroups, 'memory')
  if (!memcg) return { limit: { bytes: memTotal, source: 'the host RAM (MemTotal): no memory cgroup holds the target' } }
  return { limit: memoryLimit(memcg, memTotal), oomCounter: oomCounterFile(memcg) }
}

/** The OOM counter of the stressors' memory cgroup: for the host, the injection's own one. */
export function oomCounterOf(cgroups: readonly CgroupDir[], facts: StressFacts, host: boolean): string | undefined {
  if (!host) return facts.memory.oomCounter
  const memcg = hierarchyWith(cgroups, 'memory')
  return memcg ? oomCounterFile(memcg) : undefined
}

/** The claim that keeps two injections of one kind off one cgroup (e.g. several matched processes of one service). */
export function cgroupClaim(kind: string, cgroups: readonly CgroupDir[], controller: string): string[] {
  const c = hierarchyWith(cgroups, controller)
  return c ? [`${kind}:${c.dir}`] : []
}

/** The steps every stress plan shares, around the kind's own description of its stressors. */
export function stressSteps(plan: Omit<StressPlan, 'steps'>, what: string, extra: { note?: string; scratchDir?: string } = {}): PlanStep[] {
  const steps: PlanStep[] = []
  for (const c of plan.ownCgroups) {
    steps.push({ phase: 'apply', action: 'mkdir', detail: `${c.dir} (the injection's own cgroup in the ${c.hierarchy} hierarchy)` })
    if (c.cpuset) steps.push({ phase: 'apply', action: 'write', detail: `"${c.cpuset.cpus}" to ${c.dir}/cpuset.cpus and "${c.cpuset.mems}" to ${c.dir}/cpuset.mems (the root cpuset's)` })
  }
  if (extra.scratchDir) steps.push({ phase: 'apply', action: 'mkdir', detail: `${extra.scratchDir} (mode 0700): the stressors' files, unnamed or removed by the stressors themselves` })
  if (extra.note) steps.push({ phase: 'apply', action: 'note', detail: extra.note })
  plan.launches.forEach((argv, i) => {
    steps.push({
      phase: 'apply',
      action: 'exec',
      detail: `stressor ${i + 1} of ${plan.launches.length} (${what}), with ${MARKER_VARIABLE}=${plan.marker} in its environment; it waits at the gate (reads stdin) before it runs anything, and exits by itself at the deadline`,
      argv,
    })
  })
  steps.push({ phase: 'apply', action: 'journal', detail: 'pid + start time of every stressor, before any is released' })
  steps.push({ phase: 'apply', action: 'write', detail: `${STRESSOR_OOM_SCORE_ADJ} to /proc/<pid>/oom_score_adj of every stressor: the OOM killer takes a stressor before anything of the target` })
  if (plan.nice !== 0) steps.push({ phase: 'apply', action: 'setpriority', detail: `nice ${plan.nice} for every stressor (inherited by its workers)` })
  for (const c of plan.cgroups) steps.push({ phase: 'apply', action: 'write', detail: `<pid> to ${c.dir}/cgroup.procs (${c.hierarchy})` })
  steps.push({ phase: 'apply', action: 'check', detail: `/proc/<pid>/cgroup names exactly ${plan.cgroups.length === 1 ? 'that cgroup' : `those ${plan.cgroups.length} cgroups`}` })
  steps.push({ phase: 'apply', action: 'write', detail: `"${RELEASE}" to each gate's stdin: it execs the stressor, already in place` })
  steps.push({ phase: 'recover', action: 'pidfd_send_signal', detail: `SIGKILL to every recorded stressor (pid + start time) and every process with ${MARKER_VARIABLE}=${plan.marker} in its environment; an exited stressor counts as stopped` })
  for (const c of plan.ownCgroups) steps.push({ phase: 'recover', action: 'rmdir', detail: c.dir })
  if (extra.scratchDir) steps.push({ phase: 'recover', action: 'rm', detail: `${extra.scratchDir}, recursively` })
  return steps
}

// ---- apply ----------------------------------------------------------------------------------

interface Launched {
  child: ChildProcess
  stressor: Stressor
  argv: string[]
  stderr: string
  exit?: { code: number | null; signal: NodeJS.Signals | null }
  released: boolean
}

const EXEC_TIMEOUT_MS = 2_000
/** How long the stressors are watched after their release for an early exit (bad argument, no file). */
const SETTLE_MS = 100

function fillDeadline(argv: readonly string[], expiresAt: number): string[] {
  const secondsLeft = Math.max(1, Math.ceil((expiresAt - Date.now()) / 1000))
  return argv.map((a) => (a === DEADLINE_ARG ? String(Math.ceil(expiresAt)) : a === SECONDS_LEFT_ARG ? String(secondsLeft) : a))
}

function launch(argv: string[], marker: string, cwd: string, procRoot: string): Launched {
  const [file, ...args] = argv
  const child = spawn(file!, args, {
    // own session: a Ctrl-C to the agent's terminal never reaches the stressors
    detached: true,
    stdio: ['pipe', 'ignore', 'pipe'],
    cwd,
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', [MARKER_VARIABLE]: marker },
  })
  child.stdin!.on('error', () => {
    /* the gate exited (killed, or failed): its exit status tells */
  })
  const stat = child.pid === undefined ? undefined : readStat(procRoot, child.pid)
  if (!stat) {
    child.kill('SIGKILL')
    throw new Error(`could not start ${file}`)
  }
  const launched: Launched = { child, argv, stderr: '', released: false, stressor: { pid: stat.pid, startTime: stat.startTime } }
  child.stderr!.on('data', (chunk: Buffer) => {
    if (launched.stderr.length < 4096) launched.stderr += chunk.toString()
  })
  child.on('exit', (code, signal) => (launched.exit = { code, signal }))
  return launched
}

function execDone(procRoot: string, l: Launched): boolean {
  if (l.exit) return true
  try {
    return readFileSync(join(procRoot, String(l.stressor.pid), 'cmdline'), 'utf8').split('\0')[1] !== 'gate'
  } catch {
    return true
  }
}

function exitText(l: Launched): string {
  const how = l.exit!.signal ? `was killed by ${l.exit!.signal}` : `exited with status ${l.exit!.code}`
  const why = l.stderr.trim().split('\n').slice(-2).join(' ')
  return `stressor pid ${l.stressor.pid} (${l.argv.slice(2).join(' ')}) ${how}${why ? `: ${why}` : ''}`
}

/**
 * Starts every stressor through its gate, journals them, places them, then releases them all
 * and watches them for SETTLE_MS: a stressor that exits by itself then fails the apply (its
 * stderr in the message), unless it was killed by a signal or the OOM killer acted in the
 * cgroup — a size above the limit, the fault taking effect.
 */
export async function applyStress(plan: StressPlan, ctx: ApplyContext): Promise<StressState> {
  const procRoot = ctx.paths.procRoot
  const state = undoFromStressPlan(plan)
  if (plan.process) {
    const stat = readStat(procRoot, plan.process.pid)
    if (!stat || stat.startTime !== plan.process.startTime || stat.state === 'Z') {
      throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', `process ${plan.process.pid} exited before the stressors could start; nothing was changed`)
    }
  }
  for (const own of plan.ownCgroups) createOwnCgroup(own)
  if (plan.oomCounter) {
    const before = readOomKills(plan.oomCounter)
    if (before !== undefined) state.oom = { file: plan.oomCounter, before }
  }
  if (plan.scratchDir) {
    try {
      mkdirSync(plan.scratchDir, { mode: 0o700 })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
  }

  const launched: Launched[] = []
  try {
    for (const argv of plan.launches) {
      launched.push(launch(fillDeadline(argv, ctx.expiresAt), plan.marker, plan.scratchDir ?? '/', procRoot))
    }
    state.stressors = launched.map((l) => l.stressor)
    ctx.checkpoint(state)
    for (const l of launched) {
      writeFileSync(join(procRoot, String(l.stressor.pid), 'oom_score_adj'), String(STRESSOR_OOM_SCORE_ADJ))
      if (plan.nice !== 0) setPriority(l.stressor.pid, plan.nice)
      placeInCgroups(l.stressor.pid, plan.cgroups)
      const wrong = misplacement(procRoot, l.stressor.pid, plan.cgroups)
      if (wrong) throw new Error(`stressor pid ${l.stressor.pid} is not where it was put: ${wrong}`)
    }
    for (const l of launched) {
      l.child.stdin!.end(RELEASE)
      l.released = true
    }
    const deadline = Date.now() + EXEC_TIMEOUT_MS
    while (!launched.every((l) => execDone(procRoot, l))) {
      if (Date.now() > deadline) throw new Error(`a stressor did not start within ${EXEC_TIMEOUT_MS} ms of its release`)
      await new Promise((r) => setTimeout(r, 2))
    }
    await new Promise((r) => setTimeout(r, SETTLE_MS))
    const early = launched.filter((l) => l.exit)
    // The OOM killer acting in the cgroup is the fault taking effect (a size above the limit),
    // not a failure, even when stress-ng then exits 0 ("finished prematurely").
    const oomKilled = state.oom !== undefined && (readOomKills(state.oom.file) ?? 0) > state.oom.before
    // Status 0 is a stressor reaching its deadline (a short injection on a slow machine can get
    // there before this check): only before the deadline is an exit a failure.
    const reachedDeadline = Date.now() >= ctx.expiresAt
    const failed = early.find((l) => l.exit!.signal === null && !(l.exit!.code === 0 && reachedDeadline))
    if (failed && !oomKilled) throw new FaultlineError('FAULTLINE_ERR_APPLY_FAILED', exitText(failed))
    for (const l of early) ctx.log.warn({ pid: l.stressor.pid, oomKilled }, exitText(l))
  } finally {
    for (const l of launched) {
      // A gate never released reads EOF and exits without running its stressor.
      if (!l.released) l.child.stdin!.destroy()
      // The gate set SIGPIPE to ignored, so a stressor that writes later gets EPIPE, not killed.
      l.child.stderr!.destroy()
      l.child.unref()
      l.child.once('exit', (code, signal) => {
        if (l.released) ctx.log.info({ pid: l.stressor.pid, code, signal }, 'stressor exited')
      })
    }
  }
  return state
}

// ---- recover --------------------------------------------------------------------------------

function isAlive(procRoot: string, s: Stressor): boolean {
  const stat = readStat(procRoot, s.pid)
  return stat !== undefined && stat.startTime === s.startTime && stat.state !== 'Z' && stat.state !== 'X'
}

/** Field 6 of /proc/<pid>/stat (the session id) with the state and start time; undefined when gone. */
function readSessionStat(procRoot: string, pid: number): { state: string; session: number; startTime: number } | undefined {
  let text: string
  try {
    text = readFileSync(join(procRoot, String(pid), 'stat'), 'utf8')
  } catch {
    return undefined
  }
  // fields after the last ")": [0] is field 3 (state), so field N is [N - 3]
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return { state: fields[0]!, session: Number(fields[6 - 3]), startTime: Number(fields[22 - 3]) }
}

function hasMarker(procRoot: string, pid: number, entry: Buffer): boolean {
  let environ: Buffer
  try {
    environ = readFileSync(join(procRoot, String(pid), 'environ'))
  } catch {
    return false
  }
  const at = environ.indexOf(entry)
  return at === 0 || (at > 0 && environ[at - 1] === 0)
}

/**
 * Every live process of the injection's stressors, in one pass over /proc:
 *  - the recorded stressors, and every process in the session of one that is still alive (the
 *    gate starts each stressor in a session of its own, which its children inherit; stress-ng's
 *    workers overwrite their argv and environment area to rename themselves, so for them the
 *    marker cannot be read back);
 *  - every process whose environment carries FAULTLINE_STRESS=<marker> (a stressor started just
 *    before a crash, not yet recorded);
 *  - for host targets, everything in the injection's own cgroups.
 */
export function stressorProcesses(procRoot: string, state: Pick<StressState, 'stressors' | 'marker' | 'ownCgroups'>): Stressor[] {
  const entry = Buffer.from(`${MARKER_VARIABLE}=${state.marker}\0`)
  const inOwnCgroups = new Set(state.ownCgroups.flatMap((c) => cgroupPids(c.dir)))
  const all: (Stressor & { session: number; marked: boolean })[] = []
  for (const pid of listPids(procRoot)) {
    if (pid === process.pid) continue
    const stat = readSessionStat(procRoot, pid)
    if (!stat || stat.state === 'Z' || stat.state === 'X') continue
    all.push({ pid, startTime: stat.startTime, session: stat.session, marked: hasMarker(procRoot, pid, entry) })
  }
  const leaders = new Set<number>()
  for (const p of all) {
    if (p.marked && p.session === p.pid) leaders.add(p.pid)
    if (state.stressors.some((s) => s.pid === p.pid && s.startTime === p.startTime)) leaders.add(p.pid)
  }
  return all.filter((p) => p.marked || leaders.has(p.session) || inOwnCgroups.has(p.pid)).map(({ pid, startTime }) => ({ pid, startTime }))
}

const KILL_TIMEOUT_MS = 5_000

/**
 * SIGKILL to every stressor process of the injection (see stressorProcesses) until none is
 * left. Processes found once are followed by pid + start time: a worker still dying after its
 * session leader has gone is waited for, too.
 */
async function killStressors(procRoot: string, state: StressState): Promise<void> {
  const deadline = Date.now() + KILL_TIMEOUT_MS
  const known = new Map<number, Stressor>()
  for (;;) {
    for (const s of stressorProcesses(procRoot, state)) known.set(s.pid, s)
    for (const [pid, s] of known) if (!isAlive(procRoot, s)) known.delete(pid)
    if (known.size === 0) return
    if (Date.now() > deadline) throw new Error(`stressors still alive ${KILL_TIMEOUT_MS} ms after SIGKILL: pids ${[...known.keys()].join(', ')}`)
    for (const v of known.values()) signalExactProcess(procRoot, v.pid, v.startTime, 'SIGKILL')
    await new Promise((r) => setTimeout(r, 10))
  }
}

export async function recoverStress(state: StressState, ctx: RecoverContext): Promise<RecoverOutcome> {
  const procRoot = ctx.paths.procRoot
  const notes: string[] = []
  const gone = state.stressors.filter((s) => !isAlive(procRoot, s))
  if (gone.length > 0) {
    notes.push(`${gone.length} of ${state.stressors.length} stressors (pids ${gone.map((s) => s.pid).join(', ')}) had already exited: their deadline passed, the OOM killer took them, or something else killed them`)
  }
  await killStressors(procRoot, state)
  for (const c of state.ownCgroups) await removeOwnCgroup(c)
  if (state.scratchDir) rmSync(state.scratchDir, { recursive: true, force: true })
  if (state.oom) {
    const after = readOomKills(state.oom.file)
    if (after !== undefined && after > state.oom.before) {
      notes.push(`the OOM killer of ${dirname(state.oom.file)} killed ${after - state.oom.before} process(es) during the injection; stressors run with oom_score_adj ${STRESSOR_OOM_SCORE_ADJ}, so they are its first choice`)
    }
  }
  return notes.length > 0 ? { note: notes.join('; ') } : {}
}

/** The parts of a plan every stress kind builds the same way. */
export function basePlan(target: ResolvedTarget, ctx: PlanContext<StressFacts>, engine: Engine) {
  const where = placement(target, ctx.facts, ctx.injectionId)
  const oomCounter = oomCounterOf(where.cgroups, ctx.facts, target.type === 'host')
  const nice = stressorNice(where.cgroups, ctx.facts.agentCgroups)
  const note = [where.note, nice.why].filter(Boolean).join('; ') || undefined
  return {
    plan: {
      engine,
      marker: ctx.injectionId,
      cgroups: where.cgroups,
      ownCgroups: where.ownCgroups,
      ...(ctx.facts.process ? { process: ctx.facts.process } : {}),
      ...(oomCounter ? { oomCounter } : {}),
      nice: nice.nice,
    },
    note,
  }
}

/** The gate in front of a stressor's argv. */
export function gated(facts: StressFacts, argv: string[]): string[] {
  return [facts.helper, 'gate', ...argv]
}

/** Why no stress kind can run on this host (besides the helper, which `requires` names). */
export function stressUnavailable(features: FeatureMap): string | undefined {
  if (features['cgroup:v1']?.available || features['cgroup:v2']?.available) return undefined
  return 'no cgroup hierarchy is mounted: stressors could not be charged to their target'
}

/**
 * What stress-cpu, stress-memory and stress-io share beyond their spec and plan: the state,
 * where they may run, what they need, and the whole lifecycle after planning.
 */
export const stressKindCommon = {
  stateSchema: StressStateSchema,
  requires: ['helper:stress'],
  unavailableReason: stressUnavailable,
  exclusive: false,
  undoFromPlan: undoFromStressPlan,
  apply: applyStress,
  recover: recoverStress,
} as const
