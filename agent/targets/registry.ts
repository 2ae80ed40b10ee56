import type { ResolvedTarget, TargetSelector, TargetType } from '../../protocol/target.js'
import { containerResolver } from './containers/index.js'
import { hostResolver } from './host.js'
import { netnsResolver } from './netns.js'
import { processResolver } from './process.js'
import type { TargetContext, TargetResolver } from './types.js'

/** The only list of target types the agent resolves. */
export const targetResolvers = {
  host: hostResolver,
  process: processResolver,
  netns: netnsResolver,
  container: containerResolver,
} satisfies { [T in TargetType]: TargetResolver<T> }

export function resolveTarget(selector: TargetSelector, ctx: TargetContext): Promise<ResolvedTarget[]> {
  // One case per type, so each resolver gets its own selector type (checked exhaustive).
  switch (selector.type) {
    case 'host':
      return targetResolvers.host.resolve(selector, ctx)
    case 'process':
      return targetResolvers.process.resolve(selector, ctx)
    case 'netns':
      return targetResolvers.netns.resolve(selector, ctx)
    case 'container':
      return targetResolvers.container.resolve(selector, ctx)
  }
}

export function discoverTargets(type: TargetType, ctx: TargetContext): Promise<ResolvedTarget[]> {
  return targetResolvers[type].discover(ctx)
}
