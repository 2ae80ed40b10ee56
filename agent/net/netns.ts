import { statSync } from 'node:fs'
import type { ResolvedTarget } from '../../protocol/target.js'
import { procPath, type HostPaths } from '../host-paths.js'
import { nsexecArgv } from '../native/nsexec.js'

/**
 * A network namespace to run tools in: the agent's own ("host"), or one named by a path whose
 * inode was recorded when the target was resolved (a named netns today; /proc/<pid>/ns/net of a
 * container once containers resolve to a netns).
 */
export type NetnsRef = { kind: 'host'; inode: number } | { kind: 'path'; path: string; inode: number }

export function netnsOf(target: ResolvedTarget, paths: Pick<HostPaths, 'procRoot'>): NetnsRef {
  switch (target.type) {
    case 'host':
      return { kind: 'host', inode: target.netnsInode }
    case 'netns':
      return { kind: 'path', path: target.path, inode: target.netnsInode }
    case 'container':
      // The container's init holds its network namespace; the inode recorded at resolution
      // tells a restarted container (new namespace) from the one we faulted.
      return { kind: 'path', path: procPath(paths, target.initPid, 'ns', 'net'), inode: target.netnsInode }
    case 'process':
      throw new Error('network faults act on host, netns or container targets')
  }
}

export function describeNetns(ns: NetnsRef): string {
  return ns.kind === 'host' ? "the agent's network namespace" : `network namespace ${ns.path}`
}

/** The inode of the network namespace at path, or undefined if nothing is there. */
export function netnsInodeAt(path: string): number | undefined {
  try {
    return statSync(path).ino
  } catch {
    return undefined
  }
}

/** Whether the namespace recorded at resolution time is still the one at its path. */
export function netnsStatus(ns: NetnsRef): 'same' | 'gone' | 'replaced' {
  if (ns.kind === 'host') return 'same'
  const inode = netnsInodeAt(ns.path)
  if (inode === undefined) return 'gone'
  return inode === ns.inode ? 'same' : 'replaced'
}

/**
 * The argv that runs `argv` inside the namespace, through native/nsexec. Only the network
 * namespace is entered: tc, nft and iptables load their extensions from the host's
 * filesystem, which is the one they were built against.
 */
export function inNetns(ns: NetnsRef, argv: readonly string[]): string[] {
  if (ns.kind === 'host') return [...argv]
  return nsexecArgv({ net: ns.path }, argv)
}
