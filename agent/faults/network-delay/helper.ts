import { spawn } from 'node:child_process'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { setPriority } from 'node:os'
import { join } from 'node:path'
import type { Feature } from '../../../protocol/capabilities.js'
import { run } from '../../exec.js'
import { listPids, readStat } from '../../targets/procfs.js'
import { signalExactProcess } from '../../targets/signal.js'
import { nativePath } from '../../native/paths.js'

/**
 * faultline-netdelay (native/netdelay): the process that holds the packets of one NFQUEUE queue
 * for network-delay where the kernel lacks sch_netem. Started detached (own session and process
 * group) inside the target's network namespace; named by pid + start time from then on, so a
 * reused pid is never signalled.
 */
export const HELPER_NAME = 'faultline-netdelay'
/** /proc/<pid>/stat shows the first 15 characters of the executable's name. */
const HELPER_COMM = HELPER_NAME.slice(0, 15)

/** The helper binary: <package root>/native/netdelay/faultline-netdelay. */
export function netdelayHelperPath(): string {
  return nativePath('netdelay', HELPER_NAME)
}

/**
 * Capability probe: the helper is built, its shared libraries load, and it can bind and
 * configure an NFQUEUE queue (in a throwaway network namespace, so nothing on the host is touched).
 */
export async function probeNetdelayHelper(unshare: string | undefined): Promise<Feature> {
  const path = netdelayHelperPath()
  if (!existsSync(path)) {
    return { available: false, detail: `${path} is not built: install libnetfilter-queue-dev, then run npm run build` }
  }
  if (!unshare) return { available: false, detail: 'unshare (util-linux) is not installed, so the helper cannot be probed safely' }
  const res = await run([unshare, '--net', '--', path, '--check'])
  if (res.code === 0) return { available: true, detail: `${path} binds an NFQUEUE queue (tried in a throwaway netns)` }
  const err = res.stderr.trim().split('\n').slice(-2).join(' ').slice(0, 300)
  const hint = /libnetfilter_queue|libnfnetlink/.test(err) ? ' (install libnetfilter-queue1)' : ''
  return { available: false, detail: `${path} --check failed: ${err || `exit ${res.code ?? res.signal}`}${hint}` }
}

export interface HelperProcess {
  pid: number
  startTime: number
}

const READY_TIMEOUT_MS = 5_000
/** The helper's nice value (see startHelper). */
export const HELPER_NICE = -10

/**
 * Starts the helper (argv already enters the namespace: nsenter execs it in place, so the pid
 * is the helper's) and resolves once it printed "ready", i.e. the queue is bound. Its stdio is
 * detached from the agent's afterwards: the helper ignores SIGPIPE and prints nothing after
 * "ready" except a last error line, so it outlives the agent without being tied to its pipes.
 */
export function startHelper(argv: readonly string[], procRoot: string): Promise<HelperProcess> {
  const [file, ...args] = argv
  if (!file) return Promise.reject(new Error('empty helper argv'))
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
    })
    let stdout = ''
    let stderr = ''
    let settled = false
    const finish = (err: Error | undefined, value?: HelperProcess) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      child.stdout.destroy()
      child.stderr.destroy()
      child.unref()
      if (err) {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
        reject(err)
      } else resolve(value!)
    }
    const timer = setTimeout(() => finish(new Error(`${HELPER_NAME} did not report ready within ${READY_TIMEOUT_MS} ms: ${stderr.trim()}`)), READY_TIMEOUT_MS)
    child.on('error', (err) => finish(new Error(`${HELPER_NAME} could not be started: ${err.message}`)))
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString()
      if (!stdout.includes('ready\n')) return
      const stat = child.pid === undefined ? undefined : readStat(procRoot, child.pid)
      if (!stat || stat.comm !== HELPER_COMM) return finish(new Error(`${HELPER_NAME} reported ready but pid ${child.pid} is not it`))
      // It sleeps until the next packet is due: a higher priority makes it wake on time on a
      // busy host, at the cost of microseconds of CPU per packet.
      try {
        setPriority(stat.pid, HELPER_NICE)
      } catch {
        /* without CAP_SYS_NICE it keeps the default priority */
      }
      finish(undefined, { pid: stat.pid, startTime: stat.startTime })
    })
    child.on('exit', (code, signal) => {
      const why = stderr.trim().split('\n').slice(-2).join(' ') || `exit ${code ?? signal}`
      finish(new Error(`${HELPER_NAME} exited before it was ready: ${why}`))
    })
  })
}

function gone(procRoot: string, h: HelperProcess): boolean {
  const stat = readStat(procRoot, h.pid)
  return !stat || stat.startTime !== h.startTime || stat.state === 'Z' || stat.state === 'X'
}

async function waitGone(procRoot: string, h: HelperProcess, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!gone(procRoot, h)) {
    if (Date.now() >= deadline) return false
    await new Promise((r) => setTimeout(r, 10))
  }
  return true
}

const STOP_GRACE_MS = 2_000

/**
 * SIGTERM (the helper accepts every held packet at once and unbinds), SIGKILL after 2 s.
 * Only ever to the recorded process: an exited helper or a reused pid counts as stopped.
 */
export async function stopHelper(procRoot: string, h: HelperProcess): Promise<string | undefined> {
  const outcome = signalExactProcess(procRoot, h.pid, h.startTime, 'SIGTERM')
  if (outcome === 'exited') return `${HELPER_NAME} (pid ${h.pid}) had already exited`
  if (outcome === 'pid-reused') return `${HELPER_NAME} (pid ${h.pid}) had exited; its pid now belongs to another process, which was left alone`
  if (await waitGone(procRoot, h, STOP_GRACE_MS)) return undefined
  signalExactProcess(procRoot, h.pid, h.startTime, 'SIGKILL')
  await waitGone(procRoot, h, 1_000)
  return `${HELPER_NAME} (pid ${h.pid}) did not exit within ${STOP_GRACE_MS} ms of SIGTERM and was killed`
}

/**
 * Helpers bound to `queue` in the network namespace `netnsInode`: at most one can be (a queue
 * has one binder per namespace). Recovery uses it to find a helper the agent started but died
 * before recording.
 */
export function findHelpers(procRoot: string, queue: number, netnsInode: number): HelperProcess[] {
  const found: HelperProcess[] = []
  for (const pid of listPids(procRoot)) {
    const stat = readStat(procRoot, pid)
    if (!stat || stat.comm !== HELPER_COMM || stat.state === 'Z') continue
    try {
      const argv = readFileSync(join(procRoot, String(pid), 'cmdline'), 'utf8').split('\0')
      if (argv[1] !== String(queue)) continue
      if (statSync(join(procRoot, String(pid), 'ns', 'net')).ino !== netnsInode) continue
    } catch {
      continue
    }
    found.push({ pid, startTime: stat.startTime })
  }
  return found
}
