import { readdirSync, statfsSync } from 'node:fs'
import { join } from 'node:path'
import { FaultlineError } from '../../protocol/errors.js'
import type { ResolvedNetns } from '../../protocol/target.js'
import { netnsInodeAt } from '../net/netns.js'
import type { TargetContext, TargetResolver } from './types.js'

/** NSFS_MAGIC from include/uapi/linux/magic.h: the file is a namespace handle. */
const NSFS_MAGIC = 0x6e736673

function resolveNamed(name: string, ctx: TargetContext): ResolvedNetns | undefined {
  const path = join(ctx.paths.netnsDir, name)
  const inode = netnsInodeAt(path)
  if (inode === undefined) return undefined
  try {
    if (statfsSync(path).type !== NSFS_MAGIC) return undefined
  } catch {
    return undefined
  }
  return { type: 'netns', name, path, netnsInode: inode }
}

/** Named network namespaces: the bind mounts `ip netns add` leaves under /var/run/netns. */
export const netnsResolver: TargetResolver<'netns'> = {
  type: 'netns',
  async resolve(selector, ctx) {
    const found = resolveNamed(selector.name, ctx)
    if (!found) {
      throw new FaultlineError(
        'FAULTLINE_ERR_TARGET_NOT_FOUND',
        `no network namespace named "${selector.name}" in ${ctx.paths.netnsDir} (see: ip netns list)`,
      )
    }
    return [found]
  },
  async discover(ctx) {
    let names: string[]
    try {
      names = readdirSync(ctx.paths.netnsDir)
    } catch {
      return []
    }
    return names.sort().flatMap((name) => resolveNamed(name, ctx) ?? [])
  },
}
