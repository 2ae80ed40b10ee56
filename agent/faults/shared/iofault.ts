import { spawn } from 'node:child_process'
import { constants as fsConstants, closeSync, existsSync, mkdirSync, openSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs'
import { constants as osConstants } from 'node:os'
import { join } from 'node:path'
import { Type, type Static } from 'typebox'
import type { Feature } from '../../../protocol/capabilities.js'
import { parseDuration } from '../../../protocol/duration.js'
import { FaultlineError } from '../../../protocol/errors.js'
import { ioOperations, type IoErrnoName, type IoOperation } from '../../../protocol/faults/fields.js'
import { PlanStepSchema, type PlanStep } from '../../../protocol/plan.js'
import type { ResolvedTarget } from '../../../protocol/target.js'
import { run } from '../../exec.js'
import { devPath, ownFdPath, procPath, type HostPaths } from '../../host-paths.js'
import { nsexecPreloadEnv } from '../../native/nsexec.js'
import { nativePath } from '../../native/paths.js'
import { listPids, readStat } from '../../targets/procfs.js'
import { signalExactProcess } from '../../targets/signal.js'
import type { ApplyContext, GatherContext, PlanContext, RecoverContext, RecoverOutcome, SweepContext } from '../types.js'
import { checkDirectory, checkPathText, fileRootOf, rootText, stateDirFacts, underProtectedPrefix, withDirectory, type FileRoot } from './files.js'

/*
 * What io-latency, io-error and io-corrupt share: native/iofault (faultline-iofault), a FUSE
 * pass-through laid over one directory of the target, that serves the real directory underneath
 * through a descriptor it opened before mounting, and applies the rules decided here.
 *
 * - Where: the helper runs in the target's mount namespace (libfaultline-nsexec.so preloaded:
 *   it joins the namespace after libfuse was loaded from the host), so a container sees the
 *   mount at its own path and nobody else sees it. /dev/fuse is opened by the agent and handed
 *   over as fd 3 (a container's /dev has none), the stats file as fd 4.
 * - Names: the mount's source (fsname) is faultline-iofault-<injection id>, its type
 *   fuse.faultline-iofault: recovery and the start-up sweep find it in /proc/<pid>/mountinfo
 *   without anything else.
 * - Stop: SIGTERM makes the helper drop every rule and detach the mount (new opens reach the
 *   real directory at once); files opened through it are served without faults until closed.
 *   A mount whose helper died (kill -9: "Transport endpoint is not connected") is detached with
 *   `faultline-iofault --umount PATH` (umount2 MNT_DETACH) in the same namespace.
 */

export const HELPER_NAME = 'faultline-iofault'
/** /proc/<pid>/stat shows the first 15 characters of the executable's name. */
const HELPER_COMM = HELPER_NAME.slice(0, 15)
export const FS_TYPE = 'fuse.faultline-iofault'
export const FSNAME_PREFIX = 'faultline-iofault-'
/** Stands for the injection's deadline in the planned helper argv until apply knows it. */
export const DEADLINE_ARG = '<deadline: expiresAt in seconds since the epoch>'
const MAX_LATENCY_MS = 60_000
/** libfuse's default attribute and entry cache time, used unless a rule selects getattr. */
const DEFAULT_ATTR_TIMEOUT_MS = 1000

export function iofaultHelperPath(): string {
  return nativePath('iofault', HELPER_NAME)
}

export const fsnameOf = (injectionId: string) => `${FSNAME_PREFIX}${injectionId}`

// ---- capability -----------------------------------------------------------------------------------

/** The helper is built and links (libfuse3 loads). /dev/fuse and the kernel's fuse are the "fuse" feature. */
export async function probeIofaultHelper(): Promise<Feature> {
  const path = iofaultHelperPath()
  if (!existsSync(path)) return { available: false, detail: `${path} is not built: install libfuse3-dev and pkg-config, then run npm run build` }
  const res = await run([path, '--check'])
  if (res.code === 0) return { available: true, detail: `${path} (${res.stdout.trim()})` }
  const err = res.stderr.trim().split('\n').slice(-2).join(' ').slice(0, 300)
  return { available: false, detail: `${path} --check failed: ${err || `exit ${res.code ?? res.signal}`}${/libfuse3/.test(err) ? ' (install libfuse3-3)' : ''}` }
}

// ---- rules ---------------------------------------------------------------------------------------

export const IoRuleSchema = Type.Object(
  {
    action: Type.Enum(['delay', 'errno', 'corrupt']),
    operations: Type.Array(Type.Enum(ioOperations)),
    percent: Type.Number(),
    glob: Type.String(),
    latencyMs: Type.Optional(Type.Number()),
    jitterMs: Type.Optional(Type.Number()),
    errno: Type.Optional(Type.String()),
    errnoNumber: Type.Optional(Type.Integer()),
    bytes: Type.Optional(Type.Integer()),
    /** The rule as the helper takes it: TYPE:OPMASK:PER10000:A:B:GLOB (see native/iofault/iofault.c). */
    arg: Type.String(),
  },
  { additionalProperties: false },
)
export type IoRule = Static<typeof IoRuleSchema>

/** The bit of each operation in OPMASK: its index in ioOperations, the order of the C enum. */
export function operationMask(operations: readonly IoOperation[]): number {
  return operations.reduce((mask, op) => mask | (1 << ioOperations.indexOf(op)), 0)
}

export function errnoNumber(name: IoErrnoName): number {
  const n = (osConstants.errno as Record<string, number | undefined>)[name]
  if (n === undefined) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `errno ${name} is not known on this host`)
  return n
}

function checkGlob(glob: string): string {
  if (glob.includes('\0')) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'glob contains a NUL byte')
  return glob
}

export function durationMs(field: string, text: string): number {
  try {
    return parseDuration(text)
  } catch (err) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `${field}: ${(err as Error).message}`)
  }
}

export interface RuleInput {
  action: IoRule['action']
  operations: readonly IoOperation[]
  percent?: number
  glob?: string
  latencyMs?: number
  jitterMs?: number
  errno?: IoErrnoName
  bytes?: number
}

/** A rule, checked, with the argument the helper takes. Pure. */
export function buildRule(input: RuleInput): IoRule {
  const percent = input.percent ?? 100
  const glob = checkGlob(input.glob ?? '*')
  const per10000 = Math.round(percent * 100)
  const mask = operationMask(input.operations).toString(16)
  let a = 0
  let b = 0
  const extra: Partial<IoRule> = {}
  if (input.action === 'delay') {
    const latencyMs = input.latencyMs ?? 0
    const jitterMs = input.jitterMs ?? 0
    if (latencyMs < 1 || latencyMs > MAX_LATENCY_MS) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `latency ${latencyMs}ms is out of range: give 1ms to 1m`)
    if (jitterMs > latencyMs) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `jitter ${jitterMs}ms exceeds latency ${latencyMs}ms: the delay would have to go below zero`)
    a = Math.round(latencyMs * 1000)
    b = Math.round(jitterMs * 1000)
    Object.assign(extra, { latencyMs, jitterMs })
  } else if (input.action === 'errno') {
    const errno = input.errno!
    a = errnoNumber(errno)
    Object.assign(extra, { errno, errnoNumber: a })
  } else {
    a = input.bytes ?? 1
    Object.assign(extra, { bytes: a })
  }
  const type = { delay: 'd', errno: 'e', corrupt: 'c' }[input.action]
  return { action: input.action, operations: [...input.operations], percent, glob, ...extra, arg: `${type}:${mask}:${per10000}:${a}:${b}:${glob}` }
}

export function describeRule(r: IoRule): string {
  const what =
    r.action === 'delay'
      ? `delay ${r.latencyMs}ms${r.jitterMs ? ` ± ${r.jitterMs}ms` : ''}`
      : r.action === 'errno'
        ? `fail with ${r.errno} (${r.errnoNumber})`
        : `flip ${r.bytes} byte${r.bytes === 1 ? '' : 's'} of the data returned by`
  return `${what} ${r.operations.join('/')} on files matching "${r.glob}"${r.percent < 100 ? `, ${r.percent} % of them` : ''}`
}

// ---- mount namespaces and mountinfo ------------------------------------------------------------------

export const MntnsSchema = Type.Object(
  {
    inode: Type.Integer({ description: 'Inode of the mount namespace the mount is made in' }),
    pid: Type.Integer({ description: 'A process of that namespace at plan time (the target, or the agent for the host)' }),
    startTime: Type.Integer(),
    own: Type.Boolean({ description: "The agent's own mount namespace: the helper runs without entering one" }),
  },
  { additionalProperties: false },
)
export type Mntns = Static<typeof MntnsSchema>

const nsInode = (paths: Pick<HostPaths, 'procRoot'>, pid: number | 'self') => statSync(procPath(paths, pid, 'ns', 'mnt')).ino

/** The mount namespace of the target: the agent's own for the host, else its (init) process's. */
export function mntnsOf(target: ResolvedTarget, paths: Pick<HostPaths, 'procRoot'>): Mntns {
  const own = nsInode(paths, 'self')
  const of = (pid: number, startTime: number): Mntns => {
    let inode: number
    try {
      inode = nsInode(paths, pid)
    } catch {
      throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', `pid ${pid} has exited`)
    }
    return { inode, pid, startTime, own: inode === own }
  }
  switch (target.type) {
    case 'host': {
      const self = readStat(paths.procRoot, process.pid)
      return { inode: own, pid: process.pid, startTime: self?.startTime ?? 0, own: true }
    }
    case 'process':
      return of(target.pid, target.startTime)
    case 'container':
      return of(target.initPid, target.initStartTime)
    default:
      throw new FaultlineError('FAULTLINE_ERR_TARGET_UNSUPPORTED', `io faults act on the host, a process or a container, not on a ${target.type}`)
  }
}

export interface MountEntry {
  mountId: number
  parentId: number
  mountPoint: string
  fsType: string
  source: string
}

const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))

/** proc(5) mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS". */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = []
  for (const line of text.split('\n')) {
    const f = line.split(' ')
    const dash = f.indexOf('-', 6)
    if (f.length < 10 || dash < 0) continue
    out.push({ mountId: Number(f[0]), parentId: Number(f[1]), mountPoint: unescape(f[4]!), fsType: f[dash + 1]!, source: unescape(f[dash + 2]!) })
  }
  return out
}

function readMountinfo(paths: Pick<HostPaths, 'procRoot'>, pid: number): MountEntry[] | undefined {
  try {
    return parseMountinfo(readFileSync(procPath(paths, pid, 'mountinfo'), 'utf8'))
  } catch {
    return undefined
  }
}

/** Our mounts in a mount namespace (read through one of its processes), topmost last. */
export function ourMounts(entries: readonly MountEntry[], fsname?: string): MountEntry[] {
  return entries.filter((e) => e.fsType === FS_TYPE && e.source.startsWith(FSNAME_PREFIX) && (fsname === undefined || e.source === fsname))
}

interface ProcRef {
  pid: number
  startTime: number
}

const alive = (paths: Pick<HostPaths, 'procRoot'>, p: ProcRef) => {
  const stat = readStat(paths.procRoot, p.pid)
  return Boolean(stat && stat.startTime === p.startTime && stat.state !== 'Z' && stat.state !== 'X')
}

/** A live process in the mount namespace with this inode (preferring the given ones), or undefined when the namespace is gone. */
function processInNs(paths: Pick<HostPaths, 'procRoot'>, inode: number, prefer: ProcRef[]): number | undefined {
  for (const p of prefer) {
    try {
      if (alive(paths, p) && nsInode(paths, p.pid) === inode) return p.pid
    } catch {
      /* gone meanwhile */
    }
  }
  for (const pid of listPids(paths.procRoot)) {
    try {
      if (nsInode(paths, pid) === inode) return pid
    } catch {
      /* gone meanwhile */
    }
  }
  return undefined
}

/** Running helpers serving `fsname` (found by name and argv: recovery also finds one the agent started but did not record). */
export function findHelpers(paths: Pick<HostPaths, 'procRoot'>, fsname?: string): (ProcRef & { fsname: string })[] {
  const found: (ProcRef & { fsname: string })[] = []
  for (const pid of listPids(paths.procRoot)) {
    const stat = readStat(paths.procRoot, pid)
    if (!stat || stat.comm !== HELPER_COMM || stat.state === 'Z' || stat.state === 'X') continue
    try {
      const argv = readFileSync(procPath(paths, pid, 'cmdline'), 'utf8').split('\0')
      const at = argv.indexOf('--fsname')
      const name = at >= 0 ? argv[at + 1] : undefined
      if (name === undefined || (fsname !== undefined && name !== fsname)) continue
      found.push({ pid, startTime: stat.startTime, fsname: name })
    } catch {
      continue
    }
  }
  return found
}

/** Runs the helper in the namespace of `pid` (directly when that is the agent's own). */
function nsEnv(paths: Pick<HostPaths, 'procRoot'>, pid: number | undefined): Record<string, string> {
  if (pid === undefined) return {}
  if (nsInode(paths, pid) === nsInode(paths, 'self')) return {}
  return nsexecPreloadEnv({ mnt: procPath(paths, pid, 'ns', 'mnt') }, iofaultHelperPath())
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

// ---- gather and plan ---------------------------------------------------------------------------------

export interface IoFacts {
  root: FileRoot
  mntns: Mntns
  helper: string
  stateDir: string
}

const FORBIDDEN_DIRECTORIES = ['/']

/**
 * Checks the directory as the target sees it: absolute, normal, not /, not under /proc, /sys or
 * /dev, not on a kernel pseudo file system, not inside the agent's state dir nor holding it, an
 * existing directory, reached without symlinks (the helper mounts over exactly that path).
 */
export async function gatherIo(spec: { path: string; glob?: string }, target: ResolvedTarget, ctx: GatherContext, kind: string): Promise<IoFacts> {
  checkPathText(spec.path)
  if (FORBIDDEN_DIRECTORIES.includes(spec.path)) throw new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${kind} cannot cover "/": name the directory whose files should be faulted`)
  const prefix = underProtectedPrefix(spec.path)
  if (prefix) throw new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${spec.path} is under ${prefix}: kernel interfaces and devices are never covered by an io fault`)
  if (spec.glob !== undefined) checkGlob(spec.glob)
  const stateDir = stateDirFacts(ctx)
  const root = fileRootOf(target, ctx.paths.procRoot, kind)
  const mntns = mntnsOf(target, ctx.paths)
  await withDirectory(root, ctx.paths.procRoot, spec.path, {}, (d) => {
    checkDirectory(d.dirFd, spec.path, root, stateDir, false)
    const real = readlinkSync(ownFdPath(d.dirFd))
    const rootReal = readlinkSync(ownFdPath(d.rootFd))
    const seen = rootReal === '/' ? real : real.startsWith(`${rootReal}/`) ? real.slice(rootReal.length) : real
    if (seen !== spec.path) {
      throw new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${spec.path}${rootText(root)} is reached through a symbolic link; name the real directory ${seen}`)
    }
    if (stateDir.path === real || stateDir.path.startsWith(`${real === '/' ? '' : real}/`)) {
      throw new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${spec.path}${rootText(root)} holds the agent's state dir ${stateDir.path}; Faultline never faults its own journal`)
    }
  })
  return { root, mntns, helper: iofaultHelperPath(), stateDir: stateDir.path }
}

export const IoPlanSchema = Type.Object({
  path: Type.String({ description: 'The directory, as the target sees it' }),
  mntns: MntnsSchema,
  fsname: Type.String({ description: 'The mount source: faultline-iofault-<injection id>' }),
  rules: Type.Array(IoRuleSchema),
  attrTimeoutMs: Type.Integer(),
  directIo: Type.Boolean(),
  /** The helper's argv; DEADLINE_ARG is replaced at apply. */
  helperArgv: Type.Array(Type.String()),
  /** Environment that enters the target's mount namespace (empty for the agent's own). */
  helperEnv: Type.Record(Type.String(), Type.String()),
  statsPath: Type.String({ description: 'Rule counters, written by the helper on SIGUSR1 and at exit' }),
  steps: Type.Array(PlanStepSchema),
  claims: Type.Array(Type.String()),
})
export type IoPlan = Static<typeof IoPlanSchema>

export const IoStateSchema = Type.Object({
  path: Type.String(),
  mntns: MntnsSchema,
  fsname: Type.String(),
  rules: Type.Array(IoRuleSchema),
  statsPath: Type.String(),
  /** Recorded once the helper said "ready"; until then recovery finds it by its fsname. */
  helper: Type.Optional(Type.Object({ pid: Type.Integer(), startTime: Type.Integer() })),
})
export type IoState = Static<typeof IoStateSchema>

export function statsPathOf(stateDir: string, injectionId: string): string {
  return join(stateDir, 'iofault', `${injectionId}.stats`)
}

/** The plan: the mount, the rules and the exact helper argv. Pure. */
export function planIo(path: string, rules: IoRule[], ctx: PlanContext<IoFacts>): IoPlan {
  const f = ctx.facts
  const fsname = fsnameOf(ctx.injectionId)
  const ops = new Set(rules.flatMap((r) => r.operations))
  // Every read and write reaches the helper only without the page cache (direct_io); attributes
  // are cached for a second (libfuse's default) unless a rule needs every getattr.
  const directIo = ops.has('read') || ops.has('write')
  const attrTimeoutMs = ops.has('getattr') ? 0 : DEFAULT_ATTR_TIMEOUT_MS
  const helperArgv = [
    f.helper,
    '--mount',
    path,
    '--fsname',
    fsname,
    '--deadline',
    DEADLINE_ARG,
    '--attr-timeout-ms',
    String(attrTimeoutMs),
    '--direct-io',
    directIo ? '1' : '0',
    ...rules.flatMap((r) => ['--rule', r.arg]),
  ]
  const nsPath = procPath(ctx.paths, f.mntns.pid, 'ns', 'mnt')
  const helperEnv: Record<string, string> = f.mntns.own ? {} : { LD_PRELOAD: nativePath('nsexec', 'build', 'libfaultline-nsexec.so'), FAULTLINE_NSEXEC: '1', FAULTLINE_NSEXEC_MNT: nsPath }
  const where = `${path}${rootText(f.root)}`
  const statsPath = statsPathOf(f.stateDir, ctx.injectionId)
  const steps: PlanStep[] = [
    {
      phase: 'apply',
      action: 'exec',
      detail:
        `start ${HELPER_NAME} detached${f.mntns.own ? '' : ` in the mount namespace of pid ${f.mntns.pid} (inode ${f.mntns.inode}; libfaultline-nsexec.so joins it before main)`}, with /dev/fuse as fd 3 and ${statsPath} as fd 4: ` +
        `it opens ${where} (O_PATH) and mounts a FUSE pass-through over it (source ${fsname}, type ${FS_TYPE}, allow_other, default_permissions, nosuid, nodev${directIo ? ', direct_io' : ''}, attribute cache ${attrTimeoutMs} ms) that serves the real directory underneath; ` +
        'it detaches the mount by itself at the injection deadline (filled in at apply)',
      argv: helperArgv,
    },
    ...rules.map((r, i) => ({ phase: 'apply' as const, action: 'rule', detail: `rule ${i}: ${describeRule(r)}` })),
    { phase: 'apply', action: 'check', detail: `wait until the helper answered FUSE_INIT and ${fsname} is at ${path} in /proc/<helper pid>/mountinfo` },
    {
      phase: 'recover',
      action: 'signal',
      detail: `SIGTERM to ${HELPER_NAME} (pid + start time recorded at apply, or found by --fsname ${fsname}): it drops every rule and detaches the mount (umount2 MNT_DETACH); files opened through it stay readable, without faults, until closed`,
    },
    {
      phase: 'recover',
      action: 'umount',
      detail: `if ${fsname} is still mounted (a helper killed with SIGKILL leaves a dead mount): ${HELPER_NAME} --umount ${path} in that mount namespace (umount2 MNT_DETACH)`,
      argv: [f.helper, '--umount', path],
    },
  ]
  return { path, mntns: f.mntns, fsname, rules, attrTimeoutMs, directIo, helperArgv, helperEnv, statsPath, steps, claims: [`iofault:${f.mntns.inode}:${path}`] }
}

export function undoIo(plan: IoPlan): IoState {
  return { path: plan.path, mntns: plan.mntns, fsname: plan.fsname, rules: plan.rules, statsPath: plan.statsPath }
}

// ---- apply -----------------------------------------------------------------------------------------

const READY_TIMEOUT_MS = 5_000

function startHelper(argv: readonly string[], env: Record<string, string>, fds: [number, number], paths: Pick<HostPaths, 'procRoot'>): Promise<ProcRef> {
  const [file, ...args] = argv
  return new Promise((resolve, reject) => {
    const child = spawn(file!, args, {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe', fds[0], fds[1]],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', ...env },
    })
    let stdout = ''
    let stderr = ''
    let settled = false
    const finish = (err: Error | undefined, value?: ProcRef) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      child.stdout!.destroy()
      child.stderr!.destroy()
      child.unref()
      if (err) reject(err)
      else resolve(value!)
    }
    const timer = setTimeout(() => finish(new FaultlineError('FAULTLINE_ERR_APPLY_FAILED', `${HELPER_NAME} did not report ready within ${READY_TIMEOUT_MS} ms: ${stderr.trim()}`)), READY_TIMEOUT_MS)
    child.on('error', (err) => finish(new FaultlineError('FAULTLINE_ERR_APPLY_FAILED', `${HELPER_NAME} could not be started: ${err.message}`)))
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()))
    child.stdout!.on('data', (c: Buffer) => {
      stdout += c.toString()
      if (!stdout.includes('ready\n')) return
      const stat = child.pid === undefined ? undefined : readStat(paths.procRoot, child.pid)
      if (!stat || stat.comm !== HELPER_COMM) return finish(new Error(`${HELPER_NAME} reported ready but pid ${child.pid} is not it`))
      finish(undefined, { pid: stat.pid, startTime: stat.startTime })
    })
    child.on('exit', (code, signal) => {
      const why = stderr.trim().split('\n').slice(-2).join(' ') || `exit ${code ?? signal}`
      finish(new FaultlineError('FAULTLINE_ERR_APPLY_FAILED', `${HELPER_NAME} exited before it was ready: ${why}`))
    })
  })
}

export async function applyIo(plan: IoPlan, ctx: ApplyContext): Promise<IoState> {
  const state = undoIo(plan)
  ctx.checkpoint(state)
  const deadlineS = Math.ceil(ctx.expiresAt / 1000)
  const argv = plan.helperArgv.map((a) => (a === DEADLINE_ARG ? String(deadlineS) : a))
  // The namespace must still be the one planned: the process named in the plan may have exited.
  if (!plan.mntns.own && !alive(ctx.paths, plan.mntns)) throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', `pid ${plan.mntns.pid} has exited`)
  mkdirSync(join(plan.statsPath, '..'), { recursive: true, mode: 0o700 })
  const fuseFd = openSync(devPath(ctx.paths, 'fuse'), fsConstants.O_RDWR)
  let statsFd: number | undefined
  try {
    statsFd = openSync(plan.statsPath, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_TRUNC, 0o600)
    state.helper = await startHelper(argv, plan.helperEnv, [fuseFd, statsFd], ctx.paths)
  } finally {
    closeSync(fuseFd)
    if (statsFd !== undefined) closeSync(statsFd)
  }
  ctx.checkpoint(state)
  const inode = nsInode(ctx.paths, state.helper.pid)
  if (inode !== plan.mntns.inode) throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', `the helper runs in mount namespace ${inode}, not the planned ${plan.mntns.inode}`)
  const mounted = ourMounts(readMountinfo(ctx.paths, state.helper.pid) ?? [], plan.fsname)
  if (!mounted.some((m) => m.mountPoint === plan.path)) {
    throw new FaultlineError('FAULTLINE_ERR_APPLY_FAILED', `${HELPER_NAME} reported ready but ${plan.fsname} is not mounted at ${plan.path}`)
  }
  ctx.log.debug({ pid: state.helper.pid, fsname: plan.fsname }, `${HELPER_NAME} ready`)
  return state
}

// ---- recover ---------------------------------------------------------------------------------------

const STOP_WAIT_MS = 2_000
const HELPER_EXIT_WAIT_MS = 1_000

/** "rule 0 (...): 512 of 1024 matching operations" from the helper's stats file. */
function statsNote(state: IoState): string | undefined {
  let text: string
  try {
    text = readFileSync(state.statsPath, 'utf8')
  } catch {
    return undefined
  }
  const lines = text
    .split('\n')
    .map((l) => l.split(' ').map(Number))
    .filter((f) => f.length === 3 && f.every(Number.isFinite))
    .map(([i, seen, faulted]) => `rule ${i} (${state.rules[i!] ? describeRule(state.rules[i!]!) : '?'}): ${faulted} of ${seen} matching operations`)
  return lines.length ? `counters: ${lines.join('; ')}` : undefined
}

/**
 * Takes one injection's mount out of its namespace: SIGTERM to its helper(s) (they detach it
 * themselves), then, for a mount still there (its helper is dead), `--umount` in the namespace.
 * Idempotent: no helper and no mount is recovered. Returns notes for the injection.
 */
export async function removeMount(
  paths: Pick<HostPaths, 'procRoot'>,
  target: { fsname: string; mntnsInode: number; prefer: ProcRef[]; helper?: ProcRef },
): Promise<string[]> {
  const notes: string[] = []
  const helpers: ProcRef[] = [...(target.helper ? [target.helper] : []), ...findHelpers(paths, target.fsname).filter((h) => h.pid !== target.helper?.pid)]
  for (const h of helpers) signalExactProcess(paths.procRoot, h.pid, h.startTime, 'SIGTERM')
  const deadline = Date.now() + STOP_WAIT_MS
  for (;;) {
    const pid = processInNs(paths, target.mntnsInode, [...helpers, ...target.prefer])
    if (pid === undefined) return notes // the namespace is gone, and the mount with it
    const left = ourMounts(readMountinfo(paths, pid) ?? [], target.fsname)
    if (left.length === 0) break
    const helperAlive = helpers.some((h) => alive(paths, h))
    if (helperAlive && Date.now() < deadline) {
      await sleep(20)
      continue
    }
    // A dead helper's mount ("Transport endpoint is not connected"), or one that did not let go.
    for (const m of left.reverse()) {
      const res = await run([iofaultHelperPath(), '--umount', m.mountPoint], { env: { PATH: process.env.PATH ?? '', ...nsEnv(paths, pid) }, timeoutMs: 10_000 })
      if (res.code !== 0 && res.code !== 3) throw new FaultlineError('FAULTLINE_ERR_RECOVER_FAILED', `could not detach ${target.fsname} at ${m.mountPoint}: ${res.stderr.trim() || `exit ${res.code ?? res.signal}`}`)
    }
    if (!helperAlive) notes.push(`${HELPER_NAME} had died: its dead mount (ENOTCONN) at ${left.map((m) => m.mountPoint).join(', ')} was detached`)
    const still = ourMounts(readMountinfo(paths, pid) ?? [], target.fsname)
    if (still.length > 0) throw new FaultlineError('FAULTLINE_ERR_RECOVER_FAILED', `${target.fsname} is still mounted at ${still[0]!.mountPoint} after umount`)
    break
  }
  // Without files left open through the mount, the kernel ends the connection as soon as it is
  // detached and the helper exits (writing its final counters): give it a moment to.
  const exitBy = Date.now() + HELPER_EXIT_WAIT_MS
  while (helpers.some((h) => alive(paths, h)) && Date.now() < exitBy) await sleep(10)
  const lingering = helpers.filter((h) => alive(paths, h))
  for (const h of lingering) signalExactProcess(paths.procRoot, h.pid, h.startTime, 'SIGUSR1')
  if (lingering.length > 0) {
    await sleep(50)
    notes.push(`the mount is detached; ${HELPER_NAME} (pid ${lingering.map((h) => h.pid).join(', ')}) keeps serving files opened through it, without faults, until they are closed`)
  }
  return notes
}

export async function recoverIo(state: IoState, ctx: RecoverContext): Promise<RecoverOutcome> {
  const notes = await removeMount(ctx.paths, {
    fsname: state.fsname,
    mntnsInode: state.mntns.inode,
    prefer: [state.mntns],
    ...(state.helper ? { helper: state.helper } : {}),
  })
  const counters = statsNote(state)
  if (counters) notes.unshift(counters)
  rmSync(state.statsPath, { force: true })
  return notes.length ? { note: notes.join('; ') } : {}
}

// ---- sweep at start ---------------------------------------------------------------------------------

/**
 * At every start, after the journal was reconciled: our mounts that no open injection of this
 * agent owns, in every mount namespace of the host — left by an agent whose journal is gone.
 * A mount whose helper is dead is useless to anyone and detached; a live helper is stopped only
 * when it is this agent's (its stats file, fd 4, is in this state dir), so another agent's
 * injection on the same host is never touched.
 */
export async function sweepIo(ctx: SweepContext): Promise<string[]> {
  const notes: string[] = []
  const seenNs = new Set<number>()
  const ownStats = join(ctx.stateDir, 'iofault') + '/'
  const helpers = findHelpers(ctx.paths)
  for (const pid of listPids(ctx.paths.procRoot)) {
    let inode: number
    try {
      inode = nsInode(ctx.paths, pid)
    } catch {
      continue
    }
    if (seenNs.has(inode)) continue
    seenNs.add(inode)
    for (const m of ourMounts(readMountinfo(ctx.paths, pid) ?? [])) {
      const id = m.source.slice(FSNAME_PREFIX.length)
      if (ctx.openIds.has(id)) continue
      const live = helpers.filter((h) => h.fsname === m.source && alive(ctx.paths, h))
      const theirs = live.filter((h) => {
        try {
          return !readlinkSync(procPath(ctx.paths, h.pid, 'fd', '4')).startsWith(ownStats)
        } catch {
          return true
        }
      })
      if (theirs.length > 0) continue
      const removed = await removeMount(ctx.paths, { fsname: m.source, mntnsInode: inode, prefer: [{ pid, startTime: readStat(ctx.paths.procRoot, pid)?.startTime ?? 0 }] })
      notes.push(`removed ${m.source} at ${m.mountPoint} (mount namespace ${inode}), which no open injection owns${removed.length ? `: ${removed.join('; ')}` : ''}`)
    }
  }
  return notes
}
