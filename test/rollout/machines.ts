// The rollout test bed: real Debian 12 machines with systemd as PID 1, booted with
// systemd-nspawn from the cached rootfs of scripts/rollout-rootfs.sh, reachable over SSH from a
// network namespace of the lab, where the Ansible controller runs. Needs root. What it builds:
//
//   lab netns fl-roll-<pid>-<n>: bridge br0 10.200.240.1/24; ansible-playbook and ssh run here
//     └─ veth vm11 ── host0 in netns fl-roll-<pid>-<n>-<name>: 10.200.240.11 (.12, .13, ... next)
//   machine <name>: overlayfs (lower: the cached rootfs; upper, work: <lab.dir>/machines/<name>)
//     booted by `systemd-nspawn --boot` in cgroups of its own, <cgroup>/faultline-rollout/<lab>-<name>
//
// Every machine starts from the pristine image. Nothing touches the host's interfaces, routes or
// firewall: addresses exist only inside the lab's namespaces (DESIGN.md section 6).
//
// Clean-up is by name: every piece of kernel state of a lab (namespaces, mounts, cgroups, the
// files nspawn keeps in /run) carries the lab's name fl-roll-<pid>-<n>, so teardown, the
// last-resort exit and signal handlers and the next lab (for labs of processes that died
// without either) find all of it the same way, and leftovers() can show what is still there.
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { appendFileSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, rmdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { constants as osConstants, tmpdir } from 'node:os'
import { isAbsolute, join } from 'node:path'
import { repoRoot, type TestLike } from '../helpers.js'

// ---- the API the rollout tests code against -------------------------------------------------------

export interface RunResult {
  /** Exit status; 128 + signal number when killed (a timeout kills with SIGKILL: 137). */
  code: number
  stdout: string
  stderr: string
}

export interface RunOptions {
  /** Added to this process's environment (exec) or the ssh client's (run). */
  env?: Record<string, string>
  /** Kills the process group after this long. Default: 10 min for exec, 5 min for run. */
  timeoutMs?: number
  /** Written to stdin, which is then closed (an empty stdin without it). */
  input?: string
  cwd?: string
}

export interface Lab {
  /** Temp dir of this lab: id_ed25519(.pub), known_hosts, inventories, consoles/<name>.log. */
  dir: string
  /** The lab's network namespace (in /run/netns): the Ansible controller runs in it. */
  netns: string
  /** Boots a machine to multi-user.target with sshd answering. name: [a-z0-9-]+, its hostname. */
  boot(name: string): Promise<Machine>
  /** Runs argv (no shell) on this host inside the lab's network namespace. */
  exec(argv: string[], opts?: RunOptions): Promise<RunResult>
  /** An INI inventory in lab.dir (file: a name in it; default inventory.ini); returns its path. */
  writeInventory(groups: Record<string, Machine[]>, file?: string): string
  /** Environment for ansible-playbook run through exec(): this lab's key, no stray config. */
  ansibleEnv(): Record<string, string>
}

export interface Machine {
  name: string
  ip: string
  /** Runs a shell command line on the machine as root over SSH. */
  run(command: string, opts?: RunOptions): Promise<RunResult>
  /** Like run, but throws (with command, code, stdout, stderr) unless it exits 0; returns stdout. */
  check(command: string, opts?: RunOptions): Promise<string>
  /** Copies a local file to the machine (scp). */
  copyTo(localPath: string, remotePath: string): Promise<void>
  /** Reboots it (systemd reboot inside; the lab starts it again) and waits until it is up. */
  reboot(): Promise<void>
  /** Powers it off (systemd shutdown inside), waits, then kills what is left. Idempotent. */
  stop(): Promise<void>
}

// ---- constants ---------------------------------------------------------------------------------

const PREFIX = 'fl-roll-'
const SUBNET = '10.200.240'
const BRIDGE_IP = `${SUBNET}.1`
/** Machine i (0-based) gets .11 + i. */
const FIRST_HOST = 11
const CGROUP_PARENT = 'faultline-rollout'
const NETNS_DIR = '/run/netns'
/** What nspawn keeps per machine and removes on a clean exit only (not after SIGKILL). */
const NSPAWN_PROPAGATE = '/run/systemd/nspawn/propagate'
const NSPAWN_LOCKS = '/run/systemd/nspawn/locks'
const rootfsScript = join(repoRoot, 'scripts', 'rollout-rootfs.sh')

const BOOT_TIMEOUT_MS = 120_000
const POWEROFF_TIMEOUT_MS = 20_000
const KILL_TIMEOUT_MS = 10_000

const required = () => process.env.FAULTLINE_TEST_REQUIRE_ROLLOUT === '1'

// ---- availability ------------------------------------------------------------------------------

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', 'command -v "$1"', 'sh', name], { stdio: 'ignore' }).status === 0
}

let unavailableCache: string | undefined | null = null

/** Why rollout machines cannot be booted here, or undefined when they can. */
export function rolloutUnavailable(): string | undefined {
  if (unavailableCache !== null) return unavailableCache
  unavailableCache = ((): string | undefined => {
    if (process.getuid?.() !== 0) return 'needs root (network namespaces, mounts, systemd-nspawn)'
    const tools: [string, string][] = [
      ['systemd-nspawn', 'systemd-container'],
      ['debootstrap', 'debootstrap'],
      ['ansible-playbook', 'ansible-core'],
      ['ssh', 'openssh-client'],
      ['scp', 'openssh-client'],
      ['ssh-keygen', 'openssh-client'],
      ['ip', 'iproute2'],
      ['nsenter', 'util-linux'],
      ['flock', 'util-linux'],
    ]
    const missing = tools.filter(([tool]) => !hasCommand(tool))
    if (missing.length > 0) {
      return `${missing.map(([t]) => t).join(', ')} not installed (apt-get install --no-install-recommends ${[...new Set(missing.map(([, p]) => p))].join(' ')})`
    }
    if (!readFileSync('/proc/filesystems', 'utf8').includes('\toverlay\n')) return 'the kernel has no overlayfs'
    if (cgroupRoots().unified === undefined) return 'no cgroup v2 hierarchy is mounted (the lab kills machines through cgroup.kill)'
    return undefined
  })()
  return unavailableCache
}

/**
 * For `t.test(name, { skip: skipUnlessRollout() }, ...)`: the reason to skip, or false. With
 * FAULTLINE_TEST_REQUIRE_ROLLOUT=1 (CI) it never skips, so createLab fails with the reason.
 */
export function skipUnlessRollout(): string | false {
  if (required()) return false
  return rolloutUnavailable() ?? false
}

function assertAvailable(what: string): void {
  const reason = rolloutUnavailable()
  if (reason) {
    throw new Error(`cannot ${what}: ${reason}${required() ? ' (FAULTLINE_TEST_REQUIRE_ROLLOUT=1: CI must provide it)' : ''}`)
  }
}

// ---- processes ---------------------------------------------------------------------------------

/**
 * Runs argv to completion in its own process group (killed as a group on timeout, so an
 * ansible-playbook takes its ssh children along). Never rejects for a non-zero exit.
 */
function runArgv(argv: string[], opts: RunOptions & { defaultTimeoutMs: number }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    })
    let stdout = ''
    let stderr = ''
    let timedOut = false
    const timeoutMs = opts.timeoutMs ?? opts.defaultTimeoutMs
    const timer = setTimeout(() => {
      timedOut = true
      try {
        process.kill(-child.pid!, 'SIGKILL')
      } catch {
        /* already gone */
      }
    }, timeoutMs)
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    child.stdin.on('error', () => {}) // EPIPE when it exits without reading its input
    child.stdin.end(opts.input ?? '')
    child.on('error', (err) => {
      clearTimeout(timer)
      reject(new Error(`${argv[0]} could not be started: ${err.message}`))
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      if (timedOut) stderr += `\n[killed after ${timeoutMs} ms: ${argv.join(' ')}]`
      resolve({ code: code ?? 128 + (signal ? osConstants.signals[signal] : 0), stdout, stderr })
    })
  })
}

/** Runs a setup command on the host; throws with its output unless it exits 0. */
async function must(argv: string[], timeoutMs = 60_000): Promise<string> {
  const res = await runArgv(argv, { defaultTimeoutMs: timeoutMs })
  if (res.code !== 0) throw new Error(`${argv.join(' ')} exited ${res.code}: ${(res.stderr || res.stdout).trim()}`)
  return res.stdout
}

/** The synchronous kind, for clean-up that must also work in an exit handler. */
function quietSync(argv: string[]): boolean {
  return spawnSync(argv[0]!, argv.slice(1), { stdio: 'ignore', timeout: 30_000 }).status === 0
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The promise's value, or 'timeout' after ms; the timer does not outlive it (nor keep tap waiting). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)))
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)

// ---- rootfs ------------------------------------------------------------------------------------

let rootfsPromise: Promise<string> | undefined

/**
 * The path of the cached machine rootfs, made by scripts/rollout-rootfs.sh first if needed
 * (about a minute and 220 MB, once; concurrent callers wait for one build).
 */
export function rootfs(): Promise<string> {
  rootfsPromise ??= (async () => {
    assertAvailable('build the rollout rootfs')
    const res = await runArgv(['bash', rootfsScript], { defaultTimeoutMs: 30 * 60_000 })
    const path = res.stdout.trim().split('\n').pop() ?? ''
    if (res.code !== 0 || !isAbsolute(path) || !existsSync(join(path, 'sbin', 'init'))) {
      throw new Error(`scripts/rollout-rootfs.sh exited ${res.code}:\n${res.stderr.split('\n').slice(-30).join('\n')}`)
    }
    return path
  })()
  // A failed build is not cached: the next caller tries again.
  rootfsPromise.catch(() => (rootfsPromise = undefined))
  return rootfsPromise
}

// ---- cgroups -----------------------------------------------------------------------------------

interface MountEntry {
  mountPoint: string
  fsType: string
  superOptions: string
}

function mounts(): MountEntry[] {
  // /proc/self/mountinfo: "id parent major:minor root mount-point options ... - fstype source super-options"
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [left, right] = line.split(' - ')
      const fields = left!.split(' ')
      const [fsType, , superOptions] = right!.split(' ')
      return { mountPoint: unescapeMount(fields[4]!), fsType: fsType!, superOptions: superOptions ?? '' }
    })
}

function unescapeMount(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)))
}

/**
 * Where the lab's cgroups go: the cgroup2 hierarchy (cgroup.kill ends a machine for sure) and,
 * on a hybrid host such as this one (DESIGN.md section 6), the name=systemd v1 hierarchy,
 * where nspawn and the machine's systemd mirror their cgroups.
 */
function cgroupRoots(): { unified?: string; systemdV1?: string } {
  const all = mounts()
  const v2 = all.filter((m) => m.fsType === 'cgroup2').map((m) => m.mountPoint)
  const unified = v2.find((p) => p === '/sys/fs/cgroup') ?? v2.find((p) => p === '/sys/fs/cgroup/unified') ?? v2[0]
  const systemdV1 = all.find((m) => m.fsType === 'cgroup' && m.superOptions.split(',').includes('name=systemd'))?.mountPoint
  return { unified, systemdV1 }
}

function cgroupParents(): string[] {
  const { unified, systemdV1 } = cgroupRoots()
  return [unified, systemdV1].filter((p): p is string => p !== undefined).map((root) => join(root, CGROUP_PARENT))
}

function makeCgroup(parent: string, name: string): string {
  const dir = join(parent, name)
  // Retried: another lab may remove the (then empty) parent between our two mkdirs.
  for (let attempt = 0; ; attempt++) {
    try {
      mkdirSync(dir, { recursive: true })
      return dir
    } catch (err) {
      if (attempt >= 3) throw err
    }
  }
}

/** Kills every process in the cgroup2 directory and waits until it is empty. */
function killCgroupSync(dir: string, timeoutMs = KILL_TIMEOUT_MS): boolean {
  if (!existsSync(dir)) return true
  try {
    writeFileSync(join(dir, 'cgroup.kill'), '1')
  } catch {
    /* gone meanwhile */
  }
  const deadline = Date.now() + timeoutMs
  for (;;) {
    let populated: boolean
    try {
      populated = /^populated 1$/m.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'))
    } catch {
      return true
    }
    if (!populated) return true
    if (Date.now() > deadline) return false
    sleepSync(50)
  }
}

/** Removes a cgroup directory and the ones the machine's systemd made below it, deepest first. */
function removeCgroupTree(dir: string): void {
  let entries: string[]
  try {
    entries = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name)
  } catch {
    return
  }
  for (const child of entries) removeCgroupTree(join(dir, child))
  try {
    rmdirSync(dir)
  } catch {
    /* busy (reported by leftovers) or gone */
  }
}

// ---- state of labs, found by name ---------------------------------------------------------------

/** The lab a state name belongs to (fl-roll-<pid>-<n>), or undefined when it is no lab's. */
function labOf(name: string): string | undefined {
  return new RegExp(`^(${PREFIX}\\d+-\\d+)(?:-|$)`).exec(name)?.[1]
}

function pidOfLab(lab: string): number {
  return Number(lab.slice(PREFIX.length).split('-')[0])
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}

/** Processes whose network namespace is the one at nsPath. */
function processesInNetns(nsPath: string): number[] {
  let inode: number
  try {
    inode = statSync(nsPath).ino
  } catch {
    return []
  }
  return listDir('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readlinkSync(`/proc/${p}/ns/net`) === `net:[${inode}]`
      } catch {
        return false
      }
    })
    .map(Number)
}

function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]
  } catch {
    return undefined
  }
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
  } catch {
    return '?'
  }
}

type StateKind = 'netns' | 'mount' | 'cgroup' | 'process' | 'nspawn file' | 'dir'

/** Everything on this host that belongs to a lab, each with the lab it belongs to. */
function scanState(): { lab: string; kind: StateKind; item: string }[] {
  const found: { lab: string; kind: StateKind; item: string }[] = []
  const add = (kind: StateKind, name: string, item: string) => {
    const lab = labOf(name)
    if (lab) found.push({ lab, kind, item })
  }
  const seenPids = new Set<number>()
  for (const ns of listDir(NETNS_DIR)) add('netns', ns, ns)
  for (const m of mounts()) {
    if (m.mountPoint.startsWith(`${NETNS_DIR}/`)) continue // a netns, listed above
    const labDir = m.mountPoint.split('/').find((part) => labOf(part))
    if (labDir) add('mount', labDir, m.mountPoint)
  }
  for (const parent of cgroupParents()) for (const cg of listDir(parent)) add('cgroup', cg, join(parent, cg))
  for (const p of listDir('/proc').filter((p) => /^\d+$/.test(p))) {
    let cgroups = ''
    let cmdline: string[] = []
    try {
      // A zombie (a killed machine's process, until init reaps it) holds nothing but its pid.
      if (processState(Number(p)) === 'Z') continue
      cgroups = readFileSync(`/proc/${p}/cgroup`, 'utf8')
      cmdline = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0')
    } catch {
      continue
    }
    const inCgroup = new RegExp(`/${CGROUP_PARENT}/(${PREFIX}[^/\\n]+)`).exec(cgroups)?.[1]
    const machineArg = cmdline.find((a) => a.startsWith(`--machine=${PREFIX}`))?.slice('--machine='.length)
    const name = inCgroup ?? (cmdline[0]?.endsWith('systemd-nspawn') ? machineArg : undefined)
    if (name) {
      seenPids.add(Number(p))
      add('process', name, `${p} ${cmdline.join(' ').trim().slice(0, 120)}`)
    }
  }
  // Processes in a lab's namespaces outside its cgroups: ssh masters that Ansible's
  // ControlPersist leaves, anything a test started with exec().
  for (const ns of listDir(NETNS_DIR).filter((ns) => labOf(ns))) {
    for (const pid of processesInNetns(join(NETNS_DIR, ns))) if (!seenPids.has(pid) && processState(pid) !== 'Z') add('process', ns, `${pid} ${commOf(pid)} (in netns ${ns})`)
  }
  for (const m of listDir(NSPAWN_PROPAGATE)) add('nspawn file', m, join(NSPAWN_PROPAGATE, m))
  for (const d of listDir(tmpdir())) add('dir', d, join(tmpdir(), d))
  return found
}

/**
 * Any state of any lab still on this host (network namespaces, mounts, cgroups, processes,
 * nspawn's files in /run, lab directories), one line each: for a test to assert that there is
 * none after its labs were torn down. Labs of other processes that are still running (test
 * files run in parallel) are theirs to clean up and not listed; pass { all: true } to list
 * them too.
 */
export function leftovers(opts: { all?: boolean } = {}): string[] {
  return scanState()
    .filter(({ lab }) => opts.all || pidOfLab(lab) === process.pid || !processAlive(pidOfLab(lab)))
    .map(({ kind, item }) => `${kind}: ${item}`)
}

/**
 * Removes every piece of state of one lab, found by its name, synchronously: usable from an
 * exit handler, and after a graceful stop as the sweep that catches what it missed. Kills
 * first, unmounts second, removes last; a lab dir with a mount still in it is not removed
 * (that would delete through the mount), so it shows in leftovers() instead.
 */
function removeLabState(lab: string): void {
  const mine = (name: string) => name === lab || name.startsWith(`${lab}-`)
  const { unified } = cgroupRoots()
  if (unified) for (const cg of listDir(join(unified, CGROUP_PARENT)).filter(mine)) killCgroupSync(join(unified, CGROUP_PARENT, cg))
  for (const ns of listDir(NETNS_DIR).filter(mine)) for (const pid of processesInNetns(join(NETNS_DIR, ns))) safeKill(pid)
  const labDirs = listDir(tmpdir()).filter(mine).map((d) => join(tmpdir(), d))
  const under = (dir: string) => mounts().map((m) => m.mountPoint).filter((p) => p.startsWith(`${dir}/`))
  for (const dir of labDirs) {
    for (const mountPoint of under(dir).sort().reverse()) {
      removeNspawnLock(mountPoint)
      if (!quietSync(['umount', mountPoint])) quietSync(['umount', '-l', mountPoint])
    }
  }
  for (const m of listDir(NSPAWN_PROPAGATE).filter(mine)) rmSync(join(NSPAWN_PROPAGATE, m), { recursive: true, force: true })
  for (const ns of listDir(NETNS_DIR).filter(mine)) quietSync(['ip', 'netns', 'delete', ns])
  for (const parent of cgroupParents()) {
    for (const cg of listDir(parent).filter(mine)) removeCgroupTree(join(parent, cg))
    try {
      rmdirSync(parent) // only when no other lab uses it
    } catch {
      /* in use, or gone */
    }
  }
  for (const dir of labDirs) if (under(dir).length === 0) rmSync(dir, { recursive: true, force: true })
}

/**
 * nspawn locks the image it boots in /run/systemd/nspawn/locks/inode-<dev>:<ino> (of the
 * directory) and removes the file when it exits cleanly, not when it is killed.
 */
function removeNspawnLock(rootDir: string): void {
  try {
    const st = statSync(rootDir)
    unlinkSync(join(NSPAWN_LOCKS, `inode-${st.dev}:${st.ino}`))
  } catch {
    /* none */
  }
}

function safeKill(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal)
  } catch {
    /* gone */
  }
}

/** Labs of processes that died without cleaning up (SIGKILL, a crash): removed by the next lab. */
function reapOrphans(): void {
  const orphans = new Set(scanState().map(({ lab }) => lab).filter((lab) => pidOfLab(lab) !== process.pid && !processAlive(pidOfLab(lab))))
  for (const lab of orphans) removeLabState(lab)
}

// ---- last resort: exit and signals ---------------------------------------------------------------

const liveLabs = new Set<string>()
let handlersInstalled = false

/**
 * Removes the labs still there when the process exits or is told to stop (tap's timeout sends
 * SIGTERM; ^C sends SIGINT). A signal is then re-raised, so the process ends as it would have:
 * tap's own handler (signal-exit) only acts when it is the last listener.
 */
function installExitHandlers(): void {
  if (handlersInstalled) return
  handlersInstalled = true
  const cleanAll = () => {
    for (const lab of liveLabs) removeLabState(lab)
    liveLabs.clear()
  }
  process.on('exit', cleanAll)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      cleanAll()
      process.removeListener(signal, onSignal)
      process.kill(process.pid, signal)
    }
    process.on(signal, onSignal)
  }
}

// ---- the lab -----------------------------------------------------------------------------------

let labCounter = 0

/**
 * A lab: its network namespace with the bridge, an SSH key, and the machines booted in it.
 * Everything it makes is removed at t's teardown (also when the test fails or throws), and by
 * exit and signal handlers as a last resort.
 */
export async function createLab(t: TestLike): Promise<Lab> {
  assertAvailable('create a rollout lab')
  const image = await rootfs()
  reapOrphans()
  const name = `${PREFIX}${process.pid}-${labCounter++}`
  liveLabs.add(name)
  installExitHandlers()
  const lab = new LabImpl(t, name, image)
  t.teardown(() => lab.destroy())
  await lab.setUp()
  return lab
}

class LabImpl implements Lab {
  readonly dir: string
  readonly netns: string
  readonly machines = new Map<string, MachineImpl>()
  readonly key: string
  readonly knownHosts: string
  readonly ansibleCfg: string
  private destroyed?: Promise<void>

  constructor(
    readonly t: TestLike,
    readonly name: string,
    readonly image: string,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), `${name}-`))
    this.netns = name
    this.key = join(this.dir, 'id_ed25519')
    this.knownHosts = join(this.dir, 'known_hosts')
    this.ansibleCfg = join(this.dir, 'ansible.cfg')
  }

  get netnsPath(): string {
    return join(NETNS_DIR, this.netns)
  }

  async setUp(): Promise<void> {
    await must(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', `root@${this.name}`, '-f', this.key])
    writeFileSync(this.knownHosts, '')
    writeFileSync(this.ansibleCfg, '# empty: the settings are in ansibleEnv() (test/rollout/machines.ts)\n[defaults]\n')
    mkdirSync(join(this.dir, 'consoles'))
    await must(['ip', 'netns', 'add', this.netns])
    const ip = (...args: string[]) => must(['ip', '-n', this.netns, ...args])
    await ip('link', 'set', 'lo', 'up')
    await ip('link', 'add', 'br0', 'type', 'bridge')
    await ip('addr', 'add', `${BRIDGE_IP}/24`, 'dev', 'br0')
    await ip('link', 'set', 'br0', 'up')
  }

  exec(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    return runArgv(['nsenter', `--net=${this.netnsPath}`, '--', ...argv], { ...opts, defaultTimeoutMs: 10 * 60_000 })
  }

  /** ssh options every connection of the lab uses: only this lab's key and host keys. */
  sshOptions(): string[] {
    return [
      '-F', '/dev/null',
      '-i', this.key,
      '-o', 'IdentitiesOnly=yes',
      '-o', `UserKnownHostsFile=${this.knownHosts}`,
      '-o', 'GlobalKnownHostsFile=/dev/null',
      // The lab wrote each machine's host key into known_hosts before booting it.
      '-o', 'StrictHostKeyChecking=yes',
      '-o', 'BatchMode=yes',
      '-o', 'ConnectTimeout=5',
      '-o', 'LogLevel=ERROR',
    ]
  }

  async boot(name: string): Promise<Machine> {
    if (this.destroyed) throw new Error(`lab ${this.name} is torn down`)
    if (!/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(name)) throw new Error(`machine name ${JSON.stringify(name)}: use [a-z0-9-]+, at most 32 characters, no leading or trailing -`)
    if (this.machines.has(name)) throw new Error(`lab ${this.name} already has a machine ${name}`)
    const index = this.machines.size
    if (FIRST_HOST + index > 254) throw new Error('a lab holds at most 244 machines')
    const machine = new MachineImpl(this, name, index)
    this.machines.set(name, machine)
    const started = Date.now()
    await machine.create()
    this.t.comment(`machine ${name} (${machine.ip}) booted in ${Date.now() - started} ms`)
    // Every machine knows every other by name: the new one from its /etc/hosts, the others get
    // a line unless they have it (booted in parallel), written through their overlay mount.
    const line = `${machine.ip} ${machine.name}`
    for (const other of this.machines.values()) {
      if (other === machine || !other.mounted) continue
      const hosts = join(other.merged, 'etc', 'hosts')
      if (!readFileSync(hosts, 'utf8').split('\n').includes(line)) appendFileSync(hosts, `${line}\n`)
    }
    return machine
  }

  writeInventory(groups: Record<string, Machine[]>, file = 'inventory.ini'): string {
    const path = isAbsolute(file) ? file : join(this.dir, file)
    const lines: string[] = ['# written by test/rollout/machines.ts']
    for (const [group, members] of Object.entries(groups)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(group)) throw new Error(`inventory group ${JSON.stringify(group)}: use letters, digits and _`)
      lines.push('', `[${group}]`, ...members.map((m) => `${m.name} ansible_host=${m.ip} ansible_user=root`))
    }
    writeFileSync(path, `${lines.join('\n')}\n`)
    return path
  }

  ansibleEnv(): Record<string, string> {
    const home = join(this.dir, 'ansible-home')
    return {
      // An empty ansible.cfg of the lab's own: none from the working directory, $HOME or /etc
      // applies (ansible-core refuses /dev/null: "Unsupported configuration file extension").
      ANSIBLE_CONFIG: this.ansibleCfg,
      ANSIBLE_HOME: home,
      ANSIBLE_LOCAL_TEMP: join(home, 'tmp'),
      ANSIBLE_REMOTE_TEMP: '~/.ansible/tmp',
      ANSIBLE_SSH_CONTROL_PATH_DIR: join(home, 'cp'),
      ANSIBLE_PRIVATE_KEY_FILE: this.key,
      ANSIBLE_REMOTE_USER: 'root',
      ANSIBLE_HOST_KEY_CHECKING: 'False',
      // Ansible's own defaults (-C, ControlMaster, ControlPersist) plus the lab's files; the
      // masters that ControlPersist leaves running die with the lab (they live in its netns).
      ANSIBLE_SSH_ARGS: [
        '-F /dev/null -C -o ControlMaster=auto -o ControlPersist=60s -o IdentitiesOnly=yes',
        `-o UserKnownHostsFile=${this.knownHosts} -o GlobalKnownHostsFile=/dev/null`,
      ].join(' '),
      ANSIBLE_TIMEOUT: '30',
      ANSIBLE_PYTHON_INTERPRETER: '/usr/bin/python3',
      ANSIBLE_NOCOLOR: '1',
      ANSIBLE_FORCE_COLOR: '0',
      ANSIBLE_RETRY_FILES_ENABLED: 'False',
      ANSIBLE_DEPRECATION_WARNINGS: 'False',
      NO_COLOR: '1',
    }
  }

  /** Powers every machine off, then removes all state of the lab. Idempotent. */
  destroy(): Promise<void> {
    this.destroyed ??= (async () => {
      const stops = await Promise.allSettled([...this.machines.values()].map((m) => m.stop()))
      for (const s of stops) if (s.status === 'rejected') this.t.comment(`stopping a machine failed: ${String(s.reason)}`)
      removeLabState(this.name)
      liveLabs.delete(this.name)
    })()
    return this.destroyed
  }
}

// ---- a machine -----------------------------------------------------------------------------------

/**
 * The shell that puts itself into the machine's cgroups and then becomes systemd-nspawn, so that
 * nspawn and everything it starts are in them from the first instruction (--keep-unit leaves
 * nspawn in its caller's cgroup; moving it after the fact would race its forks). A constant
 * script: the cgroup files and nspawn's argv are its arguments.
 */
const JOIN_CGROUPS_AND_EXEC = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'

class MachineImpl implements Machine {
  readonly ip: string
  /** Unique on this host: netns, cgroup and nspawn machine name (nspawn keys /run files by it). */
  readonly id: string
  readonly upper: string
  readonly work: string
  readonly merged: string
  readonly console: string
  mounted = false
  /** The running systemd-nspawn, and a promise of its exit status. */
  private nspawn?: { pid: number; exited: Promise<number | null>; running: boolean }
  private stopping?: Promise<void>

  constructor(
    readonly lab: LabImpl,
    readonly name: string,
    readonly index: number,
  ) {
    this.ip = `${SUBNET}.${FIRST_HOST + index}`
    this.id = `${lab.name}-${name}`
    const base = join(lab.dir, 'machines', name)
    this.upper = join(base, 'upper')
    this.work = join(base, 'work')
    this.merged = join(base, 'root')
    this.console = join(lab.dir, 'consoles', `${name}.log`)
  }

  private get netnsPath(): string {
    return join(NETNS_DIR, this.id)
  }

  private get cgroups(): string[] {
    return cgroupParents().map((parent) => join(parent, this.id))
  }

  /** Network, root file system, then boot; throws with the console's tail when it does not come up. */
  async create(): Promise<void> {
    await this.makeNetwork()
    await this.makeRoot()
    this.start()
    await this.waitUntilUp()
  }

  private async makeNetwork(): Promise<void> {
    const veth = `vm${FIRST_HOST + this.index}`
    await must(['ip', 'netns', 'add', this.id])
    await must(['ip', '-n', this.lab.netns, 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'host0', 'netns', this.id])
    await must(['ip', '-n', this.lab.netns, 'link', 'set', veth, 'master', 'br0', 'up'])
    const ip = (...args: string[]) => must(['ip', '-n', this.id, ...args])
    await ip('link', 'set', 'lo', 'up')
    await ip('addr', 'add', `${this.ip}/24`, 'dev', 'host0')
    await ip('link', 'set', 'host0', 'up')
    // The lab has no way out; the route only gives software that looks for one something to find.
    await ip('route', 'add', 'default', 'via', BRIDGE_IP)
  }

  /** The overlay, and what makes this machine itself, written through it (so copied up properly). */
  private async makeRoot(): Promise<void> {
    for (const dir of [this.upper, this.work, this.merged]) mkdirSync(dir, { recursive: true })
    await must(['mount', '-t', 'overlay', 'overlay', '-o', `lowerdir=${this.lab.image},upperdir=${this.upper},workdir=${this.work}`, this.merged])
    this.mounted = true
    const etc = join(this.merged, 'etc')
    writeFileSync(join(etc, 'hostname'), `${this.name}\n`)
    writeFileSync(join(etc, 'machine-id'), `${randomBytes(16).toString('hex')}\n`)
    const hosts = [...this.lab.machines.values()].filter((m) => m === this || m.mounted).map((m) => `${m.ip} ${m.name}`)
    writeFileSync(join(etc, 'hosts'), ['127.0.0.1 localhost', '::1 localhost ip6-localhost ip6-loopback', ...hosts, ''].join('\n'))
    const sshDir = join(this.merged, 'root', '.ssh')
    mkdirSync(sshDir, { recursive: true, mode: 0o700 })
    writeFileSync(join(sshDir, 'authorized_keys'), readFileSync(`${this.lab.key}.pub`), { mode: 0o600 })
    const hostKey = join(etc, 'ssh', 'ssh_host_ed25519_key')
    for (const file of [hostKey, `${hostKey}.pub`]) rmSync(file, { force: true }) // ssh-keygen would ask before overwriting
    await must(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', `root@${this.name}`, '-f', hostKey])
    const [type, key] = readFileSync(`${hostKey}.pub`, 'utf8').trim().split(' ')
    appendFileSync(this.lab.knownHosts, `${this.ip},${this.name} ${type} ${key}\n`)
  }

  /** Starts systemd-nspawn in the machine's own cgroups, its console appended to consoles/<name>.log. */
  private start(): void {
    const procs = cgroupParents().map((parent) => join(makeCgroup(parent, this.id), 'cgroup.procs'))
    const nspawn = [
      'systemd-nspawn',
      `--directory=${this.merged}`,
      // PID 1 of this host is not systemd: there is no machined to register with and no unit
      // to move into (DESIGN.md section 6).
      '--register=no',
      '--keep-unit',
      `--network-namespace-path=${this.netnsPath}`,
      `--machine=${this.id}`,
      `--hostname=${this.name}`,
      // A pty for the console whose output nspawn copies to its stdout (the log file), no input.
      '--console=read-only',
      // The default set lacks NET_ADMIN with --network-namespace-path (nft, tc and ip fail with
      // EPERM inside), and IPC_LOCK, which stress-memory uses; both are in the agent's unit.
      '--capability=CAP_NET_ADMIN,CAP_IPC_LOCK',
      '--boot',
    ]
    const out = openSync(this.console, 'a')
    try {
      const child = spawn('sh', ['-c', JOIN_CGROUPS_AND_EXEC, 'sh', ...procs, '--', ...nspawn], {
        stdio: ['ignore', out, out],
        // TERM=dumb reaches the machine's systemd: a console log without colour codes.
        env: { ...process.env, TERM: 'dumb', SYSTEMD_COLORS: '0' },
        detached: true,
      })
      child.unref() // a machine never keeps the test process alive; teardown and the exit handler end it
      const state = {
        pid: child.pid!,
        running: true,
        exited: new Promise<number | null>((resolve) => {
          child.on('error', () => resolve(null))
          child.on('exit', (code) => resolve(code))
        }),
      }
      void state.exited.then((code) => {
        state.running = false
        // 133: the machine's systemd asked for a reboot (systemd-nspawn(1)); start it again, as
        // systemd-nspawn@.service does.
        if (code === 133 && !this.stopping) {
          appendFileSync(this.console, '\n[machines.ts: reboot requested (exit 133): starting the machine again]\n')
          this.start()
        }
      })
      this.nspawn = state
    } finally {
      closeSync(out)
    }
  }

  /** Waits until sshd answers and systemd has finished booting (running, or degraded: listed). */
  private async waitUntilUp(): Promise<void> {
    const deadline = Date.now() + BOOT_TIMEOUT_MS
    let last: RunResult | undefined
    for (;;) {
      if (!this.nspawn?.running) throw this.bootError(`systemd-nspawn exited (${await this.nspawn?.exited})`)
      last = await this.run('true', { timeoutMs: 10_000 })
      if (last.code === 0) break
      if (Date.now() > deadline) throw this.bootError(`ssh did not answer within ${BOOT_TIMEOUT_MS} ms: ${last.stderr.trim()}`)
      await sleep(200)
    }
    const state = await this.run('systemctl is-system-running --wait', { timeoutMs: Math.max(deadline - Date.now(), 10_000) })
    const status = state.stdout.trim()
    if (status === 'running') return
    const failed = (await this.run('systemctl --failed --no-legend --plain --full')).stdout.trim()
    if (status === 'degraded') {
      this.lab.t.comment(`machine ${this.name} booted degraded; failed units:\n${failed}`)
      return
    }
    throw this.bootError(`systemctl is-system-running: ${status || state.stderr.trim()} (exit ${state.code}); failed units: ${failed || 'none'}`)
  }

  private bootError(why: string): Error {
    let tail = ''
    try {
      tail = readFileSync(this.console, 'utf8').split('\n').slice(-40).join('\n')
    } catch {
      /* no console yet */
    }
    return new Error(`machine ${this.name} (${this.ip}) did not boot: ${why}\n--- console (${this.console}), last lines:\n${tail}`)
  }

  run(command: string, opts: RunOptions = {}): Promise<RunResult> {
    return runArgv(['nsenter', `--net=${this.lab.netnsPath}`, '--', 'ssh', ...this.lab.sshOptions(), `root@${this.ip}`, command], {
      ...opts,
      defaultTimeoutMs: 5 * 60_000,
    })
  }

  async check(command: string, opts: RunOptions = {}): Promise<string> {
    const res = await this.run(command, opts)
    if (res.code !== 0) {
      throw new Error(`on ${this.name}: \`${command}\` exited ${res.code}\n--- stdout:\n${res.stdout}\n--- stderr:\n${res.stderr}`)
    }
    return res.stdout
  }

  async copyTo(localPath: string, remotePath: string): Promise<void> {
    const res = await this.lab.exec(['scp', '-q', ...this.lab.sshOptions(), localPath, `root@${this.ip}:${remotePath}`], { timeoutMs: 5 * 60_000 })
    if (res.code !== 0) throw new Error(`scp ${localPath} to ${this.name}:${remotePath} exited ${res.code}: ${res.stderr.trim()}`)
  }

  async reboot(): Promise<void> {
    if (this.stopping) throw new Error(`machine ${this.name} is stopped`)
    const before = this.nspawn
    await this.run('systemctl reboot --no-block', { timeoutMs: 10_000 })
    const code = before ? await within(before.exited, POWEROFF_TIMEOUT_MS) : 'not started'
    if (code !== 133) throw this.bootError(`it did not reboot: systemd-nspawn ${code === 'timeout' ? 'still runs' : `exited ${code}`}`)
    // start()'s handler of that exit, registered first, has started it again by now.
    await this.waitUntilUp()
  }

  stop(): Promise<void> {
    this.stopping ??= this.powerOffAndRemove()
    return this.stopping
  }

  private async powerOffAndRemove(): Promise<void> {
    const nspawn = this.nspawn
    if (nspawn?.running) {
      // A clean shutdown first (what an operator's poweroff does); SIGTERM makes nspawn ask
      // systemd for the same if ssh cannot.
      const res = await this.run('systemctl poweroff --no-block', { timeoutMs: 10_000 }).catch(() => undefined)
      if (res?.code !== 0) safeKill(nspawn.pid, 'SIGTERM')
      await within(nspawn.exited, POWEROFF_TIMEOUT_MS)
    }
    const [unified] = this.cgroups
    if (unified && !killCgroupSync(unified)) this.lab.t.comment(`machine ${this.name}: processes left in ${unified} after cgroup.kill`)
    if (nspawn) await within(nspawn.exited, KILL_TIMEOUT_MS)
    this.removeState()
  }

  /** What this machine made, removed by exact name (its netns, mount, cgroups, nspawn's files). */
  private removeState(): void {
    for (const pid of processesInNetns(this.netnsPath)) safeKill(pid)
    if (this.mounted) {
      removeNspawnLock(this.merged)
      if (!quietSync(['umount', this.merged]) && !quietSync(['umount', '-l', this.merged])) {
        this.lab.t.comment(`machine ${this.name}: could not unmount ${this.merged}`)
      }
      this.mounted = false
    }
    rmSync(join(NSPAWN_PROPAGATE, this.id), { recursive: true, force: true })
    quietSync(['ip', 'netns', 'delete', this.id])
    for (const dir of this.cgroups) removeCgroupTree(dir)
  }
}
