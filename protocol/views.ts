import { Type, type Static } from 'typebox'
import type { Experiment } from './experiment.js'
import { ErrorInfoSchema, InjectionSchema, updateReasons } from './injection.js'
import { roles } from './roles.js'

/**
 * What the server answers about its fleet, runs, experiments and tokens: one schema per view,
 * used by the server's routes (responses) and, through Static<>, by the CLI and the dashboard.
 */

export const runStatuses = ['pending', 'running', 'completed', 'aborted', 'failed'] as const
export type RunStatus = (typeof runStatuses)[number]

/** What started a run: a call to the API (or the CLI, or the dashboard), or the experiment's schedule. */
export const runTriggers = ['api', 'schedule'] as const
export type RunTrigger = (typeof runTriggers)[number]

/** One host x target of a run. sent and active are open; the others are final. */
export const recordStatuses = ['sent', 'active', 'recovered', 'failed', 'aborted', 'offline', 'skipped'] as const
export type RecordStatus = (typeof recordStatuses)[number]
export const terminalRecordStatuses = ['recovered', 'failed', 'aborted', 'offline', 'skipped'] as const satisfies readonly RecordStatus[]

/**
 * Why a record is in its status: the reason of the agent's last update (protocol/injection.ts),
 * or what the server decided itself:
 *   timeout        the agent did not answer the inject, or did not report the end, in time
 *   offline        the agent was not connected in time to receive the inject
 *   lost           the agent disconnected during the run (its lease recovers what it had)
 *   missing        after a reconnect the agent no longer had the injection and did not say why
 *   not-chosen     connected, but not picked by the run's mode
 *   not-connected  not connected when the run started
 *   policy         the host policy of the agent refused the fault (FAULTLINE_ERR_POLICY)
 * and "" while the record is open.
 */
export const recordReasons = ['', ...updateReasons, 'timeout', 'offline', 'lost', 'missing', 'not-chosen', 'not-connected', 'policy'] as const
export type RecordReason = (typeof recordReasons)[number]

const ErrorInfo = Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()])

export const RunRecordSchema = Type.Object({
  agent: Type.String(),
  target: Type.String({ description: 'The concrete target, as the agent resolved it ("" before the agent answered)' }),
  injectionId: Type.String(),
  status: Type.Enum(recordStatuses),
  reason: Type.Enum(recordReasons, { description: 'Why the record is in its status: deadline, abort, halt, guard, lease, apply, timeout, lost, ... ("" while open)' }),
  error: ErrorInfo,
  updatedAt: Type.String({ format: 'date-time' }),
})
export type RunRecordView = Static<typeof RunRecordSchema>

export const RunSelectionSchema = Type.Object({
  matched: Type.Integer(),
  connected: Type.Integer(),
  chosen: Type.Integer(),
  mode: Type.String(),
  requested: Type.Optional(Type.Integer({ description: 'How many hosts the mode asked for (one, fixed N), when fewer were connected than that' })),
})

export const RunSchema = Type.Object(
  {
    id: Type.String(),
    experiment: Type.String(),
    status: Type.Enum(runStatuses),
    trigger: Type.Enum(runTriggers, { description: 'api or schedule' }),
    startedBy: Type.String(),
    startedAt: Type.String({ format: 'date-time' }),
    endedAt: Type.Optional(Type.String({ format: 'date-time' })),
    abortRequestedAt: Type.Optional(Type.String({ format: 'date-time' })),
    abortedBy: Type.Optional(Type.String()),
    selection: RunSelectionSchema,
    duration: Type.String(),
    records: Type.Array(RunRecordSchema),
  },
  { title: 'Run' },
)
export type RunView = Static<typeof RunSchema>

export const RunSummarySchema = Type.Object({
  id: Type.String(),
  experiment: Type.String(),
  status: Type.Enum(runStatuses),
  trigger: Type.Enum(runTriggers),
  startedBy: Type.String(),
  startedAt: Type.String({ format: 'date-time' }),
  endedAt: Type.Optional(Type.String({ format: 'date-time' })),
})
export type RunSummary = Static<typeof RunSummarySchema>

export const ExperimentViewSchema = Type.Object(
  {
    name: Type.String(),
    spec: Type.Unknown({ description: 'The experiment as applied (after defaults)' }),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    updatedBy: Type.String(),
    nextRunAt: Type.Optional(Type.String({ format: 'date-time', description: 'Next scheduled run' })),
    lastRun: Type.Optional(RunSummarySchema),
    warnings: Type.Optional(Type.Array(Type.String(), { description: 'In the answer to an apply: what will make runs fail on some of the selected hosts' })),
  },
  { title: 'ExperimentView' },
)
/** The spec is sent as it was stored (already valid), so the response schema leaves it unchecked. */
export type ExperimentView = Static<typeof ExperimentViewSchema> & { spec: Experiment }

/** One open server record of an agent, as the fleet view lists it. */
export const AgentInjectionSchema = Type.Object({
  runId: Type.String(),
  experiment: Type.String(),
  injectionId: Type.String({ description: '"" until the agent answered the inject' }),
  kind: Type.String({ description: 'The fault kind' }),
  target: Type.String({ description: 'The concrete target ("" until the agent answered)' }),
  status: Type.Enum(['sent', 'active'] as const),
})
export type AgentInjection = Static<typeof AgentInjectionSchema>

export const AgentViewSchema = Type.Object(
  {
    id: Type.String(),
    hostname: Type.String(),
    labels: Type.Record(Type.String(), Type.String()),
    version: Type.String(),
    connected: Type.Boolean(),
    connectedAt: Type.Optional(Type.String({ format: 'date-time' })),
    address: Type.Optional(Type.String()),
    lastSeen: Type.Optional(Type.String({ format: 'date-time' })),
    enrolledAt: Type.String({ format: 'date-time' }),
    kinds: Type.Array(Type.String(), { description: 'Fault kinds available on the host' }),
    targets: Type.Integer({ description: 'Containers and named network namespaces the agent reported' }),
    open: Type.Integer({ description: 'Server injections open on the agent' }),
    invalidMessages: Type.Integer({ description: 'Invalid link messages on the current connection' }),
    unavailable: Type.Record(Type.String(), Type.String(), { description: 'Fault kinds the agent reported unavailable, with its reason' }),
    injections: Type.Array(AgentInjectionSchema, { description: 'Open server records of this agent (sent or active), oldest first' }),
  },
  { title: 'Agent' },
)
export type AgentView = Static<typeof AgentViewSchema>

export const HaltResultSchema = Type.Object({
  agents: Type.Array(Type.Object({ agent: Type.String(), ok: Type.Boolean(), error: Type.Optional(Type.String()) })),
  offline: Type.Array(Type.String(), { description: 'Known agents not connected: they recover through their lease' }),
  runs: Type.Array(Type.String(), { description: 'Runs aborted' }),
})
export type HaltResult = Static<typeof HaltResultSchema>

export const RoleSchema = Type.Enum(roles)

export const ApiTokenSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    role: RoleSchema,
    createdAt: Type.String({ format: 'date-time' }),
    createdBy: Type.String(),
    lastUsedAt: Type.Optional(Type.String({ format: 'date-time' })),
    expiresAt: Type.Optional(Type.String({ format: 'date-time', description: 'When the token stops working (none: never)' })),
  },
  { title: 'ApiToken' },
)
export type ApiTokenView = Static<typeof ApiTokenSchema>
/** The answer to creating a token: the only time its secret is shown. */
export type NewApiToken = ApiTokenView & { token: string }

export const AuditEntrySchema = Type.Object({
  id: Type.Integer(),
  at: Type.String({ format: 'date-time' }),
  who: Type.String(),
  role: Type.String(),
  method: Type.String(),
  route: Type.String(),
  url: Type.String(),
  status: Type.Integer(),
  outcome: Type.String({ description: 'ok, error, unauthenticated or forbidden' }),
  source: Type.String({ description: 'The caller address' }),
})
export type AuditEntry = Static<typeof AuditEntrySchema>

export const FleetEventSchema = Type.Object({
  id: Type.Integer(),
  at: Type.String({ format: 'date-time' }),
  type: Type.String(),
  agentId: Type.Optional(Type.String()),
  runId: Type.Optional(Type.String()),
  message: Type.String(),
  data: Type.Optional(Type.Unknown()),
})
export type FleetEvent = Static<typeof FleetEventSchema>

/** What one selected host would do with an experiment, asked without applying anything. */
export const planOutcomes = ['would-inject', 'refused', 'offline', 'no-answer'] as const

export const ExperimentPlanSchema = Type.Object(
  {
    experiment: Type.String(),
    mode: Type.String({ description: 'How many of the connected hosts a run picks: all, one, fixed N, percent P' }),
    duration: Type.String(),
    selection: Type.Object({
      matched: Type.Integer({ description: 'Agents whose name or labels match the hosts' }),
      connected: Type.Integer(),
      wouldChoose: Type.Integer({ description: 'How many of the connected ones a run would pick now (at random, for a mode other than all)' }),
    }),
    warnings: Type.Array(Type.String()),
    hosts: Type.Array(
      Type.Object({
        agent: Type.String(),
        hostname: Type.String(),
        outcome: Type.Enum(planOutcomes, { description: 'would-inject: the agent planned it (nothing was applied); refused: it would fail there, see error; offline: not connected; no-answer: no reply in time' }),
        injections: Type.Array(InjectionSchema, { description: "The agent's dry-run plans, one per target the selector matched there" }),
        error: Type.Optional(ErrorInfoSchema),
      }),
    ),
  },
  { title: 'ExperimentPlan' },
)
export type ExperimentPlan = Static<typeof ExperimentPlanSchema>

/** A name refused at enrolment because an admin removed its agent (faultline agents admit NAME lets it back). */
export const RemovedAgentViewSchema = Type.Object(
  {
    name: Type.String(),
    agentId: Type.String(),
    removedAt: Type.String({ format: 'date-time' }),
    removedBy: Type.String(),
  },
  { title: 'RemovedAgent' },
)
export type RemovedAgentView = Static<typeof RemovedAgentViewSchema>

/** GET /v1/whoami: who the bearer token is, what it may do, and until when. */
export const WhoamiSchema = Type.Object(
  {
    who: Type.String({ description: 'As the audit log names the caller: "admin-token", "token:<name>" (with "cert:<CN>+" in front for a client certificate)' }),
    role: RoleSchema,
    tokenId: Type.Optional(Type.String({ description: 'The API token id (none for the admin token)' })),
    expiresAt: Type.Optional(Type.String({ format: 'date-time' })),
    version: Type.String({ description: 'The server version' }),
  },
  { title: 'Whoami' },
)
export type Whoami = Static<typeof WhoamiSchema>

/**
 * GET /v1/events/stream (Server-Sent Events). Every message has `id: <cursor>`, where a cursor
 * is "<last fleet event id>.<last audit id>" sent so far; `event:` is one of these.
 *   hello       first message, always: the cursor the stream starts from, the role and who
 *   fleet       one FleetEvent, as GET /v1/events gives it (token.* events to admins only)
 *   audit       one AuditEntry, as GET /v1/audit gives it
 *   signed-out  the token was revoked or expired; the stream ends after it
 * and a comment line ": ping" keeps the connection alive.
 */
export const streamMessageTypes = ['hello', 'fleet', 'audit', 'signed-out'] as const
export type StreamMessageType = (typeof streamMessageTypes)[number]
export const STREAM_CURSOR_PATTERN = '^[0-9]{1,15}\\.[0-9]{1,15}$'

export const StreamHelloSchema = Type.Object(
  {
    cursor: Type.String({ pattern: STREAM_CURSOR_PATTERN, description: '"<event id>.<audit id>": resume with Last-Event-ID or ?after=' }),
    role: RoleSchema,
    who: Type.String(),
  },
  { title: 'StreamHello' },
)
export type StreamHello = Static<typeof StreamHelloSchema>

export const StreamSignedOutSchema = Type.Object(
  {
    reason: Type.Enum(['revoked', 'expired'] as const),
    message: Type.String(),
  },
  { title: 'StreamSignedOut' },
)
export type StreamSignedOut = Static<typeof StreamSignedOutSchema>

/** One problem of an experiment checked by POST /v1/experiments/check, where it is in the YAML (1-based). */
export const ExperimentCheckIssueSchema = Type.Object({
  path: Type.String({ description: 'The field, as "fault.latency" or "guards[0].every"; "" for the whole document (or a YAML syntax error)' }),
  message: Type.String(),
  line: Type.Integer({ minimum: 1 }),
  column: Type.Integer({ minimum: 1 }),
  endLine: Type.Integer({ minimum: 1 }),
  endColumn: Type.Integer({ minimum: 1 }),
})
export type ExperimentCheckIssue = Static<typeof ExperimentCheckIssueSchema>

export const ExperimentCheckSchema = Type.Union(
  [
    Type.Object({
      valid: Type.Literal(true),
      experiment: Type.Unknown({ description: 'The experiment as it would be applied (after defaults)' }),
      warnings: Type.Array(Type.String()),
    }),
    Type.Object({ valid: Type.Literal(false), issues: Type.Array(ExperimentCheckIssueSchema) }),
  ],
  { title: 'ExperimentCheck' },
)
export type ExperimentCheck = { valid: true; experiment: Experiment; warnings: string[] } | { valid: false; issues: ExperimentCheckIssue[] }
