import { Type, type Static } from 'typebox'

/**
 * The one catalogue of error codes. Every error a client can see carries one of these codes;
 * the HTTP status is a property of the code, so a handler never picks a status by hand.
 */
export const errorCatalog = {
  FAULTLINE_ERR_VALIDATION: { status: 400, title: 'The request does not match the schema' },
  FAULTLINE_ERR_BAD_JSON: { status: 400, title: 'The body is not valid JSON' },
  FAULTLINE_ERR_FORBIDDEN_KEY: { status: 400, title: 'The body contains __proto__ or constructor keys' },
  FAULTLINE_ERR_BAD_DURATION: { status: 400, title: 'The duration is malformed or out of range' },
  FAULTLINE_ERR_UNSAFE_PATTERN: { status: 400, title: 'The regular expression is invalid or could backtrack catastrophically' },
  FAULTLINE_ERR_UNAUTHORIZED: { status: 401, title: 'Missing or invalid credentials' },
  FAULTLINE_ERR_POLICY: { status: 403, title: "The host's policy does not allow this fault" },
  FAULTLINE_ERR_NOT_FOUND: { status: 404, title: 'No such injection' },
  FAULTLINE_ERR_ROUTE_NOT_FOUND: { status: 404, title: 'No such route' },
  FAULTLINE_ERR_ID_CONFLICT: { status: 409, title: 'The id is already used by a different request' },
  FAULTLINE_ERR_TARGET_BUSY: { status: 409, title: 'The target already carries a conflicting injection' },
  FAULTLINE_ERR_PAYLOAD_TOO_LARGE: { status: 413, title: 'The body is too large' },
  FAULTLINE_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'The body must be application/json' },
  FAULTLINE_ERR_TARGET_NOT_FOUND: { status: 422, title: 'The target selector matched nothing' },
  FAULTLINE_ERR_TARGET_FORBIDDEN: { status: 422, title: 'The target may not be faulted' },
  FAULTLINE_ERR_TARGET_UNSUPPORTED: { status: 422, title: 'This fault kind does not act on this target type' },
  FAULTLINE_ERR_TARGET_STATE: { status: 422, title: 'The target is in a state this fault cannot start from' },
  FAULTLINE_ERR_TOO_MANY_TARGETS: { status: 422, title: 'The selector matched more targets than maxTargets allows' },
  FAULTLINE_ERR_PEER_UNRESOLVED: { status: 422, title: 'A peer hostname does not resolve' },
  FAULTLINE_ERR_TARGET_GONE: { status: 422, title: 'The target disappeared while the fault was being applied' },
  FAULTLINE_ERR_PATH_NOT_FOUND: { status: 422, title: 'The path does not exist on the target' },
  FAULTLINE_ERR_PATH_FORBIDDEN: { status: 422, title: 'The path may not be faulted' },
  FAULTLINE_ERR_DISK_RESERVE: { status: 422, title: 'Not enough free space: the fault would eat into the reserve' },
  FAULTLINE_ERR_UNSUPPORTED: { status: 422, title: 'This host lacks what the fault kind needs' },
  FAULTLINE_ERR_APPLY_FAILED: { status: 500, title: 'The host refused the fault; what was applied has been rolled back' },
  FAULTLINE_ERR_RECOVER_FAILED: { status: 500, title: 'Recovery failed; the agent keeps retrying' },
  FAULTLINE_ERR_SHUTTING_DOWN: { status: 503, title: 'The agent is shutting down' },
  FAULTLINE_ERR_STATE_DIR_BUSY: { status: 409, title: 'Another agent or server runs with this state dir' },
  FAULTLINE_ERR_INTERNAL: { status: 500, title: 'Internal error' },
  FAULTLINE_ERR_AGENT_UNREACHABLE: { status: 502, title: 'The agent could not be reached' },
  // ---- server (control plane) and the agent <-> server link ----
  FAULTLINE_ERR_FORBIDDEN: { status: 403, title: "The token's role may not do this" },
  FAULTLINE_ERR_BAD_YAML: { status: 400, title: 'The body is not valid YAML' },
  FAULTLINE_ERR_BAD_SCHEDULE: { status: 400, title: 'The cron schedule is invalid' },
  FAULTLINE_ERR_EXPERIMENT_NOT_FOUND: { status: 404, title: 'No such experiment' },
  FAULTLINE_ERR_RUN_NOT_FOUND: { status: 404, title: 'No such run' },
  FAULTLINE_ERR_AGENT_NOT_FOUND: { status: 404, title: 'No such agent' },
  FAULTLINE_ERR_AGENT_REMOVED: { status: 403, title: 'An admin removed this agent; it may not enrol again until re-admitted' },
  FAULTLINE_ERR_TOKEN_NOT_FOUND: { status: 404, title: 'No such API token' },
  FAULTLINE_ERR_TOKEN_EXPIRED: { status: 401, title: 'The API token has expired' },
  FAULTLINE_ERR_BAD_CURSOR: { status: 400, title: 'The event stream cursor is malformed' },
  FAULTLINE_ERR_RUN_ACTIVE: { status: 409, title: 'The experiment already has a run in progress' },
  FAULTLINE_ERR_NO_HOSTS: { status: 422, title: "No connected agent matches the experiment's hosts" },
  FAULTLINE_ERR_LINK_MALFORMED: { status: 400, title: 'A link message is not JSON or does not match the protocol' },
  FAULTLINE_ERR_LINK_VERSION: { status: 400, title: 'A link message has an unsupported protocol version' },
  FAULTLINE_ERR_LINK_TOO_LARGE: { status: 413, title: 'A link message is larger than the protocol allows' },
  FAULTLINE_ERR_LINK_ORDER: { status: 409, title: 'A link message arrived out of order' },
  FAULTLINE_ERR_LINK_TIMEOUT: { status: 504, title: 'The agent did not answer in time' },
  FAULTLINE_ERR_AGENT_OFFLINE: { status: 503, title: 'The agent is not connected' },
  FAULTLINE_ERR_GUARD_FAILED: { status: 409, title: 'A guard failed on the agent, which recovered the run there' },
  FAULTLINE_ERR_LEASE_EXPIRED: { status: 503, title: 'The agent lost the server for longer than the lease and recovered on its own' },
  FAULTLINE_ERR_SERVER_UNREACHABLE: { status: 502, title: 'The server could not be reached' },
} as const satisfies Record<string, { status: number; title: string }>

export type ErrorCode = keyof typeof errorCatalog

export const ErrorCodeSchema = Type.Enum(Object.keys(errorCatalog) as ErrorCode[])

export const ErrorBodySchema = Type.Object(
  {
    code: Type.String({ description: 'A FAULTLINE_ERR_* code from the error catalogue' }),
    message: Type.String(),
    details: Type.Optional(Type.Unknown()),
  },
  { title: 'Error', description: 'Every error answer has this shape' },
)
export type ErrorBody = Static<typeof ErrorBodySchema>

/** The error answers of a route's response schema: every 4xx and 5xx has the ErrorBody shape. */
export const ErrorResponses = { '4xx': ErrorBodySchema, '5xx': ErrorBodySchema }

/** A typed error whose code decides the HTTP status. Messages tell the user what to do. */
export class FaultlineError extends Error {
  readonly code: ErrorCode
  readonly details?: unknown

  constructor(code: ErrorCode, message: string, details?: unknown) {
    super(message)
    this.name = 'FaultlineError'
    this.code = code
    this.details = details
  }

  get statusCode(): number {
    return errorCatalog[this.code].status
  }

  toBody(): ErrorBody {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details }
  }
}

export function isFaultlineError(err: unknown): err is FaultlineError {
  return err instanceof FaultlineError
}
