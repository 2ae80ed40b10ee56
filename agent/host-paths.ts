import { join } from 'node:path'

/**
 * Every host path the agent reads, from one place: configuration (buildAgent's `paths`) can point
 * them at fixture trees, so nothing else in the agent names /proc, /etc, /dev or a runtime socket.
 * The optional ones default to the standard locations (defaultHostPaths).
 */
export interface HostPaths {
  /** Where proc is mounted: /proc/<pid>/..., mountinfo, kernel settings. */
  procRoot: string
  /** Where `ip netns add` leaves named network namespaces. */
  netnsDir: string
  /** containerd's task state (/run/containerd/io.containerd.runtime.v2.task): containerd containers are recognised by it. */
  containerdTaskDir: string
  /** The host's /etc: resolv.conf, and /etc/netns/<name>/ that `ip netns exec` binds over it. */
  etcDir?: string
  /** The host's /dev: /dev/fuse. */
  devDir?: string
  /** systemd-resolved's list of real upstream servers (behind its 127.0.0.53 stub). */
  resolvedConf?: string
}

export const defaultHostPaths: Required<HostPaths> = {
  procRoot: '/proc',
  netnsDir: '/var/run/netns',
  containerdTaskDir: '/run/containerd/io.containerd.runtime.v2.task',
  etcDir: '/etc',
  devDir: '/dev',
  resolvedConf: '/run/systemd/resolve/resolv.conf',
}

/** The full set: defaults for whatever `overrides` does not set. */
export function hostPaths(overrides: Partial<HostPaths> = {}): Required<HostPaths> {
  const out = { ...defaultHostPaths }
  for (const [key, value] of Object.entries(overrides) as [keyof HostPaths, string | undefined][]) if (value !== undefined) out[key] = value
  return out
}

/** A path under the host's /etc, e.g. etcPath(paths, 'resolv.conf'). */
export const etcPath = (paths: Pick<HostPaths, 'etcDir'>, ...parts: string[]) => join(paths.etcDir ?? defaultHostPaths.etcDir, ...parts)

/** A path under the host's /dev, e.g. devPath(paths, 'fuse'). */
export const devPath = (paths: Pick<HostPaths, 'devDir'>, ...parts: string[]) => join(paths.devDir ?? defaultHostPaths.devDir, ...parts)

/** A path under /proc/<pid>/, e.g. procPath(paths, 4242, 'ns', 'net'). */
export const procPath = (paths: Pick<HostPaths, 'procRoot'>, pid: number | 'self', ...parts: string[]) => join(paths.procRoot, String(pid), ...parts)

/**
 * The agent's own file descriptors and namespaces, as paths. Always the real /proc of this process
 * (magic links the kernel resolves for the caller), never the configurable procRoot, which may be
 * a fixture tree of some other host.
 */
export const OWN_PROC = '/proc/self'
export const ownFdPath = (fd: number, ...parts: string[]) => join(OWN_PROC, 'fd', String(fd), ...parts)
export const OWN_NETNS = join(OWN_PROC, 'ns', 'net')

export type RuntimeName = 'docker' | 'containerd' | 'podman' | 'crio'

/** Where each runtime's API socket usually is, first match wins (replaced by --docker-socket etc.). */
export const defaultRuntimeSockets: Record<RuntimeName, readonly string[]> = {
  docker: ['/run/docker.sock', '/var/run/docker.sock'],
  containerd: ['/run/containerd/containerd.sock'],
  podman: ['/run/podman/podman.sock'],
  crio: ['/run/crio/crio.sock', '/var/run/crio/crio.sock'],
}
