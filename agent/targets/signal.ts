import { constants as osConstants } from 'node:os'
import { closeFd, pidfdOpen, pidfdSendSignal } from '../native/libc.js'
import { isGoneError, readStat } from './procfs.js'

export type SignalName = keyof typeof osConstants.signals

/** "delivered", or why not: the process exited, or its pid now belongs to another process. */
export type SignalOutcome = 'delivered' | 'exited' | 'pid-reused'

let pidfdWorks: boolean | undefined

/**
 * Sends a signal to exactly the process named by (pid, startTime), never to a process that
 * reused the pid. With pidfds the check is race-free: the pidfd pins the process that held the
 * pid when it was opened, and a start-time read after the open proves that process is ours
 * (a reused pid always has a later start time). Kernels without pidfd_open (< 5.3) fall back
 * to kill(2) right after the start-time check, which leaves a window of microseconds.
 */
export function signalExactProcess(
  procRoot: string,
  pid: number,
  startTime: number,
  signal: SignalName,
): SignalOutcome {
  const signo = osConstants.signals[signal]
  let fd: number | undefined
  if (pidfdWorks !== false) {
    try {
      fd = pidfdOpen(pid)
      pidfdWorks = true
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ESRCH') return 'exited'
      if (code !== 'ENOSYS') throw err
      pidfdWorks = false
    }
  }
  try {
    const stat = readStat(procRoot, pid)
    if (!stat || stat.state === 'Z' || stat.state === 'X') return 'exited'
    if (stat.startTime !== startTime) return 'pid-reused'
    try {
      if (fd !== undefined) pidfdSendSignal(fd, signo)
      else process.kill(pid, signal)
    } catch (err) {
      if (isGoneError(err)) return 'exited'
      throw err
    }
    return 'delivered'
  } finally {
    if (fd !== undefined) closeFd(fd)
  }
}
