import { stressMemorySpec } from '../../../protocol/faults/stress-memory.js'
import { Type } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import {
  DEADLINE_ARG,
  SECONDS_LEFT_ARG,
  basePlan,
  cgroupClaim,
  chooseEngine,
  gatherStress,
  gated,
  stressKindCommon,
  stressPlanSchema,
  stressSteps,
  type StressFacts,
} from '../shared/stress.js'
import { defineFault } from '../types.js'
import { formatBytes, parseSize } from '../../../protocol/units.js'

const MIN_BYTES = 4096

/** "128MiB" -> bytes; "25%" -> 25 % of the limit that binds the target's memory cgroup, in whole pages. */
export function memoryRequest(size: string, limitBytes: number): number {
  if (!size.endsWith('%')) return parseSize(size, 'size')
  return Math.floor((limitBytes * Number(size.slice(0, -1))) / 100 / 4096) * 4096
}

/**
 * Holds `size` of memory in the target's memory cgroup for the whole duration: one allocator,
 * placed in the target's cgroups before it runs, allocates the size once, touches every page and
 * keeps it resident (mlock, or stress-ng --vm-locked, where the agent may lock memory); it never
 * frees and re-allocates, so the usage does not swing. A size above the cgroup's limit makes the
 * kernel's OOM killer act in that cgroup, and the allocator (oom_score_adj 1000) is what it kills.
 */
export const stressMemory = defineFault(stressMemorySpec, {
  planSchema: stressPlanSchema({
    bytes: Type.Integer(),
    limitBytes: Type.Integer(),
    limitSource: Type.String(),
  }),
  ...stressKindCommon,

  async gather(_spec, target, ctx): Promise<StressFacts> {
    return gatherStress(target, ctx)
  },

  plan(spec, target, ctx) {
    const f = ctx.facts
    const limit = f.memory.limit
    const bytes = memoryRequest(spec.size, limit.bytes)
    if (bytes < MIN_BYTES) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `size ${spec.size} is ${bytes} bytes, less than one page (${MIN_BYTES} bytes)`)
    if (bytes > f.memTotalBytes) {
      throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `size ${spec.size} (${formatBytes(bytes)}) is more than this host's RAM (${formatBytes(f.memTotalBytes)})`)
    }
    const engine = chooseEngine(spec.engine, f)
    const { plan, note } = basePlan(target, ctx, engine)
    const launches =
      engine === 'stress-ng'
        ? [
            gated(f, [
              f.stressNg!,
              '--vm', '1', '--vm-bytes', String(bytes),
              // map once and keep it (no unmap/remap cycles), write it once, then hang until the timeout
              '--vm-keep', '--vm-hang', '0',
              ...(f.canLockMemory ? ['--vm-locked'] : []),
              // killed by the OOM killer: stay dead, do not respawn (a respawning allocator swings)
              '--oomable',
              '--timeout', SECONDS_LEFT_ARG,
            ]),
          ]
        : [gated(f, [f.helper, 'vm', String(bytes), DEADLINE_ARG])]
    const full = { ...plan, launches, bytes, limitBytes: limit.bytes, limitSource: limit.source }
    const share = `${((bytes / limit.bytes) * 100).toFixed(1)} % of ${formatBytes(limit.bytes)}, ${limit.source}`
    const over = bytes > limit.bytes ? `; that is above the limit, so the OOM killer will act in the cgroup and take the allocator (oom_score_adj 1000)` : ''
    const what = `${engine === 'stress-ng' ? 'stress-ng --vm' : 'an allocator'} holding ${formatBytes(bytes)} (${share}${over})`
    return {
      ...full,
      steps: stressSteps(full, what, note ? { note } : {}),
      claims: target.type === 'host' ? [] : cgroupClaim('stress-memory', plan.cgroups, 'memory'),
    }
  },
})
