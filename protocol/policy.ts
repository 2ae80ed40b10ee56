import { Type, type Static } from 'typebox'
import { DurationSchema } from './duration.js'
import { containerRuntimes } from './target.js'

/**
 * The host policy: what the host's owner allows on this host, whoever asks (the agent's API, the
 * CLI, the server). A YAML file on the host (`faultline agent --policy FILE`), read at start; no
 * request can widen it. Every rule is optional; a rule that is present only narrows. Refusals
 * are 403 FAULTLINE_ERR_POLICY naming the rule (docs/operations.md#host-policy).
 */
const strict = { additionalProperties: false } as const
const Names = (what: string) => Type.Array(Type.String({ minLength: 1, maxLength: 253 }), { minItems: 1, maxItems: 256, description: what })

export const PolicyTargetRuleSchema = Type.Union(
  [
    Type.Object({ type: Type.Literal('host') }, { ...strict, title: 'the host itself' }),
    Type.Object(
      { type: Type.Literal('process'), names: Type.Optional(Names('Process names (comm) allowed; default: any process')) },
      { ...strict, title: 'processes' },
    ),
    Type.Object(
      { type: Type.Literal('netns'), names: Type.Optional(Names('Named network namespaces allowed; default: any')) },
      { ...strict, title: 'named network namespaces' },
    ),
    Type.Object(
      {
        type: Type.Literal('container'),
        labels: Type.Optional(
          Type.Record(Type.String({ minLength: 1, maxLength: 253 }), Type.String({ maxLength: 1024 }), {
            minProperties: 1,
            description: 'Every label given must be on the container with this value',
          }),
        ),
        names: Type.Optional(Names('Container names allowed')),
        images: Type.Optional(Names('Image references allowed (without a tag: any tag of that repository)')),
        runtimes: Type.Optional(Type.Array(Type.Enum(containerRuntimes), { minItems: 1 })),
      },
      { ...strict, title: 'containers' },
    ),
  ],
  { description: 'A target is allowed when it matches every field of at least one rule' },
)
export type PolicyTargetRule = Static<typeof PolicyTargetRuleSchema>

/** A bound on one parameter: a number or value in the parameter's own grammar ("500ms", "1GiB", "1mbit"), a maximum unless given as { min }. */
export const PolicyBoundSchema = Type.Union([
  Type.Number(),
  Type.String({ minLength: 1, maxLength: 64 }),
  Type.Object(
    {
      max: Type.Optional(Type.Union([Type.Number(), Type.String({ minLength: 1, maxLength: 64 })])),
      min: Type.Optional(Type.Union([Type.Number(), Type.String({ minLength: 1, maxLength: 64 })])),
    },
    { ...strict, minProperties: 1 },
  ),
])
export type PolicyBound = Static<typeof PolicyBoundSchema>

export const HostPolicySchema = Type.Object(
  {
    kinds: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { minItems: 1, uniqueItems: true, description: 'The only fault kinds allowed' })),
    targets: Type.Optional(Type.Array(PolicyTargetRuleSchema, { minItems: 1, maxItems: 256, description: 'The only targets allowed' })),
    paths: Type.Optional(
      Type.Array(Type.String({ pattern: '^/', maxLength: 4096 }), {
        minItems: 1,
        maxItems: 256,
        description: "Directories a fault's path (file, disk and stress-io faults) must be in, as the target sees them",
      }),
    ),
    maxDuration: Type.Optional(DurationSchema),
    limits: Type.Optional(
      Type.Record(Type.String({ minLength: 1, maxLength: 64 }), Type.Record(Type.String({ minLength: 1, maxLength: 64 }), PolicyBoundSchema), {
        description: 'Per kind, per parameter: the largest (or { min: ... } the smallest) value allowed; the parameter must then be given',
      }),
    ),
    networks: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 64 }), {
        minItems: 1,
        maxItems: 256,
        description: 'CIDRs network faults never touch: a network fault must name its peers, none of them in these',
      }),
    ),
  },
  { ...strict, title: 'HostPolicy' },
)
export type HostPolicy = Static<typeof HostPolicySchema>

/** The policy in force, as GET /v1/capabilities reports it. */
export const PolicyInForceSchema = Type.Object({
  file: Type.String({ description: 'Where the host owner wrote it' }),
  rules: HostPolicySchema,
})
export type PolicyInForce = Static<typeof PolicyInForceSchema>
