import { statSync } from 'node:fs'
import type { TargetResolver, TargetContext } from './types.js'

function hostTarget(ctx: TargetContext) {
  return { type: 'host' as const, hostname: ctx.hostname, netnsInode: statSync(`${ctx.paths.procRoot}/self/ns/net`).ino }
}

export const hostResolver: TargetResolver<'host'> = {
  type: 'host',
  async resolve(_selector, ctx) {
    return [hostTarget(ctx)]
  },
  async discover(ctx) {
    return [hostTarget(ctx)]
  },
}
