import { readFileSync } from 'node:fs'

/** Where the cgroup hierarchies are mounted, read from our own mountinfo (not PID 1's). */
export interface CgroupMounts {
  /** v1 controller (or name=...) -> mount point. */
  v1: Map<string, string>
  /** The cgroup2 mount, if any (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts). */
  v2?: string
}

const notControllers = new Set(['rw', 'ro', 'relatime', 'nsdelegate', 'memory_recursiveprot', 'noprefix', 'clone_children', 'xattr'])

export function readCgroupMounts(procRoot: string): CgroupMounts {
  const mounts: CgroupMounts = { v1: new Map() }
  let text = ''
  try {
    text = readFileSync(`${procRoot}/self/mountinfo`, 'utf8')
  } catch {
    return mounts
  }
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ')
    if (!left || !right) continue
    const mountPoint = left.split(' ')[4] ?? ''
    const [fstype, , superOpts = ''] = right.split(' ')
    if (fstype === 'cgroup2') mounts.v2 ??= mountPoint
    if (fstype === 'cgroup') {
      for (const o of superOpts.split(',')) {
        if (notControllers.has(o) || o.startsWith('release_agent')) continue
        if (!mounts.v1.has(o)) mounts.v1.set(o, mountPoint)
      }
    }
  }
  return mounts
}
