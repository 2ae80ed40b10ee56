import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { isKernelThread, listPids, readMaps, readStat, type ProcStat } from '../../targets/procfs.js'

/**
 * Which processes a time-skew acts on, read from /proc and cgroupfs: the processes of a
 * container (its cgroup, sub-cgroups included), the descendants of a process, and the
 * mappings that tell a patched process from an unpatched one.
 */

/** The [vdso] start and the one-page anonymous r-x mappings (where our page may be) of a process. */
export interface VdsoView {
  vdso: string
  execPages: Set<string>
}

/** From /proc/<pid>/maps; undefined when the process is gone or has no [vdso]. */
export function readVdsoView(procRoot: string, pid: number): VdsoView | undefined {
  let vdso: string | undefined
  const execPages = new Set<string>()
  for (const m of readMaps(procRoot, pid) ?? []) {
    if (m.name === '[vdso]') vdso = `0x${m.start.toString(16)}`
    else if (m.perms === 'r-xp' && m.inode === 0 && m.name === '' && m.end - m.start === 4096n) execPages.add(`0x${m.start.toString(16)}`)
  }
  return vdso ? { vdso, execPages } : undefined
}

/** A process that may be skewed: not the agent, not pid 1, not a kernel thread, not a zombie. */
export function skewable(stat: ProcStat | undefined, selfPid: number): stat is ProcStat {
  return !!stat && stat.pid !== 1 && stat.pid !== selfPid && !isKernelThread(stat) && stat.state !== 'Z' && stat.state !== 'X'
}

/** Every pid in a container's cgroup directory and the cgroups below it (a container may nest cgroups). */
export function cgroupPids(dirs: readonly string[]): number[] {
  const pids = new Set<number>()
  const walk = (dir: string, depth: number) => {
    let text = ''
    try {
      text = readFileSync(join(dir, 'cgroup.procs'), 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw err
    }
    for (const line of text.split('\n')) if (line) pids.add(Number(line))
    if (depth > 16) return
    for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) walk(join(dir, entry.name), depth + 1)
  }
  for (const dir of dirs) walk(dir, 0)
  return [...pids].sort((a, b) => a - b)
}

let childrenFiles: boolean | undefined

/**
 * Every descendant of the given pids. With /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN)
 * only the subtree is read; without it, every process's parent is read from its stat.
 */
export function descendants(procRoot: string, roots: readonly number[]): number[] {
  childrenFiles ??= existsSync(join(procRoot, String(process.pid), 'task', String(process.pid), 'children'))
  const found = new Set<number>()
  if (childrenFiles) {
    const queue = [...roots]
    while (queue.length > 0) {
      const pid = queue.pop()!
      let tids: string[]
      try {
        tids = readdirSync(join(procRoot, String(pid), 'task'))
      } catch {
        continue
      }
      for (const tid of tids) {
        let text = ''
        try {
          text = readFileSync(join(procRoot, String(pid), 'task', tid, 'children'), 'utf8')
        } catch {
          continue
        }
        for (const word of text.split(' ')) {
          const child = Number(word)
          if (child > 0 && !found.has(child)) {
            found.add(child)
            queue.push(child)
          }
        }
      }
    }
  } else {
    const parentOf = new Map<number, number[]>()
    for (const pid of listPids(procRoot)) {
      const stat = readStat(procRoot, pid)
      if (stat) parentOf.set(stat.ppid, [...(parentOf.get(stat.ppid) ?? []), pid])
    }
    const queue = [...roots]
    while (queue.length > 0) {
      for (const child of parentOf.get(queue.pop()!) ?? []) {
        if (!found.has(child)) {
          found.add(child)
          queue.push(child)
        }
      }
    }
  }
  for (const r of roots) found.delete(r)
  return [...found].sort((a, b) => a - b)
}

/**
 * Processes whose address space still carries one of the given patches: fork copies the
 * patched vDSO and our page to the child at the same addresses, so a child forked (without
 * exec) during the skew is skewed too, wherever it was reparented. Matched on the [vdso] start
 * and, when known, the page; the helper checks the bytes before it writes anything.
 */
export function findCarriers(
  procRoot: string,
  selfPid: number,
  patched: readonly { vdso: string; page?: string }[],
): { pid: number; stat: ProcStat; match: number }[] {
  const byVdso = new Map<string, number[]>()
  patched.forEach((p, i) => byVdso.set(p.vdso, [...(byVdso.get(p.vdso) ?? []), i]))
  const out: { pid: number; stat: ProcStat; match: number }[] = []
  if (byVdso.size === 0) return out
  for (const pid of listPids(procRoot)) {
    if (pid === selfPid || pid === 1) continue
    const view = readVdsoView(procRoot, pid)
    const candidates = view && byVdso.get(view.vdso)
    if (!candidates) continue
    const match = candidates.find((i) => patched[i]!.page === undefined || view.execPages.has(patched[i]!.page!))
    if (match === undefined) continue
    const stat = readStat(procRoot, pid)
    if (skewable(stat, selfPid)) out.push({ pid, stat, match })
  }
  return out
}

/**
 * The directory holding a container's processes: its v2 cgroup, or else one v1 hierarchy it has
 * its own cgroup in (pids, freezer and memory first: runc always joins those). Every process of
 * the container is in it, whatever it forked or `docker exec` added.
 */
export function containerCgroupDir(cgroupPaths: Record<string, string>, mounts: { v1: Map<string, string>; v2?: string }): string | undefined {
  const candidates: string[] = []
  const v2 = cgroupPaths.unified
  if (mounts.v2 && v2 && v2 !== '/') candidates.push(join(mounts.v2, v2))
  const v1Keys = Object.keys(cgroupPaths).filter((k) => k !== 'unified')
  const preferred = ['pids', 'freezer', 'memory']
  v1Keys.sort((a, b) => rank(a) - rank(b))
  function rank(key: string): number {
    const i = preferred.findIndex((p) => key.split(',').includes(p))
    return i < 0 ? preferred.length : i
  }
  for (const key of v1Keys) {
    const path = cgroupPaths[key]!
    const mount = key.split(',').map((c) => mounts.v1.get(c)).find((m) => m !== undefined)
    if (mount && path !== '/') candidates.push(join(mount, path))
  }
  return candidates.find((dir) => existsSync(join(dir, 'cgroup.procs')))
}
