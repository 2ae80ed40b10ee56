import { Type, type Static } from 'typebox'
import { DurationSchema } from './duration.js'
import { FaultSpecSchema, type FaultSpec } from './fault.js'
import { PlanSchema } from './plan.js'
import { ID_PATTERN } from './id.js'
import { ResolvedTargetSchema, TargetSelectorSchema, type TargetSelector } from './target.js'

/** pending -> applying -> active -> recovering -> recovered, or failed (DESIGN section 2). */
export const injectionStatuses = ['pending', 'applying', 'active', 'recovering', 'recovered', 'failed'] as const
export type InjectionStatus = (typeof injectionStatuses)[number]
export const InjectionStatusSchema = Type.Enum(injectionStatuses)

/** Statuses of an injection that may still be on the host, or is about to be. */
export const openInjectionStatuses = ['pending', 'applying', 'active', 'recovering'] as const satisfies readonly InjectionStatus[]
export type OpenInjectionStatus = (typeof openInjectionStatuses)[number]
const open: ReadonlySet<string> = new Set(openInjectionStatuses)

export function isOpenStatus(status: string): status is OpenInjectionStatus {
  return open.has(status)
}

/**
 * Why an injection was taken back out:
 *   api       DELETE /v1/injections/:id (or the CLI's Ctrl-C)     halt      recover everything
 *   deadline  its duration ended                                 retry     a failed recovery, again
 *   shutdown  the agent stopped (SIGTERM)                        restart   found open at agent start
 *   rollback  another target of the same request failed         lease     the server was gone too long
 *   guard     a guard of its run failed on the agent             abort     its run was aborted
 */
export const recoverReasons = ['api', 'halt', 'deadline', 'shutdown', 'restart', 'rollback', 'retry', 'lease', 'guard', 'abort'] as const
export type RecoverReason = (typeof recoverReasons)[number]

/** Why an injection changed status: 'apply' while it is being applied, else why it was recovered. */
export const updateReasons = ['apply', ...recoverReasons] as const
export type UpdateReason = (typeof updateReasons)[number]
export const UpdateReasonSchema = Type.Enum(updateReasons)
export const InjectionIdSchema = Type.String({
  pattern: ID_PATTERN,
  maxLength: 64,
  description: 'Letters, digits, ".", "_" and "-"; at most 64 characters',
})

export const ErrorInfoSchema = Type.Object({ code: Type.String(), message: Type.String() })

export const InjectionSchema = Type.Object(
  {
    id: Type.String(),
    requestId: Type.String({ description: 'The id of the request that created it; shared by every injection of a multi-target request' }),
    kind: Type.String(),
    status: InjectionStatusSchema,
    fault: Type.Unknown({ description: 'The fault spec as requested (after defaults)' }),
    target: Type.Unknown({ description: 'The target selector as requested' }),
    resolved: ResolvedTargetSchema,
    plan: PlanSchema,
    duration: Type.String(),
    durationMs: Type.Integer(),
    recoverable: Type.Boolean(),
    createdAt: Type.String({ format: 'date-time' }),
    expiresAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    recoveredAt: Type.Optional(Type.String({ format: 'date-time' })),
    error: Type.Optional(ErrorInfoSchema),
    notes: Type.Array(Type.String(), { description: 'What happened that a user should know, oldest first' }),
    dryRun: Type.Optional(Type.Boolean()),
  },
  { title: 'Injection' },
)
export type Injection = Static<typeof InjectionSchema> & { fault: FaultSpec; target: TargetSelector }

export const CreateInjectionBodySchema = Type.Object(
  {
    fault: FaultSpecSchema,
    target: TargetSelectorSchema,
    duration: DurationSchema,
    id: Type.Optional(InjectionIdSchema),
    dryRun: Type.Optional(Type.Boolean({ default: false })),
    maxTargets: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 10_000,
        description: 'How many targets the selector may match (default 1): more is refused with the list of what matched, so a loose name or regex never freezes a whole host by surprise. Set it to fault several',
      }),
    ),
  },
  { additionalProperties: false },
)
export type CreateInjectionBody = Static<typeof CreateInjectionBodySchema>

/** One matched target gives the injection itself; several give { injections: [...] }. */
export const InjectionBatchSchema = Type.Object({ injections: Type.Array(InjectionSchema) })
export const CreateInjectionReplySchema = Type.Union([InjectionSchema, InjectionBatchSchema])

export const InjectionListSchema = Type.Object({ injections: Type.Array(InjectionSchema) })
