import type { ResolvedTarget, TargetSelector, TargetType } from '../../protocol/target.js'
import type { HostPaths } from '../host-paths.js'
import type { RuntimeSockets } from './containers/runtimes.js'

export interface TargetContext {
  paths: HostPaths
  /** The agent's own pid: never a target. */
  selfPid: number
  hostname: string
  /** Runtime API sockets that enrich container discovery (names, labels, images). */
  runtimeSockets: RuntimeSockets
}

/** One resolver per target type: the narrow interface behind which finding targets sits. */
export interface TargetResolver<T extends TargetType> {
  type: T
  /** Resolves a selector to concrete targets; throws FAULTLINE_ERR_TARGET_* (422) or 400 for bad patterns. */
  resolve(selector: Extract<TargetSelector, { type: T }>, ctx: TargetContext): Promise<ResolvedTarget[]>
  /** What GET /v1/targets?type=... lists. */
  discover(ctx: TargetContext): Promise<ResolvedTarget[]>
}
