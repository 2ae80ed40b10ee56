import { Type, type Static } from 'typebox'
import { DurationSchema } from './duration.js'
import { FaultSpecSchema } from './fault.js'
import { GuardSchema } from './link.js'
import { TargetSelectorSchema } from './target.js'

/**
 * An experiment (DESIGN section 5): which hosts, how many of them, what target on each, which
 * fault, for how long, optionally on a schedule and guarded by checks the agents evaluate.
 * Accepted as JSON or YAML (the same shape).
 */
const strict = { additionalProperties: false } as const

export const HostSelectorSchema = Type.Union([
  Type.Object({ labels: Type.Record(Type.String({ minLength: 1, maxLength: 63 }), Type.String({ maxLength: 63 }), { minProperties: 1 }) }, { ...strict, title: 'hosts by labels' }),
  Type.Object({ names: Type.Array(Type.String({ minLength: 1, maxLength: 253 }), { minItems: 1, maxItems: 10000 }) }, { ...strict, title: 'hosts by name (agent id or hostname)' }),
  Type.Object({ all: Type.Literal(true) }, { ...strict, title: 'every host' }),
])

export const ModeSchema = Type.Union([
  Type.Literal('all'),
  Type.Literal('one'),
  Type.Object({ fixed: Type.Integer({ minimum: 1, maximum: 100000, description: 'How many of the matching hosts' }) }, { ...strict, title: 'a fixed number of hosts' }),
  Type.Object({ percent: Type.Number({ exclusiveMinimum: 0, maximum: 100, description: 'Which share of the matching hosts, in percent, rounded up' }) }, { ...strict, title: 'a percentage of the matching hosts (rounded up)' }),
])

export const ExperimentSchema = Type.Object(
  {
    name: Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,62}$', description: 'Lower case letters, digits, ".", "_", "-"' }),
    description: Type.Optional(Type.String({ maxLength: 4096 })),
    hosts: HostSelectorSchema,
    mode: Type.Optional(ModeSchema),
    target: TargetSelectorSchema,
    fault: FaultSpecSchema,
    duration: DurationSchema,
    schedule: Type.Optional(Type.String({ minLength: 9, maxLength: 128, description: 'Cron expression (5 or 6 fields), evaluated by the server' })),
    guards: Type.Optional(Type.Array(GuardSchema, { maxItems: 16 })),
    maxTargets: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000, description: 'How many targets the selector may match on each host (default 1); a host where it matches more fails with the list' })),
  },
  { ...strict, title: 'Experiment' },
)
export type Experiment = Static<typeof ExperimentSchema>
