import { fileAppendSpec } from '../../../protocol/faults/file-append.js'
import { closeSync, constants as fsConstants, fstatSync, ftruncateSync, fsyncSync } from 'node:fs'
import { Type } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import { PlanStepSchema } from '../../../protocol/plan.js'
import {
  FilePlanFields,
  FileStateFields,
  fileKindCommon,
  applyWithBackup,
  backupStep,
  filePlanBase,
  gatherFile,
  plannedFileState,
  recoverContent,
  restoreWhole,
  where,
  type ContentRestorer,
  type FileFacts,
} from '../shared/files-fault.js'
import { hashFd, readAt, reopen, sha256Of, writeAll } from '../shared/files.js'
import { defineFault } from '../types.js'

/** Past this, bytes written after ours are not kept: the file is restored from the backup whole. */
const MAX_KEPT_TAIL = 64 * 1024 * 1024

const AppendedFields = {
  data: Type.String({ description: 'The appended bytes, base64' }),
  length: Type.Integer({ minimum: 1 }),
  sha256: Type.String(),
}

function dataOf(spec: { text?: string; base64?: string }): Buffer {
  if ((spec.text === undefined) === (spec.base64 === undefined)) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'file-append needs exactly one of "text" (UTF-8) or "base64" (any bytes)')
  }
  const data = spec.text !== undefined ? Buffer.from(spec.text, 'utf8') : Buffer.from(spec.base64!, 'base64')
  if (data.length === 0) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'nothing to append')
  return data
}

function preview(data: Buffer): string {
  const text = data.toString('utf8')
  const printable = !text.includes('\uFFFD') && /^[\P{Cc}\n\t\r]*$/u.test(text)
  const shown = printable ? JSON.stringify(text.length > 120 ? `${text.slice(0, 120)}…` : text) : `0x${data.subarray(0, 48).toString('hex')}${data.length > 48 ? '…' : ''}`
  return shown
}

/**
 * Recovery takes out exactly the bytes the fault appended: when the file still starts with the
 * original content and holds our bytes after it, they are cut out and anything written after
 * them (a log that kept growing) is kept. Otherwise — truncated, rotated into place, rewritten —
 * the backup is restored whole.
 */
function cutAppended(appended: { data: string; length: number }): ContentRestorer {
  return async (fd, backupPath, original) => {
    const ours = Buffer.from(appended.data, 'base64')
    const size = fstatSync(fd).size
    const tailLength = size - original.size
    if (tailLength >= ours.length && tailLength - ours.length <= MAX_KEPT_TAIL) {
      const prefix = await hashFd(fd, { length: original.size })
      if (prefix.size === original.size && prefix.sha256 === original.sha256) {
        const tail = await readAt(fd, original.size, tailLength)
        const at = tail.indexOf(ours)
        if (at >= 0) {
          const kept = Buffer.concat([tail.subarray(0, at), tail.subarray(at + ours.length)])
          await writeAll(fd, kept, original.size)
          ftruncateSync(fd, original.size + kept.length)
          fsyncSync(fd)
          if (kept.length === 0) return { times: true }
          return { times: false, note: `cut the ${ours.length} appended bytes out; kept the ${kept.length} bytes written to the file during the fault (so its mtime is theirs)` }
        }
      }
    }
    const whole = await restoreWhole(fd, backupPath, original)
    if (!whole.rewritten) return whole // the agent died before it appended anything
    return { ...whole, note: 'the file had been changed during the fault beyond the appended bytes; restored from the backup, so those changes are gone' }
  }
}

export const fileAppend = defineFault(fileAppendSpec, {
  planSchema: Type.Object({ ...FilePlanFields, appended: Type.Object(AppendedFields), offset: Type.Integer(), steps: Type.Array(PlanStepSchema) }),
  stateSchema: Type.Object({ ...FileStateFields, appended: Type.Object(AppendedFields) }),
  ...fileKindCommon,

  gather: (spec, target, ctx): Promise<FileFacts> => gatherFile(spec, target, ctx, 'file-append'),

  plan(spec, _target, ctx) {
    const data = dataOf(spec)
    const base = filePlanBase(spec, ctx.facts, ctx.injectionId)
    const appended = { data: data.toString('base64'), length: data.length, sha256: sha256Of(data) }
    return {
      ...base,
      appended,
      offset: base.file.size,
      steps: [
        backupStep(base),
        { phase: 'apply' as const, action: 'write', detail: `append ${data.length} bytes (sha256 ${appended.sha256.slice(0, 16)}…: ${preview(data)}) to ${where(base)}, at its end (offset ${base.file.size} now)` },
        {
          phase: 'recover' as const,
          action: 'write',
          detail: `if ${where(base)} still starts with its original ${base.file.size} bytes followed by the appended ones: cut those out, keeping anything written after them; otherwise write the backup back whole. Then owner, mode and times from the journal`,
        },
      ],
    }
  },

  undoFromPlan: (plan) => ({ ...plannedFileState(plan), appended: plan.appended }),

  async apply(plan, ctx) {
    const data = Buffer.from(plan.appended.data, 'base64')
    return applyWithBackup(plan, { appended: plan.appended }, ctx, {
      async change(_fd, _original, r) {
        // O_APPEND: the bytes land at the end even if the file grew since the backup
        const fd = reopen(r.fd!, fsConstants.O_WRONLY | fsConstants.O_APPEND)
        try {
          await writeAll(fd, data, null)
          fsyncSync(fd)
        } finally {
          closeSync(fd)
        }
      },
    })
  },

  recover: (state, ctx) => recoverContent(state, ctx, cutAppended(state.appended)),
})
