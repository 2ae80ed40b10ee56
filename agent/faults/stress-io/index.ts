import { statSync, statfsSync } from 'node:fs'
import { join } from 'node:path'
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
import { STRESS_IO_DEFAULT_BYTES as DEFAULT_BYTES, STRESS_IO_DEFAULT_PATH as DEFAULT_PATH, stressIoSpec } from '../../../protocol/faults/stress-io.js'
import { formatBytes, parseSize } from '../../../protocol/units.js'

/** Bytes per read or write call; `bytes` is rounded down to a multiple of it. */
export const IO_BLOCK_BYTES = 1024 * 1024
/** Space left free on the file system besides the stressors' files. */
const FREE_RESERVE_BYTES = 256 * 1024 * 1024

type IoFacts = StressFacts & { freeBytes: number }

/**
 * Disk IO charged to the target's blkio/io cgroup: `workers` stressors, each passing over its
 * own file of `bytes` in `path` again and again, with O_DIRECT so the IO reaches the device
 * from the stressor itself (and so counts against the target's blkio cgroup; buffered writes
 * would be written back later by a kernel thread, charged to no one in cgroup v1). The files
 * live in <path>/faultline-<id>, which recovery removes.
 */
export const stressIo = defineFault(stressIoSpec, {
  planSchema: stressPlanSchema({
    workers: Type.Integer(),
    bytes: Type.Integer(),
    mode: Type.String(),
  }),
  ...stressKindCommon,

  async gather(spec, target, ctx): Promise<IoFacts> {
    const path = spec.path ?? DEFAULT_PATH
    let isDir = false
    try {
      isDir = statSync(path).isDirectory()
    } catch {
      isDir = false
    }
    if (!isDir) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `path ${path} is not a directory on this host`)
    const fs = statfsSync(path)
    return { ...(await gatherStress(target, ctx)), freeBytes: fs.bavail * fs.bsize }
  },

  plan(spec, target, ctx) {
    const f = ctx.facts
    const workers = spec.workers ?? 1
    const mode = spec.mode ?? 'write'
    const bytes = Math.floor(parseSize(spec.bytes ?? DEFAULT_BYTES, 'bytes') / IO_BLOCK_BYTES) * IO_BLOCK_BYTES
    if (bytes < IO_BLOCK_BYTES) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `bytes ${spec.bytes} is less than one block (${formatBytes(IO_BLOCK_BYTES)})`)
    const path = spec.path ?? DEFAULT_PATH
    const needed = workers * bytes + FREE_RESERVE_BYTES
    if (needed > f.freeBytes) {
      throw new FaultlineError(
        'FAULTLINE_ERR_VALIDATION',
        `${workers} × ${formatBytes(bytes)} at ${path} would leave less than ${formatBytes(FREE_RESERVE_BYTES)} free (${formatBytes(f.freeBytes)} available): lower bytes or workers, or choose another path`,
      )
    }
    // stress-ng 0.15's hdd stressor reads back everything it writes, whatever --hdd-opts says
    const limitation = mode === 'readwrite' ? undefined : `stress-ng's hdd stressor reads back what it writes, so it cannot do ${mode}-only IO`
    const engine = chooseEngine(spec.engine, f, limitation)
    const { plan, note } = basePlan(target, ctx, engine)
    const scratchDir = join(path, `faultline-${ctx.injectionId}`)
    const launches =
      engine === 'stress-ng'
        ? [
            gated(f, [
              f.stressNg!,
              '--hdd', String(workers), '--hdd-bytes', String(bytes), '--hdd-write-size', String(IO_BLOCK_BYTES),
              '--hdd-opts', 'direct,wr-seq,rd-seq', '--temp-path', scratchDir,
              '--timeout', SECONDS_LEFT_ARG,
            ]),
          ]
        : Array.from({ length: workers }, () => gated(f, [f.helper, 'io', mode, String(bytes), String(IO_BLOCK_BYTES), scratchDir, DEADLINE_ARG]))
    const full = { ...plan, scratchDir, launches, workers, bytes, mode }
    const what = engine === 'stress-ng' ? `stress-ng --hdd with ${workers} worker(s), ${formatBytes(bytes)} each` : `${mode} passes over an unnamed ${formatBytes(bytes)} file, O_DIRECT`
    return {
      ...full,
      steps: stressSteps(full, what, { scratchDir, ...(note ? { note } : {}) }),
      claims: target.type === 'host' ? [] : cgroupClaim('stress-io', plan.cgroups, 'blkio'),
    }
  },
})
