import { fileCorruptSpec } from '../../../protocol/faults/file-corrupt.js'
import { randomInt } from 'node:crypto'
import { fsyncSync } from 'node:fs'
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
  type FileFacts,
} from '../shared/files-fault.js'
import { hashFd, readAt, writeAll } from '../shared/files.js'
import { defineFault } from '../types.js'


/** mulberry32: a small seeded generator, so a seed names exactly one set of positions and values. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface Corruption {
  offset: number
  before: number
  after: number
}

/**
 * The bytes to change. With `offsets`: each byte there becomes `value`, or its bitwise inverse.
 * With `count`: that many distinct offsets drawn from the seed, each byte XORed with a non-zero
 * value drawn from the seed, so every one of them really changes.
 */
export async function corruptionsOf(
  spec: { offsets?: number[]; value?: number; count?: number },
  seed: number,
  size: number,
  byteAt: (offset: number) => Promise<number>,
): Promise<Corruption[]> {
  const out: Corruption[] = []
  if (spec.offsets) {
    const seen = new Set<number>()
    for (const offset of spec.offsets) {
      if (offset >= size) throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `offset ${offset} is beyond the end of the file (${size} bytes)`)
      if (seen.has(offset)) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `offset ${offset} is listed twice`)
      seen.add(offset)
      const before = await byteAt(offset)
      out.push({ offset, before, after: spec.value ?? (~before & 0xff) })
    }
    return out
  }
  const count = spec.count!
  if (count > size) throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `the file has ${size} bytes, fewer than the ${count} to corrupt`)
  const random = seededRandom(seed)
  const offsets = new Set<number>()
  while (offsets.size < count) offsets.add(Math.floor(random() * size))
  for (const offset of offsets) {
    const before = await byteAt(offset)
    out.push({ offset, before, after: before ^ (1 + Math.floor(random() * 255)) })
  }
  return out
}

const hex = (b: number) => b.toString(16).padStart(2, '0')

interface CorruptFacts extends FileFacts {
  read: { sha256: string; corruptions: Corruption[] }
  seed: number
}

export const fileCorrupt = defineFault(fileCorruptSpec, {
  planSchema: Type.Object({
    ...FilePlanFields,
    seed: Type.Optional(Type.Integer()),
    corruptions: Type.Array(Type.Object({ offset: Type.Integer(), before: Type.Integer(), after: Type.Integer() })),
    sha256Before: Type.String(),
    steps: Type.Array(PlanStepSchema),
  }),
  stateSchema: Type.Object(FileStateFields),
  ...fileKindCommon,

  async gather(spec, target, ctx): Promise<CorruptFacts> {
    if ((spec.offsets === undefined) === (spec.count === undefined)) {
      throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'file-corrupt needs exactly one of "offsets" (bytes at those offsets) or "count" (that many random bytes)')
    }
    if (spec.value !== undefined && spec.offsets === undefined) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', '"value" goes with "offsets"; random bytes get random values')
    if (spec.seed !== undefined && spec.count === undefined) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', '"seed" goes with "count"')
    const seed = spec.seed ?? randomInt(0, 2 ** 32 - 1)
    // Only the bytes to change are read (plus one pass for the sha256): files may be large.
    const facts = await gatherFile(spec, target, ctx, 'file-corrupt', async (fd) => {
      const { sha256, size } = await hashFd(fd)
      const corruptions = await corruptionsOf(spec, seed, size, async (offset) => (await readAt(fd, offset, 1))[0]!)
      return { sha256, corruptions }
    })
    return { ...facts, seed }
  },

  plan(spec, _target, ctx) {
    const f = ctx.facts
    const base = filePlanBase(spec, f, ctx.injectionId)
    const changed = f.read.corruptions.filter((c) => c.before !== c.after)
    if (changed.length === 0) throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `every listed byte of ${where(base)} already has the value ${spec.value}; nothing would change`)
    const listed = f.read.corruptions.slice(0, 32).map((c) => `@${c.offset} ${hex(c.before)}->${hex(c.after)}`).join(', ')
    return {
      ...base,
      ...(spec.count !== undefined ? { seed: f.seed } : {}),
      corruptions: f.read.corruptions,
      sha256Before: f.read.sha256,
      steps: [
        backupStep(base),
        {
          phase: 'apply' as const,
          action: 'write',
          detail: `overwrite ${f.read.corruptions.length} byte${f.read.corruptions.length === 1 ? '' : 's'} of ${where(base)} in place${spec.count !== undefined ? ` (seed ${f.seed})` : ''}: ${listed}${f.read.corruptions.length > 32 ? ', … (all in "corruptions")' : ''}. Refused at apply if the file no longer has sha256 ${f.read.sha256.slice(0, 16)}…`,
        },
        { phase: 'recover' as const, action: 'write', detail: `write the backup back over ${where(base)} in place, then owner, mode and times from the journal` },
      ],
    }
  },

  undoFromPlan: (plan) => plannedFileState(plan),

  async apply(plan, ctx) {
    return applyWithBackup(plan, {}, ctx, {
      precheck(original) {
        if (original.sha256 !== plan.sha256Before) {
          throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `${where(plan)} changed since it was planned; nothing was changed, plan again`)
        }
      },
      async change(fd) {
        for (const c of plan.corruptions) await writeAll(fd, Buffer.of(c.after), c.offset)
        fsyncSync(fd)
      },
    })
  },

  recover: (state, ctx) => recoverContent(state, ctx, restoreWhole),
})
