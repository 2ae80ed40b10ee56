import { fileChmodSpec } from '../../../protocol/faults/file-chmod.js'
import { chmodSync } from 'node:fs'
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
import { metaOf, octal, removeBackupDir, sameInode, withResolved } from '../shared/files.js'
import { defineFault } from '../types.js'
import { ownFdPath } from '../../host-paths.js'

const SET_ID_BITS = 0o6000

/**
 * Changes a file's permission bits. The journal keeps the original mode (with owner and times)
 * before the change; nothing else is touched, so no content backup is needed. Recovery sets the
 * original mode on whatever regular file is at the path by then.
 */
export const fileChmod = defineFault(fileChmodSpec, {
  planSchema: Type.Object({ ...FilePlanFields, mode: Type.Integer(), steps: Type.Array(PlanStepSchema) }),
  stateSchema: Type.Object(FileStateFields),
  ...fileKindCommon,

  gather: (spec, target, ctx): Promise<FileFacts> => gatherFile(spec, target, ctx, 'file-chmod'),

  plan(spec, _target, ctx) {
    const mode = parseInt(spec.mode, 8)
    if (mode & SET_ID_BITS) {
      throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `mode ${spec.mode} sets set-uid or set-gid bits; Faultline does not hand out privileges, use e.g. 000 or 0444`)
    }
    const base = filePlanBase(spec, ctx.facts, ctx.injectionId)
    if (mode === base.file.mode) throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `${where(base)} already has mode ${octal(mode)}; nothing would change`)
    return {
      ...base,
      mode,
      steps: [
        { phase: 'apply' as const, action: 'file', detail: `record ${where(base)}'s mode ${octal(base.file.mode)}, owner ${base.file.uid}:${base.file.gid} and times in the journal` },
        { phase: 'apply' as const, action: 'chmod', detail: `chmod ${octal(mode)} ${where(base)} (was ${octal(base.file.mode)})` },
        { phase: 'recover' as const, action: 'chmod', detail: `chmod ${octal(base.file.mode)} ${where(base)}` },
      ],
    }
  },

  undoFromPlan: (plan) => plannedFileState(plan),

  async apply(plan, ctx) {
    return withResolved(plan.root, ctx.paths.procRoot, plan.path, {}, (r) => {
      const st = currentFile(r, plan)
      const state: FileState = { ...plannedFileState(plan), phase: 'backed-up', original: metaOf(st) }
      ctx.checkpoint(state)
      // chmod through /proc/self/fd: exactly the inode resolved (an O_PATH fd cannot fchmod)
      chmodSync(ownFdPath(r.fd!), plan.mode) // currentFile checked r.fd
      return state
    })
  },

  async recover(state, ctx) {
    if (state.phase === 'planned') return {}
    const original = state.original!
    removeBackupDir(state.backupDir)
    return withRecoverableRoot(state, state.backupDir, async (r, notes) => {
      if (r.fd === undefined) return { note: `${where(state)} is gone (removed during the fault); no mode to restore` }
      if (!r.stat!.isFile()) return { note: `${where(state)} is no longer a regular file; left alone` }
      if (!sameInode(r.stat!, original)) notes.push(`${where(state)} had been replaced by another file during the fault; the original mode was set on it`)
      chmodSync(ownFdPath(r.fd), original.mode)
      return {}
    }, ctx)
  },
})
