import { diskFillSpec } from '../../../protocol/faults/disk-fill.js'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, fstatSync, fsyncSync, statfsSync, unlinkSync } from 'node:fs'
import { posix } from 'node:path'
import { Type, type Static } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import { PlanStepSchema } from '../../../protocol/plan.js'
import { findProgram } from '../../exec.js'
import {
  FileRootSchema,
  checkPathText,
  exists,
  fileRootOf,
  newFileIn,
  rootText,
  checkDirectory,
  sameInode,
  stateDirFacts,
  tempNameOf,
  underProtectedPrefix,
  withDirectory,
  withResolved,
  writeAll,
  type FileRoot,
} from '../shared/files.js'
import { defineFault } from '../types.js'
import { formatBytes, parseSize, parseSizeOrPercent } from '../../../protocol/units.js'
import { ownFdPath } from '../../host-paths.js'

/** Default reserve: the smaller of 1 % of the filesystem and 64 MiB. */
export const DEFAULT_RESERVE_PERCENT = 1
export const DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024

/**
 * statfs(2) in bytes, as df counts: size = f_blocks, used = f_blocks - f_bfree, avail = f_bavail
 * (what unprivileged writers may still use). Use% = used / (used + avail): on ext4 the blocks
 * reserved for root count neither as used nor as available, exactly as in df.
 */
export interface FsUsage {
  blockBytes: number
  sizeBytes: number
  usedBytes: number
  availBytes: number
}

export const usedPercentOf = (u: { usedBytes: number; availBytes: number }) => (u.usedBytes + u.availBytes === 0 ? 100 : (100 * u.usedBytes) / (u.usedBytes + u.availBytes))

function usageOf(path: string): FsUsage {
  const fs = statfsSync(path)
  return { blockBytes: fs.bsize, sizeBytes: fs.blocks * fs.bsize, usedBytes: (fs.blocks - fs.bfree) * fs.bsize, availBytes: fs.bavail * fs.bsize }
}

const round2 = (n: number) => Math.round(n * 100) / 100

interface FillFacts {
  root: FileRoot
  dir: { dev: string; ino: string }
  usage: FsUsage
  /** The agent's state dir is on the filesystem being filled. */
  holdsStateDir: boolean
  stateDir: string
}

/**
 * How many bytes to allocate. For `percent` P: the fill that makes used / (used + avail) reach
 * P % (df's Use%), rounded to whole blocks: (P/100 · (used + avail) − used).
 */
export function fillBytes(spec: { size?: string; percent?: number }, usage: FsUsage): number {
  if (spec.size !== undefined) return parseSize(spec.size)
  const total = usage.usedBytes + usage.availBytes
  const wanted = ((spec.percent ?? 0) / 100) * total - usage.usedBytes
  return Math.round(wanted / usage.blockBytes) * usage.blockBytes
}

export function reserveBytes(reserve: string | undefined, usage: FsUsage): number {
  if (reserve !== undefined) return parseSizeOrPercent(reserve, usage.sizeBytes)
  return Math.min(Math.ceil((DEFAULT_RESERVE_PERCENT / 100) * usage.sizeBytes), DEFAULT_RESERVE_BYTES)
}

/** Refuses a fill larger than what is available, or (unless force) one that eats into the reserve. */
function checkRoom(bytes: number, reserve: number, usage: FsUsage, force: boolean, where: string): void {
  if (bytes > usage.availBytes) {
    throw new FaultlineError('FAULTLINE_ERR_DISK_RESERVE', `${where}: ${formatBytes(bytes)} requested, only ${formatBytes(usage.availBytes)} available`)
  }
  if (!force && usage.availBytes - bytes < reserve) {
    throw new FaultlineError(
      'FAULTLINE_ERR_DISK_RESERVE',
      `${where}: filling ${formatBytes(bytes)} would leave ${formatBytes(usage.availBytes - bytes)} free, less than the reserve of ${formatBytes(reserve)}; lower "reserve" or add force: true`,
    )
  }
}

const StateFields = {
  root: FileRootSchema,
  dir: Type.String({ description: 'The directory, as the target sees it' }),
  name: Type.String({ description: 'The fill file: .faultline-fill-<injection id>' }),
  tempName: Type.String({ description: 'Its temporary name on filesystems without O_TMPFILE' }),
  bytes: Type.Integer({ minimum: 1 }),
  reserveBytes: Type.Integer({ minimum: 0 }),
  force: Type.Boolean(),
  phase: Type.Enum(['planned', 'creating', 'filled'], {
    description: 'planned: nothing done; creating: a file may be in the making; filled: the file is (about to be) named, with this inode',
  }),
  dev: Type.Optional(Type.String()),
  ino: Type.Optional(Type.String()),
}

const StateSchema = Type.Object(StateFields)
type FillState = Static<typeof StateSchema>

function plannedState({ root, dir, name, tempName, bytes, reserveBytes, force }: Omit<FillState, 'phase'>): FillState {
  return { root, dir, name, tempName, bytes, reserveBytes, force, phase: 'planned' }
}

/**
 * Fills a filesystem with one file the injection owns, allocated with fallocate(1) (blocks
 * reserved, nothing written) and named .faultline-fill-<id> only once it is complete. Recovery
 * unlinks that name if it still holds the inode the injection made; a file already there that
 * is not ours is never touched.
 */
export const diskFill = defineFault(diskFillSpec, {
  planSchema: Type.Object({
    ...StateFields,
    path: Type.String({ description: 'The fill file, as the target sees it' }),
    claims: Type.Optional(Type.Array(Type.String())),
    filesystem: Type.Object({ blockBytes: Type.Integer(), sizeBytes: Type.Integer(), usedBytes: Type.Integer(), availBytes: Type.Integer(), usedPercent: Type.Number() }),
    expected: Type.Object({ usedBytes: Type.Integer(), availBytes: Type.Integer(), usedPercent: Type.Number() }),
    steps: Type.Array(PlanStepSchema),
  }),
  stateSchema: StateSchema,
  requires: ['openat2'],
  exclusive: false,

  async gather(spec, target, ctx): Promise<FillFacts> {
    checkPathText(spec.path)
    const force = spec.force ?? false
    const prefix = underProtectedPrefix(spec.path)
    if (prefix && !force) throw new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${spec.path} is under ${prefix}; add force: true if you really mean it (e.g. /dev/shm)`)
    if ((spec.size === undefined) === (spec.percent === undefined)) {
      throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'disk-fill needs exactly one of "size" (e.g. 1GiB) or "percent" (fill until the filesystem is that full)')
    }
    const stateDir = stateDirFacts(ctx)
    const root = fileRootOf(target, ctx.paths.procRoot, 'disk-fill')
    return withDirectory(root, ctx.paths.procRoot, spec.path, {}, (d) => {
      const dirStat = fstatSync(d.dirFd, { bigint: true })
      checkDirectory(d.dirFd, spec.path, root, stateDir, force)
      return {
        root,
        dir: { dev: String(dirStat.dev), ino: String(dirStat.ino) },
        usage: usageOf(ownFdPath(d.dirFd)),
        holdsStateDir: String(dirStat.dev) === stateDir.dev,
        stateDir: stateDir.path,
      }
    })
  },

  plan(spec, _target, ctx) {
    const f = ctx.facts
    const force = spec.force ?? false
    const usage = f.usage
    const where = `${spec.path}${rootText(f.root)}`
    const bytes = fillBytes(spec, usage)
    if (bytes <= 0) {
      throw new FaultlineError(
        'FAULTLINE_ERR_TARGET_STATE',
        `the filesystem of ${where} is already ${round2(usedPercentOf(usage))} % full, not below the ${spec.percent} % asked for; nothing to fill`,
      )
    }
    const reserve = reserveBytes(spec.reserve, usage)
    checkRoom(bytes, reserve, usage, force, where)
    const name = `.faultline-fill-${ctx.injectionId}`
    const path = posix.join(spec.path, name)
    const after = { usedBytes: usage.usedBytes + bytes, availBytes: usage.availBytes - bytes }
    const argv = ['fallocate', '--length', String(bytes), '/dev/fd/3']
    return {
      root: f.root,
      dir: spec.path,
      name,
      tempName: tempNameOf(ctx.injectionId),
      path,
      bytes,
      reserveBytes: reserve,
      force,
      phase: 'planned' as const,
      // "Fill until P % full" twice on one filesystem would fill twice: one percent fill per filesystem.
      ...(spec.percent !== undefined ? { claims: [`disk-fill-percent:${f.dir.dev}`] } : {}),
      filesystem: { ...usage, usedPercent: round2(usedPercentOf(usage)) },
      expected: { ...after, usedPercent: round2(usedPercentOf(after)) },
      steps: [
        {
          phase: 'apply' as const,
          action: 'file',
          detail: `create an unnamed file (O_TMPFILE, mode 0600) in ${where}; allocate ${bytes} bytes (${formatBytes(bytes)}) with fallocate(1) on it as fd 3 (without fallocate support: write them); name it ${name}. The filesystem goes from ${round2(usedPercentOf(usage))} % to ${round2(usedPercentOf(after))} % used, ${formatBytes(after.availBytes)} left (reserve ${force ? 'ignored (force)' : formatBytes(reserve)})${f.holdsStateDir ? `; the agent's state dir ${f.stateDir} is on this filesystem` : ''}`,
          argv,
        },
        { phase: 'recover' as const, action: 'unlink', detail: `remove ${path}${rootText(f.root)} if it is still the file this injection made (same inode); anything else by that name is left alone` },
      ],
    }
  },

  undoFromPlan: (plan) => plannedState(plan),

  async apply(plan, ctx) {
    let state: FillState = plannedState(plan)
    await withResolved(plan.root, ctx.paths.procRoot, posix.join(plan.dir, plan.name), {}, async (r) => {
      const where = `${plan.dir}${rootText(plan.root)}`
      if (r.fd !== undefined) throw new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${plan.name} already exists in ${where}; it is not this injection's and is left alone`)
      // The plan's numbers came from a statfs a moment ago: check the room again now.
      checkRoom(plan.bytes, plan.reserveBytes, usageOf(ownFdPath(r.dirFd)), plan.force, where)
      state = { ...state, phase: 'creating' }
      ctx.checkpoint(state)
      const file = newFileIn(r.dirFd, plan.tempName)
      try {
        await allocate(file.fd, plan.bytes, ctx.expiresAt)
        const st = fstatSync(file.fd, { bigint: true })
        state = { ...state, phase: 'filled', dev: String(st.dev), ino: String(st.ino) }
        ctx.checkpoint(state)
        try {
          file.publish(plan.name, false)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
            throw new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${plan.name} appeared in ${where} meanwhile; it is not this injection's and is left alone`)
          }
          throw err
        }
      } finally {
        closeSync(file.fd)
      }
    })
    return state
  },

  async recover(state, ctx) {
    if (state.phase === 'planned') return {}
    try {
      return await withResolved(state.root, ctx.paths.procRoot, posix.join(state.dir, state.name), { successor: true }, (r) => {
        const notes: string[] = r.note ? [r.note] : []
        const temp = ownFdPath(r.dirFd, state.tempName)
        if (exists(temp)) unlinkSync(temp)
        if (r.fd !== undefined && r.stat) {
          if (state.ino !== undefined && sameInode(r.stat, { dev: state.dev!, ino: state.ino })) unlinkSync(r.entryPath)
          else notes.push(`${posix.join(state.dir, state.name)}${rootText(state.root)} is not the file this injection made (another inode); left alone`)
        }
        return notes.length ? { note: notes.join('; ') } : {}
      })
    } catch (err) {
      const code = (err as FaultlineError).code
      if (code === 'FAULTLINE_ERR_TARGET_GONE' || code === 'FAULTLINE_ERR_PATH_NOT_FOUND') {
        return { note: `${(err as Error).message}; nothing to remove` }
      }
      throw err
    }
  },
})

/**
 * Allocates `bytes` in the open file: fallocate(1) on it as fd 3 (the tool reopens
 * /dev/fd/3, i.e. exactly this inode). Where the filesystem cannot fallocate, the bytes are
 * written instead — random ones, so a compressing filesystem cannot shrink them.
 */
async function allocate(fd: number, bytes: number, expiresAt: number): Promise<void> {
  const tool = findProgram('fallocate')
  if (tool) {
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
      const child = spawn(tool, ['--length', String(bytes), '/dev/fd/3'], {
        stdio: ['ignore', 'ignore', 'pipe', fd],
        timeout: Math.max(10_000, expiresAt - Date.now()),
        killSignal: 'SIGKILL',
      })
      let stderr = ''
      child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()))
      child.on('error', reject)
      child.on('close', (code) => resolve({ code, stderr }))
    })
    if (result.code === 0) return
    if (!/not supported/i.test(result.stderr)) {
      throw new FaultlineError('FAULTLINE_ERR_APPLY_FAILED', `fallocate --length ${bytes} failed: ${result.stderr.trim() || `exit ${result.code}`}; nothing was left behind`)
    }
  }
  const chunk = randomBytes(1 << 20)
  for (let pos = 0; pos < bytes; pos += chunk.length) {
    await writeAll(fd, chunk.subarray(0, Math.min(chunk.length, bytes - pos)), pos)
    if (Date.now() > expiresAt) throw new FaultlineError('FAULTLINE_ERR_APPLY_FAILED', 'the deadline passed while the fill was being written')
  }
  fsyncSync(fd)
}
