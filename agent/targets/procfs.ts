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

/** The real uid of a process (/proc/<pid>/status, "Uid:" line); undefined when it is gone. */
export function readUid(procRoot: string, pid: number): number | undefined {
  try {
    const m = /^Uid:\s+([0-9]+)/m.exec(readFileSync(join(procRoot, String(pid), 'status'), 'utf8'))
    return m ? Number(m[1]) : undefined
  } catch (err) {
    if (isGoneError(err)) return undefined
    throw err
  }
}

/** User names by uid, from a passwd file (the host's /etc/passwd); empty when it cannot be read. */
export function readUserNames(passwdPath: string): Map<number, string> {
  const names = new Map<number, string>()
  let text = ''
  try {
    text = readFileSync(passwdPath, 'utf8')
  } catch {
    return names
  }
  for (const line of text.split('\n')) {
    const [name, , uid] = line.split(':')
    if (name && uid && /^[0-9]+$/.test(uid) && !names.has(Number(uid))) names.set(Number(uid), name)
  }
  return names
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

/** One line of /proc/<pid>/maps. Addresses are bigints: [vsyscall] lies above 2^53. */
export interface Mapping {
  start: bigint
  end: bigint
  /** "r-xp", "rw-p", ... */
  perms: string
  offset: bigint
  inode: number
  /** The path or pseudo-name ("[vdso]", "[stack]"); "" for an anonymous mapping. */
  name: string
}

/** Parses /proc/<pid>/maps (proc(5)): `start-end perms offset dev inode [name]`. */
export function parseMaps(text: string): Mapping[] {
  const out: Mapping[] = []
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ (\d+)\s*(.*)$/.exec(line)
    if (!m) continue
    out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), perms: m[3]!, offset: BigInt(`0x${m[4]}`), inode: Number(m[5]), name: m[6]!.trim() })
  }
  return out
}

/** A process's mappings; undefined when it is gone (or its maps are not readable). */
export function readMaps(procRoot: string, pid: number): Mapping[] | undefined {
  return readMapsFile(join(procRoot, String(pid), 'maps'))
}

/** The mappings in a maps file (e.g. /proc/self/maps); undefined when it is gone or not readable. */
export function readMapsFile(path: string): Mapping[] | undefined {
  try {
    return parseMaps(readFileSync(path, 'utf8'))
  } catch (err) {
    if (isGoneError(err) || (err as NodeJS.ErrnoException).code === 'EACCES') return undefined
    throw err
  }
}
