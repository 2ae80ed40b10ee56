import { readFileSync } from 'node:fs'
import { Agent, request, type Dispatcher } from 'undici'
import { FaultlineError, isFaultlineError, type ErrorCode } from '../protocol/errors.js'

export interface ClientOptions {
  /** http(s)://HOST:PORT, or unix:PATH for the agent's socket. */
  url: string
  tokenFile?: string
  tlsCa?: string
  tlsCert?: string
  tlsKey?: string
  timeoutMs?: number
  /** What is at `url`, for messages: the agent (default) or the server. */
  peer?: 'agent' | 'server'
}

/** A body sent as it is, with its own content type (e.g. an experiment in YAML). */
export interface RawBody {
  raw: string
  contentType: string
}

/** An error answer from the agent, with its code, or a transport failure. */
export class AgentError extends FaultlineError {
  readonly httpStatus: number | undefined

  constructor(code: ErrorCode, message: string, httpStatus?: number, details?: unknown) {
    super(code, message, details)
    this.httpStatus = httpStatus
  }
}

/** A small HTTP client for the agent API (undici, with optional CA, client cert and token). */
export class AgentClient {
  readonly url: string
  readonly #token: string | undefined
  readonly #dispatcher: Dispatcher | undefined
  readonly #timeoutMs: number
  readonly #peer: 'agent' | 'server'
  readonly #socketPath: string | undefined

  constructor(opts: ClientOptions) {
    this.url = opts.url.replace(/\/+$/, '')
    this.#token = opts.tokenFile ? readTokenFile(opts.tokenFile) : undefined
    this.#timeoutMs = opts.timeoutMs ?? 30_000
    this.#peer = opts.peer ?? 'agent'
    if (this.url.startsWith('unix:')) {
      this.#socketPath = this.url.slice('unix:'.length)
      this.#dispatcher = new Agent({ connect: { socketPath: this.#socketPath } })
    } else if (opts.tlsCa || opts.tlsCert) {
      this.#dispatcher = new Agent({
        connect: {
          ...(opts.tlsCa ? { ca: readFileSync(opts.tlsCa) } : {}),
          ...(opts.tlsCert ? { cert: readFileSync(opts.tlsCert) } : {}),
          ...(opts.tlsKey ? { key: readFileSync(opts.tlsKey) } : {}),
        },
      })
    }
  }

  async call<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const headers: Record<string, string> = { accept: 'application/json' }
    if (this.#token) headers.authorization = `Bearer ${this.#token}`
    const raw = isRaw(body) ? body : undefined
    if (body !== undefined) headers['content-type'] = raw ? raw.contentType : 'application/json'
    let res: Dispatcher.ResponseData
    try {
      res = await request((this.#socketPath ? 'http://localhost' : this.url) + path, {
        method,
        headers,
        ...(body !== undefined ? { body: raw ? raw.raw : JSON.stringify(body) } : {}),
        ...(this.#dispatcher ? { dispatcher: this.#dispatcher } : {}),
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs,
      })
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException }
      const code = e.code ?? e.cause?.code ?? e.message
      if (this.#socketPath && code === 'EACCES') {
        throw new AgentError('FAULTLINE_ERR_AGENT_UNREACHABLE', `permission denied on the agent's socket ${this.#socketPath}: ${socketHint}`)
      }
      if (this.#peer === 'server') {
        throw new AgentError('FAULTLINE_ERR_SERVER_UNREACHABLE', `cannot reach the server at ${this.url} (${code}); is it running? Point --server (or FAULTLINE_SERVER) at it`)
      }
      throw new AgentError(
        'FAULTLINE_ERR_AGENT_UNREACHABLE',
        `cannot reach the agent at ${this.url} (${code}); is it running? Start it with "faultline agent", or point --agent at it`,
      )
    }
    const text = await res.body.text()
    let parsed: unknown
    try {
      parsed = text === '' ? undefined : JSON.parse(text)
    } catch {
      parsed = text
    }
    if (res.statusCode >= 400) {
      const err = parsed as { code?: string; message?: string; details?: unknown } | undefined
      throw new AgentError(
        (err?.code as ErrorCode | undefined) ?? 'FAULTLINE_ERR_INTERNAL',
        err?.message ?? `HTTP ${res.statusCode}`,
        res.statusCode,
        err?.details,
      )
    }
    return { status: res.statusCode, body: parsed as T }
  }

  async close(): Promise<void> {
    await this.#dispatcher?.close()
  }
}

/** Said when the agent's socket refuses us (its mode is 0660 root:faultline, or 0600). */
const socketHint = 'run as root, or as a member of the faultline group (sudo usermod -aG faultline $USER, then log in again)'

function readTokenFile(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim()
  } catch (err) {
    throw new AgentError('FAULTLINE_ERR_UNAUTHORIZED', `cannot read the token file ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): the agent made it readable by root only`)
  }
}

function isRaw(body: unknown): body is RawBody {
  return typeof body === 'object' && body !== null && typeof (body as RawBody).raw === 'string' && typeof (body as RawBody).contentType === 'string'
}

export { isFaultlineError }
