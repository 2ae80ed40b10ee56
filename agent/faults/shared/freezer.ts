import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Type, type Static } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import type { ResolvedContainer } from '../../../protocol/target.js'
import type { CgroupMounts } from '../../targets/cgroupfs.js'

/**
 * The cgroup freezer: stops every process of a container at once (and any it forks meanwhile),
 * which a SIGSTOP per pid cannot. v1: freezer.state FROZEN/THAWED in the freezer hierarchy;
 * v2: cgroup.freeze 1/0, with cgroup.events telling when the freeze is complete.
 */
export const FreezerSchema = Type.Object({
  version: Type.Enum(['v1', 'v2']),
  /** The container's cgroup directory in the freezer's hierarchy. */
  dir: Type.String(),
})
export type Freezer = Static<typeof FreezerSchema>

export function freezerFor(container: ResolvedContainer, mounts: CgroupMounts): Freezer {
  const v1Mount = mounts.v1.get('freezer')
  const v1Path = container.cgroupPaths.freezer
  if (v1Mount && v1Path && v1Path !== '/') return { version: 'v1', dir: join(v1Mount, v1Path) }
  const v2Path = container.cgroupPaths.unified
  if (mounts.v2 && v2Path && v2Path !== '/') return { version: 'v2', dir: join(mounts.v2, v2Path) }
  throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `no freezer for container ${container.id.slice(0, 12)}: neither a v1 freezer hierarchy nor a cgroup v2 path holds it`)
}

export type FreezerState = 'thawed' | 'freezing' | 'frozen' | 'gone'

export function freezerState(f: Freezer): FreezerState {
  try {
    if (f.version === 'v1') {
      const state = readFileSync(join(f.dir, 'freezer.state'), 'utf8').trim()
      return state === 'FROZEN' ? 'frozen' : state === 'FREEZING' ? 'freezing' : 'thawed'
    }
    const wanted = readFileSync(join(f.dir, 'cgroup.freeze'), 'utf8').trim()
    const frozen = /^frozen 1$/m.test(readFileSync(join(f.dir, 'cgroup.events'), 'utf8'))
    return frozen ? 'frozen' : wanted === '1' ? 'freezing' : 'thawed'
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'gone'
    throw err
  }
}

function write(f: Freezer, frozen: boolean): void {
  if (f.version === 'v1') writeFileSync(join(f.dir, 'freezer.state'), frozen ? 'FROZEN' : 'THAWED')
  else writeFileSync(join(f.dir, 'cgroup.freeze'), frozen ? '1' : '0')
}

/** Freezes and waits (up to timeoutMs) until every task is frozen; false if it did not finish. */
export async function freeze(f: Freezer, timeoutMs = 5_000): Promise<boolean> {
  if (!existsSync(f.dir)) throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', `the container's cgroup ${f.dir} is gone; nothing was changed`)
  write(f, true)
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const state = freezerState(f)
    if (state === 'frozen') return true
    if (state === 'gone') throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', `the container's cgroup ${f.dir} disappeared while freezing`)
    if (Date.now() > deadline) return false
    // v1 only re-checks on a read of freezer.state; keep reading
    await new Promise((r) => setTimeout(r, 5))
  }
}

/** Thaws; a cgroup that is gone (container removed) counts as thawed. */
export function thaw(f: Freezer): { note?: string } {
  if (!existsSync(f.dir)) return { note: `the container's cgroup ${f.dir} is gone (container removed); nothing to thaw` }
  try {
    write(f, false)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { note: `the container's cgroup ${f.dir} is gone; nothing to thaw` }
    throw err
  }
  return {}
}
