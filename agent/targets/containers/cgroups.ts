import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { listPids, readStat, type ProcStat } from '../procfs.js'

/**
 * Container discovery that needs no runtime: every process's cgroup path (/proc/<pid>/cgroup,
 * v1 and v2) is matched against the layouts runtimes use. Runtime sockets only add names,
 * labels and images on top (runtimes.ts, merged in index.ts).
 */
export type RuntimeName = 'docker' | 'containerd' | 'podman' | 'crio' | 'lxc' | 'nspawn'

export interface CgroupContainer {
  id: string
  runtime: RuntimeName
  /** containerd namespace (e.g. "default", "k8s.io", "moby") when known. */
  namespace?: string
  /** Kubernetes pod UID when the container runs under the kubelet. */
  podUid?: string
  /** Name known from the cgroup layout alone (LXC, nspawn). */
  name?: string
  /** The container's cgroup in each hierarchy: "unified" for v2, else the v1 controller list. */
  cgroupPaths: Record<string, string>
  pids: number[]
  initPid: number
  initStartTime: number
  netnsInode?: number
}

export interface DiscoveryPaths {
  procRoot: string
  /** containerd's task state dir: /run/containerd/io.containerd.runtime.v2.task/<ns>/<id>. */
  containerdTaskDir: string
}

const hex64 = '([0-9a-f]{64})'
interface Layout {
  re: RegExp
  build(m: RegExpExecArray): { id: string; runtime: RuntimeName; namespace?: string; podUid?: string; name?: string }
}

/**
 * Cgroup path layouts, most specific first. Sources: moby's cgroupfs/systemd drivers
 * ("/docker/<id>", "docker-<id>.scope"), libpod ("libpod-<id>"), CRI-O ("crio-<id>.scope"),
 * the kubelet ("kubepods/.../pod<uid>/<id>", "cri-containerd-<id>.scope"), LXC
 * ("lxc.payload.<name>", "/lxc/<name>"), systemd-nspawn ("machine-<name>.scope").
 */
const layouts: Layout[] = [
  { re: new RegExp(`kubepods[^/]*(?:/[^/]+)*?/(?:kubepods(?:-[a-z]+)?-)?pod([0-9a-f_-]{36})(?:\\.slice)?/(?:cri-containerd-|crio-|docker-)?${hex64}(?:\\.scope)?$`), build: (m) => ({ id: m[2]!, runtime: /crio-/.test(m[0]) ? 'crio' : /docker-/.test(m[0]) ? 'docker' : 'containerd', namespace: 'k8s.io', podUid: m[1]!.replace(/_/g, '-') }) },
  { re: new RegExp(`cri-containerd-${hex64}\\.scope$`), build: (m) => ({ id: m[1]!, runtime: 'containerd', namespace: 'k8s.io' }) },
  { re: new RegExp(`(?:^|/)docker[-/]${hex64}(?:\\.scope)?$`), build: (m) => ({ id: m[1]!, runtime: 'docker', namespace: 'moby' }) },
  { re: new RegExp(`(?:^|/)libpod-${hex64}(?:\\.scope)?(?:/container)?$`), build: (m) => ({ id: m[1]!, runtime: 'podman' }) },
  { re: new RegExp(`(?:^|/)crio-${hex64}(?:\\.scope)?$`), build: (m) => ({ id: m[1]!, runtime: 'crio' }) },
  { re: /(?:^|\/)lxc\.payload\.([^/]+)$|^\/lxc\/([^/]+)$/, build: (m) => ({ id: (m[1] ?? m[2])!, runtime: 'lxc', name: (m[1] ?? m[2])! }) },
  {
    re: /machine\.slice\/(?:systemd-nspawn@([^/]+)\.service|machine-([^/]+)\.scope)(?:\/payload)?$/,
    build: (m) => {
      const name = unescapeSystemd((m[1] ?? m[2])!)
      return { id: name, runtime: 'nspawn', name }
    },
  },
]

/**
 * Cgroups that sit inside a container's cgroup but hold the runtime, not the container: with
 * the unified hierarchy systemd-nspawn keeps itself in "<machine>/supervisor" and the payload in
 * "<machine>/payload". Walking up from the supervisor would otherwise count nspawn itself as
 * one of the container's processes.
 */
const notContainer = /machine\.slice\/(?:systemd-nspawn@[^/]+\.service|machine-[^/]+\.scope)\/supervisor(?:\/|$)/

function unescapeSystemd(s: string): string {
  return s.replace(/\\x([0-9a-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)))
}

/** Parses /proc/<pid>/cgroup: hierarchy key ("unified" or the controller list) -> path. */
export function parseProcCgroup(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const first = line.indexOf(':')
    const second = line.indexOf(':', first + 1)
    if (first < 0 || second < 0) continue
    const controllers = line.slice(first + 1, second)
    out[controllers === '' ? 'unified' : controllers] = line.slice(second + 1)
  }
  return out
}

/** The path that identifies the container: v2's, unless v2 is unused ("/"), then any v1 one. */
function identifyingPaths(paths: Record<string, string>): string[] {
  const ordered = [paths.unified, paths['name=systemd'], ...Object.values(paths)]
  return [...new Set(ordered.filter((p): p is string => Boolean(p) && p !== '/'))]
}

/**
 * Matches one cgroup path. containerd's own layout ("/<namespace>/<id>") is too generic to
 * trust by shape alone: it counts only when containerd's task state for it exists.
 */
export function matchCgroupPath(path: string, paths: Pick<DiscoveryPaths, 'containerdTaskDir'>) {
  for (const layout of layouts) {
    const m = layout.re.exec(path)
    if (m) return layout.build(m)
  }
  const plain = /^\/([A-Za-z0-9._-]+)\/([A-Za-z0-9._-]+)$/.exec(path)
  if (plain && existsSync(join(paths.containerdTaskDir, plain[1]!, plain[2]!))) {
    return { id: plain[2]!, runtime: 'containerd' as const, namespace: plain[1]! }
  }
  return undefined
}

/** Every container on the host, found through the cgroups of its processes. */
export function discoverFromCgroups(paths: DiscoveryPaths): CgroupContainer[] {
  const byKey = new Map<string, CgroupContainer & { stats: ProcStat[]; rootPath: string }>()
  // Many processes share a cgroup (a container's, a daemon's): match each path once per scan.
  const matched = new Map<string, ReturnType<typeof matchCgroupPath>>()
  const matchOnce = (path: string) => {
    if (!matched.has(path)) matched.set(path, matchCgroupPath(path, paths))
    return matched.get(path)
  }
  for (const pid of listPids(paths.procRoot)) {
    let text: string
    try {
      text = readFileSync(join(paths.procRoot, String(pid), 'cgroup'), 'utf8')
    } catch {
      continue
    }
    const cgroupPaths = parseProcCgroup(text)
    const candidates = identifyingPaths(cgroupPaths)
    if (candidates.some((p) => notContainer.test(p))) continue
    let found: ReturnType<typeof matchCgroupPath> | undefined
    let rootPath = ''
    for (const candidate of candidates) {
      // A process may sit in a sub-cgroup of the container: walk up to the matching level.
      for (let p = candidate; p && p !== '/'; p = p.slice(0, p.lastIndexOf('/')) || '/') {
        found = matchOnce(p)
        if (found) {
          rootPath = p
          break
        }
      }
      if (found) break
    }
    if (!found) continue
    const stat = readStat(paths.procRoot, pid)
    if (!stat || stat.state === 'Z') continue
    const key = `${found.runtime}/${found.namespace ?? ''}/${found.id}`
    let entry = byKey.get(key)
    if (!entry) {
      entry = { ...found, cgroupPaths: containerLevel(cgroupPaths, rootPath), pids: [], initPid: 0, initStartTime: 0, stats: [], rootPath }
      byKey.set(key, entry)
    }
    entry.pids.push(pid)
    entry.stats.push(stat)
  }
  const out: CgroupContainer[] = []
  const pidnsOf = pidnsReader(paths.procRoot)
  for (const { stats, rootPath: _root, ...c } of byKey.values()) {
    const init = pickInit(stats, pidnsOf)
    // LXC and nspawn are recognised by cgroup names alone, which other things share (libvirt
    // puts its VMs in machine-qemu\x2d1\x2dvm.scope): without a pid namespace of its own,
    // this is not a container we can enter, and its "netns" would be the host's.
    if (!init.ownPidns && (c.runtime === 'lxc' || c.runtime === 'nspawn')) continue
    c.initPid = init.stat.pid
    c.initStartTime = init.stat.startTime
    try {
      c.netnsInode = statSync(join(paths.procRoot, String(init.stat.pid), 'ns', 'net')).ino
    } catch {
      /* exited meanwhile */
    }
    c.pids.sort((a, b) => a - b)
    out.push(c)
  }
  return out.sort((a, b) => a.runtime.localeCompare(b.runtime) || a.id.localeCompare(b.id))
}

/** Inode of a process's pid namespace, cached for one discovery; undefined when unreadable. */
function pidnsReader(procRoot: string): (pid: number) => number | undefined {
  const cache = new Map<number, number | undefined>()
  return (pid) => {
    if (cache.has(pid)) return cache.get(pid)
    let ino: number | undefined
    try {
      ino = statSync(join(procRoot, String(pid), 'ns', 'pid')).ino
    } catch {
      ino = undefined
    }
    cache.set(pid, ino)
    return ino
  }
}

/**
 * The container's init: the oldest of its processes that starts a pid namespace of its own (its
 * parent, the runtime's shim or monitor, is in another one). That also holds when the runtime
 * itself sits in the container's cgroup (systemd-nspawn without the unified hierarchy). Without
 * such a process (a container sharing the host's pid namespace), the oldest process whose
 * parent is outside the container.
 */
function pickInit(stats: ProcStat[], pidnsOf: (pid: number) => number | undefined): { stat: ProcStat; ownPidns: boolean } {
  const byAge = [...stats].sort((a, b) => a.startTime - b.startTime || a.pid - b.pid)
  const root = byAge.find((s) => {
    const own = pidnsOf(s.pid)
    const parent = pidnsOf(s.ppid)
    return own !== undefined && parent !== undefined && own !== parent
  })
  if (root) return { stat: root, ownPidns: true }
  const inside = new Set(stats.map((s) => s.pid))
  return { stat: byAge.find((s) => !inside.has(s.ppid)) ?? byAge[0]!, ownPidns: false }
}

/**
 * Cuts each hierarchy's path back to the container's own level (processes may be deeper). The
 * cut is on whole path segments: a containerd container "def" in namespace "default" lives at
 * "/default/def", which a plain substring search for "/def" would cut to "/def".
 */
function containerLevel(paths: Record<string, string>, rootPath: string): Record<string, string> {
  const out: Record<string, string> = {}
  const tail = rootPath.slice(rootPath.lastIndexOf('/'))
  for (const [hierarchy, path] of Object.entries(paths)) {
    out[hierarchy] = cutAfter(path, rootPath, 'first') ?? cutAfter(path, tail, 'last') ?? path
  }
  return out
}

/** path up to the end of an occurrence of `part` that ends a segment, or undefined. */
function cutAfter(path: string, part: string, which: 'first' | 'last'): string | undefined {
  const ends: number[] = []
  for (let at = path.indexOf(part); at >= 0; at = path.indexOf(part, at + 1)) {
    const end = at + part.length
    const startsSegment = part.startsWith('/') || at === 0 || path[at - 1] === '/'
    if (startsSegment && (end === path.length || path[end] === '/')) ends.push(end)
  }
  const end = which === 'first' ? ends[0] : ends[ends.length - 1]
  return end === undefined ? undefined : path.slice(0, end)
}
