import { Type, type Static } from 'typebox'
import { CapabilitiesSchema } from './capabilities.js'
import { DurationSchema } from './duration.js'
import { CreateInjectionBodySchema, ErrorInfoSchema, InjectionSchema, UpdateReasonSchema } from './injection.js'
import { ResolvedTargetSchema } from './target.js'

/**
 * The agent <-> server link: JSON messages over one WebSocket that the agent dials out
 * (wss://server/v1/agents/connect). Every message carries the protocol version `v` and a
 * `type`; both sides validate every message against this union and drop what does not match
 * (answering `error` when the message had an id), without closing the link for it.
 *
 * Authentication happens in the HTTP upgrade, before any message:
 *   - first contact: `Authorization: Bearer <enrolment token>`; the server answers `welcome`
 *     with a credential of the agent's own, which the agent keeps in its state dir (0600);
 *   - afterwards: `Authorization: Agent <agentId>:<secret>`.
 *
 * Leases (DESIGN section 2): every injection the server asks for is bound to the server's lease.
 * The server renews it with `lease` messages (at least every leaseMs / 3); an agent that has not
 * seen a renewal for leaseMs recovers every lease-bound injection on its own (dead-man's switch)
 * and reports what it did in `injection-update` messages once the link is back.
 */
export const LINK_PROTOCOL_VERSION = 1
export const MAX_LINK_MESSAGE_BYTES = 1024 * 1024

const v = Type.Literal(LINK_PROTOCOL_VERSION)
const strict = { additionalProperties: false } as const
const Labels = Type.Record(Type.String({ minLength: 1, maxLength: 63 }), Type.String({ maxLength: 63 }), { maxProperties: 64 })
const Id = Type.String({ minLength: 1, maxLength: 128 })

// ---- guards (evaluated on the agent, so they work while the server is unreachable) -------------

export const GuardSchema = Type.Union(
  [
    Type.Object(
      {
        http: Type.Object(
          {
            url: Type.String({ pattern: '^https?://', maxLength: 2048 }),
            expectStatus: Type.Optional(Type.Integer({ minimum: 100, maximum: 599, description: 'Default 200' })),
            timeout: Type.Optional(DurationSchema),
          },
          strict,
        ),
        every: DurationSchema,
        failures: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: 'Consecutive failures that abort (default 1)' })),
      },
      { ...strict, title: 'http guard' },
    ),
    Type.Object(
      {
        tcp: Type.Object(
          { host: Type.String({ minLength: 1, maxLength: 253 }), port: Type.Integer({ minimum: 1, maximum: 65535 }), timeout: Type.Optional(DurationSchema) },
          strict,
        ),
        every: DurationSchema,
        failures: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
      },
      { ...strict, title: 'tcp guard' },
    ),
    Type.Object(
      {
        command: Type.Object(
          {
            argv: Type.Array(Type.String({ maxLength: 4096 }), { minItems: 1, maxItems: 64, description: 'Run without a shell; exit status 0 passes' }),
            timeout: Type.Optional(DurationSchema),
          },
          strict,
        ),
        every: DurationSchema,
        failures: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
      },
      { ...strict, title: 'command guard' },
    ),
  ],
  { description: 'A check that aborts the injections of this run on this host when it fails' },
)
export type Guard = Static<typeof GuardSchema>

// ---- agent -> server ----------------------------------------------------------------------------

export const HelloSchema = Type.Object(
  {
    v,
    type: Type.Literal('hello'),
    agentId: Id,
    version: Type.String({ maxLength: 64 }),
    hostname: Type.String({ maxLength: 253 }),
    labels: Labels,
    capabilities: CapabilitiesSchema,
    /** What the agent can target right now (containers, named netns); processes are not sent. */
    targets: Type.Array(ResolvedTargetSchema, { maxItems: 5000 }),
    /** Injections of server runs that are still open on the agent (after a reconnect). */
    open: Type.Array(InjectionSchema, { maxItems: 10000 }),
  },
  { ...strict, title: 'hello' },
)

export const HeartbeatSchema = Type.Object({ v, type: Type.Literal('heartbeat'), at: Type.String({ format: 'date-time' }) }, { ...strict, title: 'heartbeat' })

/** Answer to `inject`: the injections created (or the same ones again, idempotently), or why not. */
export const InjectResultSchema = Type.Object(
  {
    v,
    type: Type.Literal('inject-result'),
    requestId: Id,
    injections: Type.Array(InjectionSchema),
    error: Type.Optional(ErrorInfoSchema),
  },
  { ...strict, title: 'inject-result' },
)

/**
 * Sent whenever a lease-bound injection changes status, and for all of them after a reconnect.
 * An apply made while answering an `inject` is reported by that inject-result alone (each inject
 * is answered once); agents before that change also sent this update for it, and the server
 * takes either (the same state written twice changes nothing).
 */
export const InjectionUpdateSchema = Type.Object(
  {
    v,
    type: Type.Literal('injection-update'),
    injection: InjectionSchema,
    /** Why it changed: apply, or why it was recovered (deadline, api, halt, lease, guard, restart, ...). */
    reason: UpdateReasonSchema,
    runId: Type.Optional(Id),
    detail: Type.Optional(Type.String({ maxLength: 4096 })),
  },
  { ...strict, title: 'injection-update' },
)

/** Answer to `recover` / `halt`. */
export const AckSchema = Type.Object(
  { v, type: Type.Literal('ack'), requestId: Id, error: Type.Optional(ErrorInfoSchema) },
  { ...strict, title: 'ack' },
)

export const AgentMessageSchema = Type.Union([HelloSchema, HeartbeatSchema, InjectResultSchema, InjectionUpdateSchema, AckSchema])
export type AgentMessage = Static<typeof AgentMessageSchema>

// ---- server -> agent ----------------------------------------------------------------------------

export const WelcomeSchema = Type.Object(
  {
    v,
    type: Type.Literal('welcome'),
    agentId: Id,
    /** Present on first contact (enrolment): the agent's own credential, to keep and reuse. */
    credential: Type.Optional(Type.String({ minLength: 32, maxLength: 256 })),
    leaseMs: Type.Integer({ minimum: 1000 }),
    heartbeatMs: Type.Integer({ minimum: 500 }),
  },
  { ...strict, title: 'welcome' },
)

export const LeaseSchema = Type.Object(
  { v, type: Type.Literal('lease'), leaseMs: Type.Integer({ minimum: 1000 }) },
  { ...strict, title: 'lease' },
)

export const InjectCommandSchema = Type.Object(
  {
    v,
    type: Type.Literal('inject'),
    /** Idempotency: the same requestId posted again returns the same injections. */
    requestId: Id,
    runId: Type.Optional(Id),
    body: CreateInjectionBodySchema,
    guards: Type.Optional(Type.Array(GuardSchema, { maxItems: 16 })),
  },
  { ...strict, title: 'inject' },
)

export const RecoverCommandSchema = Type.Object(
  {
    v,
    type: Type.Literal('recover'),
    requestId: Id,
    /** Recover these injections; or every injection of this run; or (neither) nothing. */
    injectionIds: Type.Optional(Type.Array(Id, { maxItems: 10000 })),
    runId: Type.Optional(Id),
  },
  { ...strict, title: 'recover' },
)

export const HaltCommandSchema = Type.Object(
  { v, type: Type.Literal('halt'), requestId: Id },
  { ...strict, title: 'halt', description: 'Recover every injection on the agent, whoever created it' },
)

export const ErrorMessageSchema = Type.Object(
  { v, type: Type.Literal('error'), code: Type.String(), message: Type.String(), requestId: Type.Optional(Id) },
  { ...strict, title: 'error' },
)

export const ServerMessageSchema = Type.Union([WelcomeSchema, LeaseSchema, InjectCommandSchema, RecoverCommandSchema, HaltCommandSchema, ErrorMessageSchema])
export type ServerMessage = Static<typeof ServerMessageSchema>
