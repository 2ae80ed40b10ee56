import type { TargetResolver } from './types.js'

export const hostResolver: TargetResolver<'host'> = {
  type: 'host',
  async resolve(_selector, ctx) {
    return [{ type: 'host', hostname: ctx.hostname }]
  },
  async discover(ctx) {
    return [{ type: 'host', hostname: ctx.hostname }]
  },
}
