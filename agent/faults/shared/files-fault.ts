import { closeSync, constants as fsConstants, type BigIntStats } from 'node:fs'
import { join } from 'node:path'
import { Type, type Static } from 'typebox'
import { FaultlineError, isFaultlineError } from '../../../protocol/errors.js'
import type { PlanStep } from '../../../protocol/plan.js'
import type { ResolvedTarget } from '../../../protocol/target.js'
import type { ApplyContext, GatherContext, RecoverContext, RecoverOutcome } from '../types.js'
import {
  BACKUP_FILE,
  FileMetaSchema,
  FileRootSchema,
  backUpContent,
  backupDirOf,
  checkBackupRoom,
  checkPathText,
  createFromBackup,
  describeMeta,
  exists,
  fileClaim,
  fileRootOf,
  freshBackupDir,
  hashFd,
  metaOf,
  overwriteFromBackup,
  removeBackupDir,
  reopen,
  requireRegularFile,
  restoreMeta,
  rootText,
  sameInode,
  stateDirFacts,
  tempNameOf,
  underProtectedPrefix,
  withResolved,
  type FileMeta,
  type FileRoot,
  type Resolved,
} from './files.js'

/*
 * The skeleton the file-* kinds share: one regular file, found at gather, backed up under
 * <stateDir>/backups/<injection id>/ with its sha256, owner, mode and times recorded in the
 * journal before the change, and put back byte-identical at recovery.
 */

/** What every file fault's plan and state record. */
export const FileStateFields = {
  root: FileRootSchema,
  path: Type.String({ description: 'The file, as the target sees it' }),
  backupDir: Type.String({ description: '<state dir>/backups/<injection id>' }),
  tempName: Type.String({ description: 'Name a recreated file has until it is complete (when the filesystem lacks O_TMPFILE)' }),
  phase: Type.Enum(['planned', 'backed-up'], { description: 'planned: nothing changed yet; backed-up: the original is recorded and the change may have happened' }),
  original: Type.Optional(FileMetaSchema),
}
const FileStateSchema = Type.Object(FileStateFields)
export type FileState = Static<typeof FileStateSchema>

/** What the plan adds: the file as it was found, for dryRun. */
export const FilePlanFields = {
  ...FileStateFields,
  file: FileMetaSchema,
  force: Type.Boolean(),
  claims: Type.Array(Type.String(), { description: 'file:<dev>:<ino>: one file fault per file at a time' }),
}

export interface FileFacts {
  root: FileRoot
  stateDir: string
  meta: FileMeta
}

/**
 * Resolves and checks the file and records it as found; `read` (for kinds that compute their
 * change from the content) gets it open for reading.
 */
export async function gatherFile<T = undefined>(
  spec: { path: string; force?: boolean },
  target: ResolvedTarget,
  ctx: GatherContext,
  kind: string,
  read?: (fd: number, meta: FileMeta, where: string) => Promise<T>,
): Promise<FileFacts & { read: T }> {
  checkPathText(spec.path)
  const force = spec.force ?? false
  const prefix = underProtectedPrefix(spec.path)
  if (prefix && !force) throw new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${spec.path} is under ${prefix}; add force: true if you really mean it`)
  const stateDir = stateDirFacts(ctx)
  const root = fileRootOf(target, ctx.paths.procRoot, kind)
  return withResolved(root, ctx.paths.procRoot, spec.path, {}, async (r) => {
    const meta = metaOf(requireRegularFile(r, spec.path, root, stateDir, force))
    let extra = undefined as T
    if (read) {
      const fd = reopen(r.fd!, fsConstants.O_RDONLY)
      try {
        extra = await read(fd, meta, `${spec.path}${rootText(root)}`)
      } finally {
        closeSync(fd)
      }
    }
    return { root, stateDir: stateDir.path, meta, read: extra }
  })
}

/** The plan fields every file fault has, from its facts. */
export function filePlanBase(spec: { path: string; force?: boolean }, facts: FileFacts, injectionId: string) {
  return {
    root: facts.root,
    path: spec.path,
    backupDir: backupDirOf(facts.stateDir, injectionId),
    tempName: tempNameOf(injectionId),
    phase: 'planned' as const,
    file: facts.meta,
    force: spec.force ?? false,
    claims: [fileClaim(facts.meta)],
  }
}

export const where = (s: { path: string; root: FileRoot }) => `${s.path}${rootText(s.root)}`

/** The apply step that backs the file up, for plans. */
export function backupStep(plan: { path: string; root: FileRoot; backupDir: string; file: FileMeta }): PlanStep {
  return {
    phase: 'apply',
    action: 'file',
    detail: `copy ${where(plan)} (${describeMeta(plan.file)}) to ${join(plan.backupDir, BACKUP_FILE)}; its sha256, owner, mode, atime and mtime go to the journal before anything changes`,
  }
}

export function plannedFileState(plan: FileState): FileState {
  const { root, path, backupDir, tempName } = plan
  return { root, path, backupDir, tempName, phase: 'planned' }
}

/**
 * Opens the planned file for writing, checks it is still the one planned (same inode), copies it
 * to the backup, lets `precheck` refuse, commits the backed-up state (with `extra`, the kind's
 * own undo facts) to the journal, and only then lets `change` act on it.
 */
export async function applyWithBackup<Extra extends object>(
  plan: FileState & { file: FileMeta },
  extra: Extra,
  ctx: ApplyContext,
  hooks: {
    precheck?(original: FileMeta): void
    change(fd: number, original: FileMeta, r: Resolved): Promise<void>
  },
): Promise<FileState & Extra> {
  return withResolved(plan.root, ctx.paths.procRoot, plan.path, {}, async (r) => {
    const st = currentFile(r, plan)
    checkBackupRoom(join(plan.backupDir, '..', '..'), Number(st.size), plan.path)
    const fd = reopen(r.fd!, fsConstants.O_RDWR)
    try {
      freshBackupDir(plan.backupDir)
      const original = await backUpContent(fd, plan.backupDir, where(plan))
      hooks.precheck?.(original)
      const state = { ...plannedFileState(plan), ...extra, phase: 'backed-up' as const, original }
      ctx.checkpoint(state)
      await hooks.change(fd, original, r)
      return state
    } finally {
      closeSync(fd)
    }
  })
}

/** The entry is still the regular file the plan was made for. */
export function currentFile(r: Resolved, plan: { path: string; root: FileRoot; file: FileMeta }): BigIntStats {
  if (r.fd === undefined || !r.stat) throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `${where(plan)} disappeared since it was planned; nothing was changed`)
  if (!r.stat.isFile() || !sameInode(r.stat, plan.file)) {
    throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `${where(plan)} was replaced by another file since it was planned; nothing was changed, try again`)
  }
  return r.stat
}

/**
 * How one kind puts content back into the file that is at the path at recovery (open for
 * writing). Returns whether the original times may be restored (not when others' writes are
 * kept) and a note for the injection.
 */
export type ContentRestorer = (fd: number, backupPath: string, original: FileMeta) => Promise<{ times: boolean; note?: string; rewritten?: boolean }>

/** The default: the backup's content, whole, unless the file already has it. */
export const restoreWhole: ContentRestorer = async (fd, backupPath, original) => {
  const current = await hashFd(fd)
  if (current.size === original.size && current.sha256 === original.sha256) return { times: true, rewritten: false }
  await overwriteFromBackup(fd, backupPath)
  return { times: true, rewritten: true }
}

/**
 * Recovery of a content fault: whatever is at the path ends byte-identical to the original —
 * the kind's restorer decides how — with its owner, mode and times. A file removed meanwhile is
 * recreated. The backup is removed last, so a recovery that dies halfway simply runs again.
 */
export async function recoverContent(state: FileState, ctx: RecoverContext, restore: ContentRestorer): Promise<RecoverOutcome> {
  if (state.phase === 'planned') {
    removeBackupDir(state.backupDir)
    return {}
  }
  const backup = join(state.backupDir, BACKUP_FILE)
  if (!exists(backup)) return {} // removed last: an earlier recovery finished
  const original = state.original!
  return withRecoverableRoot(state, backup, async (r, notes) => {
    if (r.fd === undefined) {
      await createFromBackup(r.dirFd, r.name, backup, original, { replace: false, tempName: state.tempName })
      notes.push(`${where(state)} had been removed during the fault; recreated from the backup`)
    } else if (!r.stat!.isFile()) {
      return { note: `${where(state)} is no longer a regular file; left alone, the original is kept at ${backup}`, keepBackup: true }
    } else {
      if (!sameInode(r.stat!, original)) notes.push(`${where(state)} had been replaced by another file during the fault; the original was written into it`)
      const fd = reopen(r.fd, fsConstants.O_RDWR)
      try {
        const outcome = await restore(fd, backup, original)
        restoreMeta(fd, original, { times: outcome.times })
        if (outcome.note) notes.push(outcome.note)
      } finally {
        closeSync(fd)
      }
    }
    return {}
  }, ctx)
}

/**
 * Runs a recovery step on the file's directory, reached even if the container's init changed;
 * removes the backup afterwards unless the step keeps it. A target whose files cannot be reached
 * any more (container removed) is recovered with a note, and its backup is kept for a person.
 */
export async function withRecoverableRoot(
  state: FileState,
  backup: string,
  step: (r: Resolved, notes: string[]) => Promise<{ note?: string; keepBackup?: boolean }>,
  ctx: RecoverContext,
): Promise<RecoverOutcome> {
  try {
    return await withResolved(state.root, ctx.paths.procRoot, state.path, { successor: true }, async (r) => {
      const notes = r.note ? [r.note] : []
      const outcome = await step(r, notes)
      if (outcome.note) notes.push(outcome.note)
      if (!outcome.keepBackup) removeBackupDir(state.backupDir)
      return notes.length ? { note: notes.join('; ') } : {}
    })
  } catch (err) {
    if (isFaultlineError(err) && (err.code === 'FAULTLINE_ERR_TARGET_GONE' || err.code === 'FAULTLINE_ERR_PATH_NOT_FOUND')) {
      if (!exists(backup)) return { note: err.message }
      ctx.log.warn({ err, backup }, 'the faulted file cannot be reached; its backup is kept')
      return { note: `${err.message}; the original is kept at ${backup}` }
    }
    throw err
  }
}

/** What every file-* kind shares: recoverable, on the host, a process's or a container's root, through openat2. */
export const fileKindCommon = {
  requires: ['openat2'],
  exclusive: false,
} as const
