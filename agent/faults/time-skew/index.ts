import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Type } from 'typebox'
import { formatDuration } from '../../../protocol/duration.js'
import { FaultlineError } from '../../../protocol/errors.js'
import { PlanStepSchema, type PlanStep } from '../../../protocol/plan.js'
import { describeTarget } from '../../../protocol/target.js'
import { readCgroupMounts } from '../../targets/cgroupfs.js'
import { readStat } from '../../targets/procfs.js'
import { ExactProcessFields } from '../shared/process.js'
import { defineFault } from '../types.js'
import { TIMESKEW_HELPER, TimeskewHelperError, pristineVdso, vdsoFunctions } from './helper.js'
import { ClockField, RESCAN_INTERVAL_MS, clockNames, timeSkewSpec, type ClockName } from '../../../protocol/faults/time-skew.js'
import { clockMask, formatOffset, functionsFor, offsetNanoseconds, parseOffset } from './offset.js'
import { cgroupPids, containerCgroupDir, descendants, skewable } from './processes.js'
import { startRescan, stopRescan } from './rescan.js'
import { ScopeSchema, SkewSession, StateSchema, restoreAll, type PatchedProcess, type Scope, type SkewState } from './skew.js'

interface SkewFacts {
  uptimeMs: number
  /** The processes to patch at apply: the target (and its descendants with children), or the container's. */
  processes: { pid: number; startTime: number; comm: string }[]
  cgroupDir?: string
}

const describeClocks = (clocks: readonly ClockName[]) =>
  clocks.map((c) => ({ realtime: 'CLOCK_REALTIME (and its coarse, alarm and TAI variants)', monotonic: 'CLOCK_MONOTONIC (raw, coarse)', boottime: 'CLOCK_BOOTTIME' })[c]).join(', ')

/**
 * Moves the clocks one process (or every process of a container) reads through the vDSO by an
 * offset, without touching the host's clock: native/timeskew redirects the vDSO's
 * clock_gettime, gettimeofday and time to replacements that add the offset. The original bytes,
 * addresses and patched pids are journaled before each patch, so recovery (also after a crash)
 * writes exactly those bytes back.
 */
export const timeSkew = defineFault(timeSkewSpec, {
  planSchema: Type.Object({
    injectionId: Type.String(),
    offset: Type.String(),
    offsetMs: Type.Integer(),
    offsetNs: Type.String({ description: 'The offset in nanoseconds, as the helper takes it' }),
    clocks: Type.Array(ClockField),
    clockMask: Type.Integer({ description: 'Bit N set: clock id N is skewed' }),
    functions: Type.Array(Type.Enum(vdsoFunctions)),
    children: Type.Boolean(),
    scope: ScopeSchema,
    processes: Type.Array(Type.Object(ExactProcessFields)),
    steps: Type.Array(PlanStepSchema),
  }),
  stateSchema: StateSchema,
  requires: ['ptrace', 'helper:timeskew'],
  unavailableReason: () =>
    process.arch === 'x64' ? undefined : `time-skew patches the x86-64 vDSO (${TIMESKEW_HELPER}); this host is ${process.arch}, which it does not support`,
  exclusive: true,

  async gather(spec, target, ctx): Promise<SkewFacts> {
    parseOffset(spec.offset)
    const procRoot = ctx.paths.procRoot
    const uptimeMs = Math.round(Number(readFileSync(join(procRoot, 'uptime'), 'utf8').split(' ')[0]) * 1000)
    const exact = (pids: number[]) =>
      pids.flatMap((pid) => {
        const stat = readStat(procRoot, pid)
        return skewable(stat, process.pid) ? [{ pid, startTime: stat.startTime, comm: stat.comm }] : []
      })
    if (target.type === 'container') {
      const cgroupDir = containerCgroupDir(target.cgroupPaths, readCgroupMounts(procRoot))
      if (!cgroupDir) {
        throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `${describeTarget(target)}: none of its cgroups (${Object.values(target.cgroupPaths).join(', ')}) is readable here, so its processes cannot be listed`)
      }
      return { uptimeMs, processes: exact(cgroupPids([cgroupDir])), cgroupDir }
    }
    if (target.type !== 'process') throw new FaultlineError('FAULTLINE_ERR_TARGET_UNSUPPORTED', `time-skew acts on processes and containers, not on a ${target.type}`)
    const tree = spec.children ? exact(descendants(procRoot, [target.pid])) : []
    return { uptimeMs, processes: [{ pid: target.pid, startTime: target.startTime, comm: target.comm }, ...tree] }
  },

  plan(spec, target, ctx) {
    const offsetMs = parseOffset(spec.offset)
    const clocks = [...(spec.clocks ?? ['realtime'])].sort((a, b) => clockNames.indexOf(a) - clockNames.indexOf(b))
    const children = spec.children ?? false
    const facts = ctx.facts
    if (offsetMs < 0 && !clocks.every((c) => c === 'realtime') && -offsetMs >= facts.uptimeMs) {
      throw new FaultlineError(
        'FAULTLINE_ERR_VALIDATION',
        `offset ${spec.offset} would take CLOCK_MONOTONIC/CLOCK_BOOTTIME below zero: this host has been up only ${formatDuration(facts.uptimeMs)}`,
      )
    }
    if (facts.processes.length === 0) {
      throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `${describeTarget(target)} has no process that may be skewed`)
    }
    let scope: Scope
    if (target.type === 'container') scope = { type: 'container', id: target.id, cgroupDir: facts.cgroupDir! }
    else if (target.type === 'process') scope = { type: 'process', pid: target.pid, startTime: target.startTime, comm: target.comm }
    else throw new FaultlineError('FAULTLINE_ERR_TARGET_UNSUPPORTED', `time-skew acts on processes and containers, not on a ${target.type}`)
    const functions = functionsFor(clocks)
    const offset = formatOffset(offsetMs)
    const list = facts.processes.map((p) => `${p.pid} (${p.comm})`).join(', ')
    const steps: PlanStep[] = [
      {
        phase: 'apply',
        action: 'ptrace',
        detail:
          `for each of ${list}: journal its [vdso] address and the original first bytes of ${functions.join(', ')}; ${TIMESKEW_HELPER} stops every thread ` +
          `(PTRACE_SEIZE + PTRACE_INTERRUPT), maps one r-x page within 2 GiB of the vDSO (an mmap run by a stopped thread) or reuses one left by an earlier skew, ` +
          `writes a jmp (e9 rel32) over the first 5 bytes of each function to a replacement that adds ${offset} to ${describeClocks(clocks)}, and detaches`,
      },
    ]
    if (children) {
      steps.push({
        phase: 'apply',
        action: 'rescan',
        detail: `every ${RESCAN_INTERVAL_MS} ms while active: patch each process newly ${scope.type === 'container' ? `in ${scope.cgroupDir}` : `under pid ${scope.pid}`} the same way (journaled likewise)`,
      })
    }
    steps.push(
      {
        phase: 'recover',
        action: 'ptrace',
        detail:
          'for each patched process: stop every thread again and write the journaled original bytes back where the jmp is (bytes someone else changed are left alone); ' +
          'the page stays mapped but unreachable; a process that exited counts as recovered, a pid now owned by another process is never touched',
      },
      {
        phase: 'recover',
        action: 'scan',
        detail: 'find processes forked during the skew that carry the patch (same [vdso] and page in /proc/<pid>/maps, anywhere on the host) and restore them too',
      },
    )
    return {
      injectionId: ctx.injectionId,
      offset,
      offsetMs,
      offsetNs: offsetNanoseconds(offsetMs),
      clocks,
      clockMask: clockMask(clocks),
      functions,
      children,
      scope,
      processes: facts.processes,
      steps,
    }
  },

  undoFromPlan: (plan) => ({ injectionId: plan.injectionId, scope: plan.scope, children: plan.children, processes: [] }),

  async apply(plan, ctx) {
    let pristine
    try {
      pristine = await pristineVdso()
    } catch (err) {
      throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `cannot read this kernel's vDSO: ${(err as Error).message}`)
    }
    const state: SkewState = { injectionId: plan.injectionId, scope: plan.scope, children: plan.children, processes: [] }
    const session = new SkewSession({
      state,
      params: { offsetNs: plan.offsetNs, clockMask: plan.clockMask, functions: plan.functions },
      pristine,
      procRoot: ctx.paths.procRoot,
      checkpoint: (s) => ctx.checkpoint(s),
      log: ctx.log,
    })
    let patched = 0
    const gone: string[] = []
    for (const p of plan.processes) {
      if ((await session.patch(p)) === 'patched') patched++
      else gone.push(`${p.pid} (${p.comm})`)
    }
    if (patched === 0) {
      throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', `${gone.join(', ')} exited before its clock could be skewed; nothing was changed`)
    }
    if (gone.length > 0) ctx.log.info({ gone }, 'some processes exited before they could be skewed')
    if (plan.children) startRescan(plan.injectionId, session, ctx.expiresAt, ctx.log)
    return state
  },

  async recover(state, ctx) {
    // The re-scan may have patched more processes than the state this was called with lists.
    const live = await stopRescan(state.injectionId)
    const processes: PatchedProcess[] = [...state.processes]
    for (const p of live?.processes ?? []) {
      if (!processes.some((q) => q.pid === p.pid && q.startTime === p.startTime && q.vdso === p.vdso && q.status === p.status)) processes.push(p)
    }
    try {
      return await restoreAll(ctx.paths.procRoot, ctx.log, processes)
    } catch (err) {
      if (err instanceof TimeskewHelperError) throw new Error(`${TIMESKEW_HELPER}: ${err.message}`)
      throw err
    }
  },
})
