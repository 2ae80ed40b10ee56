// Container test fixtures: real containers in containerd, dockerd and podman, the daemons that
// scripts/test-runtimes.sh starts (sockets at the agent's default paths), from the busybox
// image it builds locally (no `ip` in it, no registry needed). Every container runs with no
// network (only lo), carries the label faultline-test=1 and is removed at teardown, also when
// the test fails. Needs root.
//
// A test for a runtime that is not there is skipped with the reason; with
// FAULTLINE_TEST_REQUIRE_RUNTIMES=1 (set by .ci/run, which provides all three) it fails instead,
// so CI cannot go green by skipping.
import { execFile, execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { statSync } from 'node:fs'
import { defaultRuntimeSockets } from '../agent/capabilities/probe.js'
import type { TestLike } from './helpers.js'

export type TestRuntime = 'docker' | 'containerd' | 'podman'
export const testRuntimes: readonly TestRuntime[] = ['docker', 'containerd', 'podman']

export const TEST_IMAGE = 'localhost/faultline-test/busybox:latest'
/** The containerd namespace test containers live in (docker's own is "moby"). */
export const CTR_NAMESPACE = 'faultline-test'

export interface TestContainer {
  runtime: TestRuntime
  /** Full id: 64 hex digits for docker and podman; for containerd the id is the name. */
  id: string
  name: string
  /** The container's init as the host sees it. */
  pid: number
  labels: Record<string, string>
  /** containerd namespace (containerd only). */
  namespace?: string
}

const cliOf: Record<TestRuntime, string> = { docker: 'docker', containerd: 'ctr', podman: 'podman' }

/** Runs a runtime CLI; resolves with stdout, rejects with the command and its stderr. */
export function runtimeCli(argv: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${argv.join(' ')} failed: ${stderr.trim() || err.message}`))
      else resolve(stdout)
    })
  })
}

function succeeds(argv: string[]): boolean {
  try {
    execFileSync(argv[0]!, argv.slice(1), { stdio: 'ignore', timeout: 20_000 })
    return true
  } catch {
    return false
  }
}

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket()
  } catch {
    return false
  }
}

const unavailableCache = new Map<TestRuntime, string | undefined>()

/** Why containers of this runtime cannot be run here, or undefined when they can. */
export function runtimeUnavailable(runtime: TestRuntime): string | undefined {
  if (unavailableCache.has(runtime)) return unavailableCache.get(runtime)
  const reason = ((): string | undefined => {
    if (process.getuid?.() !== 0) return 'needs root'
    const cli = cliOf[runtime]
    if (!succeeds(['sh', '-c', 'command -v "$1"', 'sh', cli])) return `${cli} is not installed (Debian: containerd, runc, docker.io, podman)`
    const sockets = defaultRuntimeSockets[runtime]
    if (!sockets.some(isSocket)) return `no ${runtime} socket at ${sockets.join(' or ')}: run scripts/test-runtimes.sh start`
    const imagePresent =
      runtime === 'docker'
        ? succeeds(['docker', 'image', 'inspect', TEST_IMAGE])
        : runtime === 'podman'
          ? succeeds(['podman', 'image', 'exists', TEST_IMAGE])
          : succeeds(['sh', '-c', 'ctr -n "$1" images ls -q | grep -qxF "$2"', 'sh', CTR_NAMESPACE, TEST_IMAGE])
    if (!imagePresent) return `${runtime} lacks the test image ${TEST_IMAGE}: run scripts/test-runtimes.sh start`
    return undefined
  })()
  unavailableCache.set(runtime, reason)
  return reason
}

const required = () => process.env.FAULTLINE_TEST_REQUIRE_RUNTIMES === '1'

/**
 * For `t.test(name, { skip: skipUnlessRuntime('docker') }, ...)`: the reason to skip, or false.
 * With FAULTLINE_TEST_REQUIRE_RUNTIMES=1 it never skips, so runContainer fails with the reason.
 */
export function skipUnlessRuntime(...runtimes: TestRuntime[]): string | false {
  if (required()) return false
  const reasons = runtimes.map((r) => runtimeUnavailable(r)).filter((r): r is string => r !== undefined)
  return reasons.length ? reasons.join('; ') : false
}

let counter = 0

/** A name unique to this test process, valid for all three runtimes. */
export function uniqueName(prefix = 'fl-test'): string {
  return `${prefix}-${process.pid.toString(36)}-${(counter++).toString(36)}-${randomBytes(3).toString('hex')}`
}

/**
 * Removes a test container, whatever state it is in; "no such container" is fine. For
 * containerd: kill the task, wait until it stopped, delete the task, delete the container (and
 * with it its snapshot).
 */
export async function removeContainer(runtime: TestRuntime, idOrName: string): Promise<void> {
  const quiet = (argv: string[]) => runtimeCli(argv).then(
    () => true,
    () => false,
  )
  if (runtime === 'docker') {
    await quiet(['docker', 'rm', '-f', '-v', idOrName])
    return
  }
  if (runtime === 'podman') {
    await quiet(['podman', 'rm', '-f', '-v', '-t', '0', idOrName])
    return
  }
  const ctr = (...args: string[]) => ['ctr', '-n', CTR_NAMESPACE, ...args]
  if (await taskPid(idOrName).catch(() => undefined)) {
    await quiet(ctr('tasks', 'kill', '-s', 'KILL', idOrName))
    const deadline = Date.now() + 10_000
    while ((await taskStatus(idOrName)) === 'RUNNING' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  }
  await quiet(ctr('tasks', 'rm', '-f', idOrName))
  await quiet(ctr('containers', 'rm', idOrName))
}

async function taskLine(id: string): Promise<string[] | undefined> {
  const out = await runtimeCli(['ctr', '-n', CTR_NAMESPACE, 'tasks', 'ls'])
  // TASK  PID  STATUS
  return out
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .find((cols) => cols[0] === id)
}

async function taskPid(id: string): Promise<number | undefined> {
  const pid = Number((await taskLine(id))?.[1])
  return pid > 0 ? pid : undefined
}

async function taskStatus(id: string): Promise<string | undefined> {
  return (await taskLine(id))?.[2]
}

export interface RunOptions {
  /** Default: a unique name (uniqueName()). */
  name?: string
  /** Added to faultline-test=1. */
  labels?: Record<string, string>
  /** Instead of the image's command (sleep 3600), e.g. ['sh', '-c', '...']. */
  command?: string[]
}

/**
 * Runs a container of TEST_IMAGE (its command: sleep 3600, or opts.command) with no network,
 * and resolves once it runs, with its id, name and init pid. Removed at teardown, also when this
 * call fails halfway.
 */
export async function runContainer(t: TestLike, runtime: TestRuntime, opts: RunOptions = {}): Promise<TestContainer> {
  const reason = runtimeUnavailable(runtime)
  if (reason) {
    throw new Error(`cannot run a ${runtime} container: ${reason}${required() ? ' (FAULTLINE_TEST_REQUIRE_RUNTIMES=1: CI must provide every runtime)' : ''}`)
  }
  const name = opts.name ?? uniqueName()
  const labels = { 'faultline-test': '1', ...opts.labels }
  const labelArgs = Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`])
  const command = opts.command ?? []
  // Registered first: a container created by a run that then failed is removed too.
  t.teardown(() => removeContainer(runtime, name))
  let id: string
  let pid: number | undefined
  if (runtime === 'docker') {
    id = (await runtimeCli(['docker', 'run', '-d', '--network', 'none', ...labelArgs, '--name', name, TEST_IMAGE, ...command])).trim()
    pid = Number((await runtimeCli(['docker', 'inspect', '-f', '{{.State.Pid}}', id])).trim())
  } else if (runtime === 'podman') {
    // The ulimits: podman's defaults exceed what this host grants (DESIGN.md section 6).
    const ulimits = ['--ulimit', 'nofile=4096:4096', '--ulimit', 'nproc=4096:4096']
    id = (await runtimeCli(['podman', 'run', '-d', '--network', 'none', ...ulimits, ...labelArgs, '--name', name, TEST_IMAGE, ...command])).trim()
    pid = Number((await runtimeCli(['podman', 'inspect', '-f', '{{.State.Pid}}', id])).trim())
  } else {
    // ctr gives the task a new network namespace with only lo unless --net-host; no CNI.
    await runtimeCli(['ctr', '-n', CTR_NAMESPACE, 'run', '-d', ...labelArgs, TEST_IMAGE, name, ...command])
    id = name
    pid = await taskPid(id)
  }
  if (!pid || !Number.isInteger(pid) || pid <= 0) throw new Error(`${runtime} container ${name} has no running init (pid ${pid})`)
  return { runtime, id, name, pid, labels, ...(runtime === 'containerd' ? { namespace: CTR_NAMESPACE } : {}) }
}

/** Inode of the network namespace of a process (what the agent records as netnsInode). */
export function netnsInodeOf(pid: number): number {
  return statSync(`/proc/${pid}/ns/net`).ino
}
