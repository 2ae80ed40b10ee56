import { readFileSync } from 'node:fs'
import type { Dispatcher } from 'undici'
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
  /** What the dispatcher connects with (none: undici's global one); made at the first call. */
  readonly #connect: Record<string, unknown> | undefined
  #dispatcher: Dispatcher | undefined
  readonly #timeoutMs: number
  readonly #peer: 'agent' | 'server'
  readonly #socketPath: string | undefined
  readonly #tokenFile: string | undefined
  readonly #tlsCa: boolean

  constructor(opts: ClientOptions) {
    this.url = opts.url.replace(/\/+$/, '')
    this.#tokenFile = opts.tokenFile
    this.#tlsCa = opts.tlsCa !== undefined
    this.#token = opts.tokenFile ? readTokenFile(opts.tokenFile) : undefined
    this.#timeoutMs = opts.timeoutMs ?? 30_000
    this.#peer = opts.peer ?? 'agent'
    if (this.url.startsWith('unix:')) {
      this.#socketPath = this.url.slice('unix:'.length)
      this.#connect = { socketPath: this.#socketPath }
    } else if (opts.tlsCa || opts.tlsCert) {
      // Read now, so a missing file is reported before anything is sent.
      this.#connect = {
        ...(opts.tlsCa ? { ca: readFileSync(opts.tlsCa) } : {}),
        ...(opts.tlsCert ? { cert: readFileSync(opts.tlsCert) } : {}),
        ...(opts.tlsKey ? { key: readFileSync(opts.tlsKey) } : {}),
      }
    }
  }

  async call<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const headers: Record<string, string> = { accept: 'application/json' }
    if (this.#token) headers.authorization = `Bearer ${this.#token}`
    const raw = isRaw(body) ? body : undefined
    if (body !== undefined) headers['content-type'] = raw ? raw.contentType : 'application/json'
    let res: Dispatcher.ResponseData
    try {
      // undici is loaded at the first call, not at start-up: `faultline agent` and `faultline
      // server` share this entry point and never call (docs/benchmarks.md, agent footprint).
      const { Agent, request } = await import('undici')
      if (this.#connect && !this.#dispatcher) this.#dispatcher = new Agent({ connect: this.#connect })
      res = await request((this.#socketPath ? 'http://localhost' : this.url) + path, {
        method,
        headers,
        ...(body !== undefined ? { body: raw ? raw.raw : JSON.stringify(body) } : {}),
        ...(this.#dispatcher ? { dispatcher: this.#dispatcher } : {}),
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs,
      })
    } catch (err) {
      throw this.#transportError(err)
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
      const code = (err?.code as ErrorCode | undefined) ?? 'FAULTLINE_ERR_INTERNAL'
      // Refused credentials are explained in the command line's words, not the API's.
      const message = res.statusCode === 401 ? this.#unauthorized() : (err?.message ?? `HTTP ${res.statusCode}`)
      throw new AgentError(code, message, res.statusCode, err?.details)
    }
    return { status: res.statusCode, body: parsed as T }
  }

  /** What to do about a 401, for the person at the command line. */
  #unauthorized(): string {
    const sent = this.#tokenFile ? `the token in ${this.#tokenFile}` : 'no token'
    if (this.#peer === 'server') {
      return `the server at ${this.url} refused ${sent}: give an API token with --token-file FILE (or FAULTLINE_SERVER_TOKEN_FILE); on the server's host, its admin token is admin.token in its state dir (--server-state-dir), and "faultline tokens create" makes others`
    }
    return `the agent at ${this.url} refused ${sent}: give its token with --token-file FILE (or FAULTLINE_AGENT_TOKEN_FILE) — the agent's --token-file, or agent.token in its state dir (--state-dir), readable by root — or use its Unix socket (--agent unix:/run/faultline/agent.sock)`
  }

  /** A request that got no answer, in words: what is probably wrong and which flag fixes it. */
  #transportError(err: unknown): AgentError {
    const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException }
    const code = e.cause?.code ?? e.code ?? e.message
    const who = this.#peer
    const flag = who === 'server' ? '--server' : '--agent'
    const errorCode: ErrorCode = who === 'server' ? 'FAULTLINE_ERR_SERVER_UNREACHABLE' : 'FAULTLINE_ERR_AGENT_UNREACHABLE'
    const fail = (message: string) => new AgentError(errorCode, message)
    if (this.#socketPath) {
      if (code === 'EACCES') return fail(`permission denied on the agent's socket ${this.#socketPath}: ${socketHint}`)
      if (code === 'ENOENT' || code === 'ECONNREFUSED') return fail(`no agent listens on ${this.#socketPath} (${code}): start it ("faultline agent", as root), or point --agent at it`)
    }
    const caFlag = who === 'server' ? '--tls-ca FILE (or FAULTLINE_SERVER_CA)' : '--tls-ca FILE (or FAULTLINE_AGENT_CA)'
    const certWords: Record<string, string> = {
      UNABLE_TO_VERIFY_LEAF_SIGNATURE: `the ${who}'s certificate is signed by a CA this command does not trust: give that CA with ${caFlag}`,
      SELF_SIGNED_CERT_IN_CHAIN: `the ${who}'s certificate chain ends in a CA this command does not trust: give that CA with ${caFlag}`,
      DEPTH_ZERO_SELF_SIGNED_CERT: `the ${who}'s certificate is self-signed: give it (or its CA) with ${caFlag}`,
      UNABLE_TO_GET_ISSUER_CERT_LOCALLY: `the ${who}'s certificate is signed by a CA this command does not trust: give that CA with ${caFlag}`,
      CERT_HAS_EXPIRED: `the ${who}'s certificate has expired: renew it`,
      ERR_TLS_CERT_ALTNAME_INVALID: `the ${who}'s certificate is not for the host name in ${this.url}: use a name or address the certificate lists`,
    }
    if (certWords[code]) return fail(`${certWords[code]} (${code})`)
    if (this.#tlsCa && code === 'ERR_SSL_WRONG_VERSION_NUMBER') return fail(`${this.url} does not speak TLS: use http:// with ${flag}, or drop --tls-ca`)
    if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'EPROTO') return fail(`${this.url} does not speak TLS (${code}): try http:// in ${flag}`)
    if (this.url.startsWith('http://') && (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'HPE_INVALID_CONSTANT')) {
      return fail(`the ${who} at ${this.url} closed the connection without an answer (${code}): it probably serves HTTPS; try https:// in ${flag}`)
    }
    if (code === 'ECONNREFUSED') return fail(`nothing listens at ${this.url} (ECONNREFUSED): is the ${who} running? ${who === 'server' ? 'Start it with "faultline server", or point --server (or FAULTLINE_SERVER) at it' : 'Start it with "faultline agent", or point --agent at it'}`)
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return fail(`the host name in ${this.url} does not resolve (${code}): check ${flag}`)
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') return fail(`the ${who} at ${this.url} did not answer in time (${code})`)
    return fail(`cannot reach the ${who} at ${this.url} (${code}); is it running? Point ${flag} at it`)
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
