import { Type, type Static } from 'typebox'

/**
 * A plan step says exactly what the agent will do to the host, in order: which syscall or which
 * command (argv, never a shell string), on what. Plans back dryRun and are kept in the journal.
 */
export const PlanStepSchema = Type.Object(
  {
    phase: Type.Union([Type.Literal('apply'), Type.Literal('recover')]),
    action: Type.String({ description: 'syscall, exec, file, ...' }),
    detail: Type.String({ description: 'One human-readable line' }),
    argv: Type.Optional(Type.Array(Type.String(), { description: 'For exec steps: the exact argv' })),
  },
  { additionalProperties: false },
)
export type PlanStep = Static<typeof PlanStepSchema>

/** The kind-specific plan: steps for people, the other fields for apply. */
export const PlanSchema = Type.Object(
  {
    steps: Type.Array(PlanStepSchema),
    claims: Type.Optional(
      Type.Array(Type.String(), { description: 'Host resources held exclusively while the injection is on the host, e.g. "tc-root:<netns inode>:eth0"' }),
    ),
  },
  { additionalProperties: true },
)
export type Plan = Static<typeof PlanSchema> & Record<string, unknown>
