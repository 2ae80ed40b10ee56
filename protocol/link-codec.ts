import sjson from 'secure-json-parse'
import type { TSchema } from 'typebox'
import { Compile } from 'typebox/compile'
import type { ErrorCode } from './errors.js'
import {
  AckSchema,
  ErrorMessageSchema,
  HaltCommandSchema,
  HeartbeatSchema,
  HelloSchema,
  InjectCommandSchema,
  InjectionUpdateSchema,
  InjectResultSchema,
  LINK_PROTOCOL_VERSION,
  LeaseSchema,
  MAX_LINK_MESSAGE_BYTES,
  RecoverCommandSchema,
  WelcomeSchema,
  type AgentMessage,
  type ServerMessage,
} from './link.js'

/**
 * Decoding of link messages, shared by both ends: size first, then JSON (refusing __proto__),
 * then the protocol version, then the schema of the message's own `type` — so an error names
 * what is wrong with *this* message instead of listing every member of the union.
 */
export type Decoded<T> = { ok: true; message: T } | { ok: false; code: ErrorCode; error: string; requestId?: string }

type Validators = Map<string, ReturnType<typeof Compile>>

function validators(schemas: TSchema[]): Validators {
  const map: Validators = new Map()
  for (const schema of schemas) {
    const type = (schema as unknown as { properties: { type: { const: string } } }).properties.type.const
    map.set(type, Compile(schema))
  }
  return map
}

let agentValidators: Validators | undefined
let serverValidators: Validators | undefined

/** What the server accepts from agents. */
export function decodeAgentMessage(data: Buffer | string): Decoded<AgentMessage> {
  agentValidators ??= validators([HelloSchema, HeartbeatSchema, InjectResultSchema, InjectionUpdateSchema, AckSchema])
  return decode<AgentMessage>(data, agentValidators)
}

/** What agents accept from the server. */
export function decodeServerMessage(data: Buffer | string): Decoded<ServerMessage> {
  serverValidators ??= validators([WelcomeSchema, LeaseSchema, InjectCommandSchema, RecoverCommandSchema, HaltCommandSchema, ErrorMessageSchema])
  return decode<ServerMessage>(data, serverValidators)
}

function decode<T>(data: Buffer | string, known: Validators): Decoded<T> {
  const bytes = typeof data === 'string' ? Buffer.byteLength(data) : data.length
  if (bytes > MAX_LINK_MESSAGE_BYTES) {
    return { ok: false, code: 'FAULTLINE_ERR_LINK_TOO_LARGE', error: `message of ${bytes} bytes is larger than ${MAX_LINK_MESSAGE_BYTES}` }
  }
  let value: unknown
  try {
    value = sjson.parse(data.toString(), undefined, { protoAction: 'error', constructorAction: 'error' })
  } catch (err) {
    return { ok: false, code: 'FAULTLINE_ERR_LINK_MALFORMED', error: `not JSON: ${(err as Error).message.slice(0, 200)}` }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, code: 'FAULTLINE_ERR_LINK_MALFORMED', error: 'a message is a JSON object with "v" and "type"' }
  }
  const obj = value as Record<string, unknown>
  const requestId = typeof obj.requestId === 'string' && obj.requestId.length <= 128 ? obj.requestId : undefined
  const fail = (code: ErrorCode, error: string): Decoded<T> => ({ ok: false, code, error, ...(requestId ? { requestId } : {}) })
  if (obj.v !== LINK_PROTOCOL_VERSION) {
    return fail('FAULTLINE_ERR_LINK_VERSION', `protocol version ${JSON.stringify(obj.v)?.slice(0, 20)} is not supported; this end speaks v${LINK_PROTOCOL_VERSION}`)
  }
  const validator = typeof obj.type === 'string' ? known.get(obj.type) : undefined
  if (!validator) return fail('FAULTLINE_ERR_LINK_MALFORMED', `unknown message type ${JSON.stringify(obj.type)?.slice(0, 40)}; expected one of ${[...known.keys()].join(', ')}`)
  if (!validator.Check(value)) {
    const first = validator.Errors(value)[0]
    return fail('FAULTLINE_ERR_LINK_MALFORMED', `${String(obj.type)}${first?.instancePath ?? ''} ${first?.message ?? 'does not match the schema'}`)
  }
  return { ok: true, message: value as T }
}
