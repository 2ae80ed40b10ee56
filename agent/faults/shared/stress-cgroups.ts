import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { Type, type Static } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import type { CgroupMounts } from '../../targets/cgroupfs.js'
import { parseProcCgroup } from '../../targets/containers/cgroups.js'

/**
 * The cgroups a stressor is placed in: every hierarchy the target is in (each v1 hierarchy and
 * v2), or, for the host, cgroups of its own named faultline-<injection id>. Placement happens
 * while the stressor waits at its gate (see stress.ts), so it is charged to these cgroups from
 * its first instruction.
 */
export const CgroupDirSchema = Type.Object({
  hierarchy: Type.String({ description: '"unified" for cgroup v2, else the v1 hierarchy as /proc/<pid>/cgroup names it ("cpu", "cpu,cpuacct", "name=systemd")' }),
  /** The cgroup's path inside its hierarchy, as /proc/<pid>/cgroup shows it. */
  path: Type.String(),
  /** Its directory: the hierarchy's mount point joined with the path. */
  dir: Type.String(),
})
export type CgroupDir = Static<typeof CgroupDirSchema>

/** A cgroup the injection creates (host targets) and recovery removes. */
export const OwnCgroupSchema = Type.Object({
  ...CgroupDirSchema.properties,
  /** v1 cpuset: a new cgroup has no CPUs and no memory nodes until given its parent's. */
  cpuset: Type.Optional(Type.Object({ cpus: Type.String(), mems: Type.String() })),
})
export type OwnCgroup = Static<typeof OwnCgroupSchema>

function mountOf(hierarchy: string, mounts: CgroupMounts): string | undefined {
  if (hierarchy === 'unified') return mounts.v2
  return mounts.v1.get(hierarchy.split(',')[0]!)
}

/** The hierarchy a cgroup file lives in: the v1 one holding `controller`, else v2. */
export function hierarchyWith(cgroups: readonly CgroupDir[], controller: string): CgroupDir | undefined {
  return cgroups.find((c) => c.hierarchy !== 'unified' && c.hierarchy.split(',').includes(controller)) ?? cgroups.find((c) => c.hierarchy === 'unified')
}

/**
 * Cgroups from a /proc/<pid>/cgroup map (hierarchy -> path). Hierarchies this agent has not
 * mounted cannot be written to: they are listed in `unmounted` (the plan says so).
 */
export function cgroupDirs(paths: Record<string, string>, mounts: CgroupMounts): { cgroups: CgroupDir[]; unmounted: string[] } {
  const cgroups: CgroupDir[] = []
  const unmounted: string[] = []
  for (const [hierarchy, path] of Object.entries(paths)) {
    const mount = mountOf(hierarchy, mounts)
    if (!mount) {
      unmounted.push(hierarchy)
      continue
    }
    // v2 is listed even on hosts that only mount v1 (as "0::/"): only when mounted does it count
    cgroups.push({ hierarchy, path, dir: path === '/' ? mount : join(mount, path) })
  }
  cgroups.sort((a, b) => a.dir.localeCompare(b.dir))
  return { cgroups, unmounted }
}

/** Every cgroup of a process, read from /proc/<pid>/cgroup. */
export function cgroupsOfProcess(procRoot: string, pid: number, mounts: CgroupMounts): { cgroups: CgroupDir[]; unmounted: string[] } {
  let text: string
  try {
    text = readFileSync(join(procRoot, String(pid), 'cgroup'), 'utf8')
  } catch {
    throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', `process ${pid} exited before its cgroups could be read`)
  }
  return cgroupDirs(parseProcCgroup(text), mounts)
}

/**
 * Cgroups of the injection's own, one per mounted hierarchy, right under its root:
 * faultline-<id>, so a leftover is recognisable at a glance. Combined v1 hierarchies
 * (cpu,cpuacct) share one mount and get one cgroup.
 */
export function ownCgroupsFor(injectionId: string, mounts: CgroupMounts, rootCpuset: { cpus: string; mems: string } | undefined): OwnCgroup[] {
  const name = `faultline-${injectionId}`
  const byMount = new Map<string, string[]>()
  for (const [controller, mount] of mounts.v1) byMount.set(mount, [...(byMount.get(mount) ?? []), controller])
  const own: OwnCgroup[] = []
  for (const [mount, controllers] of byMount) {
    const cgroup: OwnCgroup = { hierarchy: controllers.sort().join(','), path: `/${name}`, dir: join(mount, name) }
    if (controllers.includes('cpuset')) {
      if (!rootCpuset) throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `cannot read the root cpuset at ${mount}`)
      cgroup.cpuset = rootCpuset
    }
    own.push(cgroup)
  }
  if (mounts.v2) own.push({ hierarchy: 'unified', path: `/${name}`, dir: join(mounts.v2, name) })
  return own.sort((a, b) => a.dir.localeCompare(b.dir))
}

/** The root cpuset's CPUs and memory nodes, which a new v1 cpuset cgroup must be given. */
export function readRootCpuset(mount: string): { cpus: string; mems: string } | undefined {
  try {
    return {
      cpus: readFileSync(join(mount, 'cpuset.cpus'), 'utf8').trim(),
      mems: readFileSync(join(mount, 'cpuset.mems'), 'utf8').trim(),
    }
  } catch {
    return undefined
  }
}

export function createOwnCgroup(c: OwnCgroup): void {
  try {
    mkdirSync(c.dir, { mode: 0o755 })
  } catch (err) {
    // The name carries the injection id, which the journal never gives twice: an existing one
    // is this injection's own, from an apply that was interrupted and is being retried.
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  }
  if (c.cpuset) {
    writeFileSync(join(c.dir, 'cpuset.cpus'), c.cpuset.cpus)
    writeFileSync(join(c.dir, 'cpuset.mems'), c.cpuset.mems)
  }
}

/** The pids in a cgroup (cgroup.procs); none when it is gone. */
export function cgroupPids(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number)
  } catch {
    return []
  }
}

/**
 * Removes one of the injection's own cgroups once it is empty. A cgroup whose last task has
 * just been killed may still count it for a moment (EBUSY): retried for up to timeoutMs.
 * Gone already counts as removed.
 */
export async function removeOwnCgroup(c: OwnCgroup, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      rmdirSync(c.dir)
      return
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') return
      if (code !== 'EBUSY' || Date.now() > deadline) throw new Error(`cannot remove cgroup ${c.dir}: ${(err as Error).message}`)
    }
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Moves a process into each cgroup (writes its pid to cgroup.procs), in order. */
export function placeInCgroups(pid: number, cgroups: readonly CgroupDir[]): void {
  for (const c of cgroups) {
    try {
      writeFileSync(join(c.dir, 'cgroup.procs'), String(pid))
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', `cgroup ${c.dir} is gone; the target left it or was removed`)
      throw new Error(`cannot move pid ${pid} into ${c.dir}: ${(err as Error).message}`)
    }
  }
}

/** Why the process is not where it should be, or undefined when it sits in every cgroup. */
export function misplacement(procRoot: string, pid: number, cgroups: readonly CgroupDir[]): string | undefined {
  let now: Record<string, string>
  try {
    now = parseProcCgroup(readFileSync(join(procRoot, String(pid), 'cgroup'), 'utf8'))
  } catch {
    return `pid ${pid} exited before it was released`
  }
  const wrong = cgroups.filter((c) => now[c.hierarchy] !== c.path)
  if (wrong.length === 0) return undefined
  return wrong.map((c) => `${c.hierarchy} is ${now[c.hierarchy] ?? '(none)'}, not ${c.path}`).join('; ')
}

// ---- memory ----------------------------------------------------------------------------------

const V1_UNLIMITED = 2n ** 62n

/**
 * The memory limit that binds a cgroup: the smallest of its own limit, its ancestors' and the
 * host's RAM (v1 memory.limit_in_bytes, v2 memory.max; "max" and v1's huge "unlimited" value
 * count as none).
 */
export function memoryLimit(memcg: CgroupDir, memTotalBytes: number): { bytes: number; source: string } {
  let best = { bytes: memTotalBytes, source: 'the host RAM (MemTotal; the cgroup has no lower limit)' }
  const file = memcg.hierarchy === 'unified' ? 'memory.max' : 'memory.limit_in_bytes'
  const mount = memcg.path === '/' ? memcg.dir : memcg.dir.slice(0, memcg.dir.length - memcg.path.length)
  for (let dir = memcg.dir; ; dir = dirname(dir)) {
    let text: string | undefined
    try {
      text = readFileSync(join(dir, file), 'utf8').trim()
    } catch {
      text = undefined // the root cgroup of v2 has no memory.max
    }
    if (text && /^[0-9]+$/.test(text) && BigInt(text) < V1_UNLIMITED && Number(text) < best.bytes) {
      best = { bytes: Number(text), source: `${file} of ${dir === mount ? '/' : dir.slice(mount.length)}` }
    }
    if (dir.length <= mount.length) break
  }
  return best
}

/** Where the kernel counts OOM kills of a memory cgroup: v1 memory.oom_control, v2 memory.events. */
export function oomCounterFile(memcg: CgroupDir): string {
  return join(memcg.dir, memcg.hierarchy === 'unified' ? 'memory.events' : 'memory.oom_control')
}

/** The "oom_kill N" count of that file; undefined when unreadable. */
export function readOomKills(file: string): number | undefined {
  try {
    const m = /^oom_kill (\d+)$/m.exec(readFileSync(file, 'utf8'))
    return m ? Number(m[1]) : undefined
  } catch {
    return undefined
  }
}

export function memTotalBytes(procRoot: string): number {
  const m = /^MemTotal:\s+(\d+) kB$/m.exec(readFileSync(join(procRoot, 'meminfo'), 'utf8'))
  if (!m) throw new Error(`no MemTotal in ${procRoot}/meminfo`)
  return Number(m[1]) * 1024
}
