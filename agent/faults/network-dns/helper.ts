import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import type { Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import { readStat } from '../../targets/procfs.js'
import { signalExactProcess } from '../../targets/signal.js'

/** One process for ever: a pid alone may be reused, pid + start time may not. */
export interface ExactProcess {
  pid: number
  startTime: number
}

const READY_TIMEOUT_MS = 15_000

/**
 * The command that runs the resolver: the compiled dist/.../resolver.js next to this module when
 * the agent runs from dist/, or resolver.ts through tsx's loader when it runs from the sources
 * (tests, `node --import tsx`). Both are found relative to this module, never through PATH or
 * the working directory.
 */
export function resolverCommand(): string[] {
  const here = fileURLToPath(import.meta.url)
  if (here.endsWith('.ts')) return [process.execPath, '--import', import.meta.resolve('tsx'), join(dirname(here), 'resolver.ts')]
  return [process.execPath, join(dirname(here), 'resolver.js')]
}

/**
 * The agent's end of each running resolver's control socket. Holding it open is what keeps a
 * resolver alive: when the agent dies the kernel closes it and the resolver removes its own
 * redirect and exits (see resolver.ts).
 */
const controls = new Map<string, Socket>()
const keyOf = (p: ExactProcess) => `${p.pid}:${p.startTime}`

/**
 * Starts the resolver (argv from the plan) detached — its own session and process group, stdin
 * and stdout on /dev/null — and waits for its ready line on fd 3. `started` runs as soon as its
 * pid and start time are known, before it is ready, so the caller can checkpoint them: from then
 * on a crash of the agent at any point leaves a journal entry that names exactly this process.
 */
export async function startResolver(
  argv: readonly string[],
  opts: { procRoot: string; log: Logger; started(proc: ExactProcess): void },
): Promise<ExactProcess & { listening: string[] }> {
  const [file, ...args] = argv
  if (!file) throw new Error('empty resolver argv')
  const child = spawn(file, args, { detached: true, cwd: '/', stdio: ['ignore', 'ignore', 'pipe', 'pipe'] })
  const spawnError = new Promise<never>((_, reject) => child.once('error', reject))
  spawnError.catch(() => undefined)
  if (child.pid === undefined) await spawnError
  const pid = child.pid!
  const stat = readStat(opts.procRoot, pid)
  let stderr = ''
  child.stderr!.on('data', (chunk: Buffer) => {
    if (stderr.length < 4_000) stderr += chunk.toString()
  })
  const exited = new Promise<string>((resolve) =>
    child.once('exit', (code, signal) => resolve(`exit ${code ?? signal}${stderr.trim() ? `: ${stderr.trim().split('\n').slice(-3).join(' ')}` : ''}`)),
  )
  if (!stat || stat.state === 'Z') throw new Error(`the resolver exited at once (${await exited})`)
  const proc: ExactProcess = { pid, startTime: stat.startTime }
  try {
    opts.started(proc)
  } catch (err) {
    // Not recorded anywhere, so nobody else could stop it.
    signalExactProcess(opts.procRoot, pid, proc.startTime, 'SIGKILL')
    throw err
  }

  const control = child.stdio[3] as Socket
  let line = ''
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    control.on('data', (chunk: Buffer) => {
      line += chunk.toString()
      const nl = line.indexOf('\n')
      if (nl < 0) return
      try {
        resolve(JSON.parse(line.slice(0, nl)) as Record<string, unknown>)
      } catch {
        reject(new Error(`the resolver said something unexpected: ${line.slice(0, 200)}`))
      }
    })
  })
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the resolver was not ready after ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS)
  })
  try {
    const said = await Promise.race([ready, timeout, exited.then((why) => Promise.reject(new Error(`the resolver exited before it was ready (${why})`)))])
    if (typeof said.error === 'string') throw new Error(said.error)
    if (said.ready !== true) throw new Error(`the resolver said something unexpected: ${JSON.stringify(said).slice(0, 200)}`)
    // From here the resolver never writes again: stop reading its stderr, and let neither the
    // child nor its control socket keep the agent's event loop alive.
    child.stderr!.destroy()
    control.removeAllListeners('data')
    control.on('error', () => undefined)
    control.on('close', () => {
      if (controls.delete(keyOf(proc))) opts.log.warn({ pid }, 'the DNS fault resolver exited on its own; it removed its redirect, so the fault is no longer in effect')
    })
    control.unref()
    child.unref()
    controls.set(keyOf(proc), control)
    return { ...proc, listening: Array.isArray(said.listening) ? said.listening.map(String) : [] }
  } finally {
    clearTimeout(timer)
  }
}

/**
 * SIGKILL to exactly the recorded resolver (pidfd + start-time check), then waits until it is
 * gone. A resolver that already exited counts as stopped; a pid that now belongs to another
 * process is never signalled.
 */
export async function stopResolver(procRoot: string, proc: ExactProcess): Promise<{ note?: string }> {
  const control = controls.get(keyOf(proc))
  controls.delete(keyOf(proc))
  const outcome = signalExactProcess(procRoot, proc.pid, proc.startTime, 'SIGKILL')
  control?.destroy()
  if (outcome === 'exited') return { note: `the resolver (pid ${proc.pid}) had already exited` }
  if (outcome === 'pid-reused') return { note: `the resolver (pid ${proc.pid}) had already exited; the pid now belongs to another process, which was left alone` }
  const deadline = Date.now() + 5_000
  for (;;) {
    const stat = readStat(procRoot, proc.pid)
    if (!stat || stat.startTime !== proc.startTime || stat.state === 'Z' || stat.state === 'X') return {}
    if (Date.now() > deadline) throw new Error(`the resolver (pid ${proc.pid}) did not exit within 5 s of SIGKILL`)
    await new Promise((r) => setTimeout(r, 10))
  }
}
