import { FaultlineError } from '../../protocol/errors.js'
import { compileCmdlinePattern } from '../../protocol/patterns.js'
import type { ResolvedProcess, TargetSelector } from '../../protocol/target.js'
import { etcPath } from '../host-paths.js'
import { isKernelThread, listPids, readCmdline, readStat, readUid, readUserNames, type ProcStat } from './procfs.js'
import type { TargetContext, TargetResolver } from './types.js'

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

/** `users` is the host's passwd, read once per resolution (toResolved runs per match). */
function toResolved(stat: ProcStat, ctx: TargetContext, users = readUserNames(etcPath(ctx.paths, 'passwd'))): ResolvedProcess {
  const uid = readUid(ctx.paths.procRoot, stat.pid)
  const user = uid === undefined ? undefined : users.get(uid)
  return {
    type: 'process',
    pid: stat.pid,
    startTime: stat.startTime,
    comm: stat.comm,
    cmdline: readCmdline(ctx.paths.procRoot, stat.pid).slice(0, 4096),
    state: stat.state,
    ...(uid !== undefined ? { uid } : {}),
    ...(user !== undefined ? { user } : {}),
  }
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
    const users = readUserNames(etcPath(ctx.paths, 'passwd'))
    for (const stat of allProcesses(ctx)) {
      if (isExited(stat) || !matches(stat)) continue
      const reason = forbiddenReason(stat, ctx)
      if (reason) skipped.push(reason)
      else found.push(toResolved(stat, ctx, users))
    }
    if (found.length === 0) {
      const code = skipped.length > 0 ? 'FAULTLINE_ERR_TARGET_FORBIDDEN' : 'FAULTLINE_ERR_TARGET_NOT_FOUND'
      const tail = skipped.length > 0 ? `; skipped: ${skipped.join('; ')}` : ''
      throw new FaultlineError(code, `no process ${what} may be targeted${tail}`)
    }
    return found
  },

  async discover(ctx) {
    const users = readUserNames(etcPath(ctx.paths, 'passwd'))
    return allProcesses(ctx)
      .filter((stat) => !isExited(stat) && forbiddenReason(stat, ctx) === undefined)
      .map((stat) => toResolved(stat, ctx, users))
  },
}
