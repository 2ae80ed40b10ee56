import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'

/** PF_KTHREAD from include/linux/sched.h: the process is a kernel thread. */
const PF_KTHREAD = 0x00200000

export interface ProcStat {
  pid: number
  comm: string
  /** State letter: R, S, D, T (stopped), t (traced), Z (zombie), X, I ... */
  state: string
  ppid: number
  flags: number
  /** Field 22: start time in clock ticks after boot. With the pid it names one process for ever. */
  startTime: number
}

/**
 * Parses /proc/<pid>/stat. comm sits in parentheses and may itself contain spaces and ")",
 * so the fields after it are split from the last ")" (see proc_pid_stat(5)).
 */
export function parseStat(text: string): Omit<ProcStat, 'pid'> & { pid: number } {
  const open = text.indexOf('(')
  const close = text.lastIndexOf(')')
  if (open < 0 || close < open) throw new Error('malformed /proc/<pid>/stat')
  const pid = Number(text.slice(0, open).trim())
  const comm = text.slice(open + 1, close)
  // fields[0] is field 3 (state), so field N is fields[N - 3]
  const fields = text.slice(close + 2).split(' ')
  const num = (n: number): number => Number(fields[n - 3])
  return {
    pid,
    comm,
    state: fields[0] ?? '?',
    ppid: num(4),
    flags: num(9),
    startTime: num(22),
  }
}

/** Reads one process's stat; undefined when the process does not exist (any more). */
export function readStat(procRoot: string, pid: number): ProcStat | undefined {
  try {
    return parseStat(readFileSync(join(procRoot, String(pid), 'stat'), 'utf8'))
  } catch (err) {
    if (isGoneError(err)) return undefined
    throw err
  }
}

export function readCmdline(procRoot: string, pid: number): string {
  try {
    const raw = readFileSync(join(procRoot, String(pid), 'cmdline'), 'utf8')
    return raw.replace(/\0+$/, '').split('\0').join(' ')
  } catch (err) {
    if (isGoneError(err)) return ''
    throw err
  }
}

export function isKernelThread(stat: ProcStat): boolean {
  return (stat.flags & PF_KTHREAD) !== 0
}

/** Every pid (thread-group leader) under procRoot. */
export function listPids(procRoot: string): number[] {
  const pids: number[] = []
  for (const name of readdirSync(procRoot)) {
    if (/^[0-9]+$/.test(name)) pids.push(Number(name))
  }
  return pids.sort((a, b) => a - b)
}

/** ENOENT (gone) and ESRCH (exiting) both mean "no such process". */
export function isGoneError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code === 'ENOENT' || code === 'ESRCH'
}
