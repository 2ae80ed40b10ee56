import { fileDeleteSpec } from '../../../protocol/faults/file-delete.js'
import { closeSync, constants as fsConstants, fstatSync, renameSync, rmSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { Type } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import { PlanStepSchema } from '../../../protocol/plan.js'
import {
  FilePlanFields,
  FileStateFields,
  fileKindCommon,
  currentFile,
  filePlanBase,
  gatherFile,
  plannedFileState,
  where,
  withRecoverableRoot,
  type FileFacts,
  type FileState,
} from '../shared/files-fault.js'
import {
  BACKUP_FILE,
  backUpContent,
  checkBackupRoom,
  createFromBackup,
  exists,
  freshBackupDir,
  hashFd,
  metaOf,
  removeBackupDir,
  reopen,
  syncDir,
  withResolved,
} from '../shared/files.js'
import { defineFault } from '../types.js'
import { ownFdPath } from '../../host-paths.js'

/** EXDEV: the backup dir is on another mount (always so for a container's files). */
const isCrossDevice = (err: unknown) => (err as NodeJS.ErrnoException).code === 'EXDEV'

/**
 * Removes a file by moving it into the injection's backup dir: a rename when the state dir is on
 * the same mount (the very inode is kept, and put back), else a copy and an unlink. Recovery puts
 * it back; a file someone created at the path meanwhile is replaced by the original.
 */
export const fileDelete = defineFault(fileDeleteSpec, {
  planSchema: Type.Object({ ...FilePlanFields, steps: Type.Array(PlanStepSchema) }),
  stateSchema: Type.Object(FileStateFields),
  ...fileKindCommon,

  gather: (spec, target, ctx): Promise<FileFacts> => gatherFile(spec, target, ctx, 'file-delete'),

  plan(spec, _target, ctx) {
    const base = filePlanBase(spec, ctx.facts, ctx.injectionId)
    const backup = join(base.backupDir, BACKUP_FILE)
    return {
      ...base,
      steps: [
        { phase: 'apply' as const, action: 'file', detail: `record ${where(base)} (sha256, ${base.file.size} bytes, mode, owner, times) in the journal` },
        { phase: 'apply' as const, action: 'rename', detail: `move ${where(base)} to ${backup} (rename(2) when on the same mount; otherwise copy it there, then unlink the file)` },
        {
          phase: 'recover' as const,
          action: 'rename',
          detail: `move ${backup} back to ${where(base)} (or copy it back, complete with owner, mode and times before it gets its name); a file created at the path meanwhile is replaced by the original`,
        },
      ],
    }
  },

  undoFromPlan: (plan) => plannedFileState(plan),

  async apply(plan, ctx) {
    return withResolved(plan.root, ctx.paths.procRoot, plan.path, {}, async (r) => {
      currentFile(r, plan)
      const fd = reopen(r.fd!, fsConstants.O_RDONLY)
      let state: FileState
      try {
        freshBackupDir(plan.backupDir)
        const st = fstatSync(fd, { bigint: true })
        state = { ...plannedFileState(plan), phase: 'backed-up', original: metaOf(st, (await hashFd(fd)).sha256) }
        ctx.checkpoint(state)
      } finally {
        closeSync(fd)
      }
      const backup = join(plan.backupDir, BACKUP_FILE)
      try {
        renameSync(r.entryPath, backup)
        syncDir(plan.backupDir)
      } catch (err) {
        if (!isCrossDevice(err)) throw err
        // A copy, unlike a rename, takes room in the state dir, next to the journal.
        checkBackupRoom(join(plan.backupDir, '..', '..'), Number(state.original!.size), where(plan))
        const src = reopen(r.fd!, fsConstants.O_RDONLY)
        try {
          const copied = await backUpContent(src, plan.backupDir, where(plan))
          if (copied.sha256 !== state.original!.sha256) {
            throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `${where(plan)} changed while it was being copied aside (someone is writing it); nothing was removed, try again`)
          }
        } catch (copyErr) {
          // No backup, no removal: recovery then finds the file where it was and leaves it.
          rmSync(backup, { force: true })
          throw copyErr
        } finally {
          closeSync(src)
        }
        unlinkSync(r.entryPath)
      }
      return state
    })
  },

  async recover(state, ctx) {
    if (state.phase === 'planned') {
      removeBackupDir(state.backupDir)
      return {}
    }
    const backup = join(state.backupDir, BACKUP_FILE)
    const original = state.original!
    const backupThere = exists(backup)
    return withRecoverableRoot(state, backup, async (r, notes) => {
      if (!backupThere) {
        // The backup goes back (or away) first: an earlier recovery got this far.
        if (r.fd === undefined) return { note: `${where(state)} is not there and neither is its backup ${backup}; someone removed them` }
        return {}
      }
      if (r.fd !== undefined) {
        if (r.stat!.isFile()) {
          const fd = reopen(r.fd, fsConstants.O_RDONLY)
          let same: boolean
          try {
            const now = await hashFd(fd)
            const st = r.stat!
            // Content and metadata both: a file someone recreated with the same content (a
            // config tool putting it back) may still differ in owner, mode or times.
            same =
              now.size === original.size &&
              now.sha256 === original.sha256 &&
              Number(st.mode & 0o7777n) === original.mode &&
              Number(st.uid) === original.uid &&
              Number(st.gid) === original.gid &&
              String(st.mtimeNs) === original.mtimeNs
          } finally {
            closeSync(fd)
          }
          if (same) return {} // the agent died before the file was moved (or after it was copied back)
        }
        if (r.stat!.isDirectory()) return { note: `${where(state)} is now a directory; left alone, the original is kept at ${backup}`, keepBackup: true }
        notes.push(`a file created at ${where(state)} during the fault was replaced by the original`)
      }
      try {
        // rename(2) puts the very inode back (and atomically replaces whatever is there now)
        renameSync(backup, r.entryPath)
        syncDir(ownFdPath(r.dirFd))
      } catch (err) {
        if (!isCrossDevice(err)) throw err
        await createFromBackup(r.dirFd, r.name, backup, original, { replace: true, tempName: state.tempName })
      }
      return {}
    }, ctx)
  },
})
