import { createRequire } from 'node:module'
import { FaultlineError } from '../../protocol/errors.js'
import type { ResolvedProcess, TargetSelector } from '../../protocol/target.js'
import { isKernelThread, listPids, readCmdline, readStat, type ProcStat } from './procfs.js'
import type { TargetContext, TargetResolver } from './types.js'

const safeRegex = createRequire(import.meta.url)('safe-regex2') as (re: string | RegExp) => boolean

type ProcessSelector = Extract<TargetSelector, { type: 'process' }>

/** Why a process may never be a target, or undefined when it may. */
function forbiddenReason(stat: ProcStat, ctx: TargetContext): string | undefined {
  if (stat.pid === 1) return 'pid 1 is the init process of this pid namespace; Faultline never faults it'
  if (stat.pid === ctx.selfPid) return `pid ${stat.pid} is the Faultline agent itself`
  if (isKernelThread(stat)) return `pid ${stat.pid} (${stat.comm}) is a kernel thread`
  return undefined
}

function isExited(stat: ProcStat): boolean {
  return stat.state === 'Z' || stat.state === 'X'
}

function toResolved(stat: ProcStat, ctx: TargetContext): ResolvedProcess {
  return {
    type: 'process',
    pid: stat.pid,
    startTime: stat.startTime,
    comm: stat.comm,
    cmdline: readCmdline(ctx.paths.procRoot, stat.pid).slice(0, 4096),
    state: stat.state,
  }
}

/** Compiles a user regex, refusing invalid ones and ones that could backtrack catastrophically. */
export function compileCmdlinePattern(pattern: string): RegExp {
  let re: RegExp
  try {
    re = new RegExp(pattern)
  } catch (err) {
    throw new FaultlineError('FAULTLINE_ERR_UNSAFE_PATTERN', `invalid cmdline regular expression: ${(err as Error).message}`)
  }
  if (!safeRegex(re)) {
    throw new FaultlineError(
      'FAULTLINE_ERR_UNSAFE_PATTERN',
      `cmdline regular expression ${JSON.stringify(pattern)} has nested repetition that could backtrack catastrophically; simplify it`,
    )
  }
  if (re.test('')) {
    throw new FaultlineError(
      'FAULTLINE_ERR_UNSAFE_PATTERN',
      `cmdline regular expression ${JSON.stringify(pattern)} matches an empty command line, so it would select every process; make it match something specific, e.g. "^postgres: "`,
    )
  }
  return re
}

function allProcesses(ctx: TargetContext): ProcStat[] {
  const out: ProcStat[] = []
  for (const pid of listPids(ctx.paths.procRoot)) {
    const stat = readStat(ctx.paths.procRoot, pid)
    if (stat) out.push(stat)
  }
  return out
}

export const processResolver: TargetResolver<'process'> = {
  type: 'process',

  async resolve(selector: ProcessSelector, ctx) {
    if ('pid' in selector) {
      const stat = readStat(ctx.paths.procRoot, selector.pid)
      if (!stat || isExited(stat)) {
        throw new FaultlineError('FAULTLINE_ERR_TARGET_NOT_FOUND', `no process with pid ${selector.pid}`)
      }
      const reason = forbiddenReason(stat, ctx)
      if (reason) throw new FaultlineError('FAULTLINE_ERR_TARGET_FORBIDDEN', reason)
      return [toResolved(stat, ctx)]
    }

    let matches: (stat: ProcStat) => boolean
    let what: string
    if ('name' in selector) {
      matches = (stat) => stat.comm === selector.name
      what = `named ${JSON.stringify(selector.name)}`
    } else {
      const re = compileCmdlinePattern(selector.cmdline)
      matches = (stat) => !isKernelThread(stat) && re.test(readCmdline(ctx.paths.procRoot, stat.pid))
      what = `whose command line matches ${JSON.stringify(selector.cmdline)}`
    }

    const found: ResolvedProcess[] = []
    const skipped: string[] = []
    for (const stat of allProcesses(ctx)) {
      if (isExited(stat) || !matches(stat)) continue
      const reason = forbiddenReason(stat, ctx)
      if (reason) skipped.push(reason)
      else found.push(toResolved(stat, ctx))
    }
    if (found.length === 0) {
      const code = skipped.length > 0 ? 'FAULTLINE_ERR_TARGET_FORBIDDEN' : 'FAULTLINE_ERR_TARGET_NOT_FOUND'
      const tail = skipped.length > 0 ? `; skipped: ${skipped.join('; ')}` : ''
      throw new FaultlineError(code, `no process ${what} may be targeted${tail}`)
    }
    return found
  },

  async discover(ctx) {
    return allProcesses(ctx)
      .filter((stat) => !isExited(stat) && forbiddenReason(stat, ctx) === undefined)
      .map((stat) => toResolved(stat, ctx))
  },
}
