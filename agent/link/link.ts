import type { Logger } from 'pino'
import WebSocket from 'ws'
import type { Capabilities } from '../../protocol/capabilities.js'
import { FaultlineError, isFaultlineError, type ErrorCode } from '../../protocol/errors.js'
import { isOpenStatus, type Injection, type UpdateReason } from '../../protocol/injection.js'
import { decodeServerMessage } from '../../protocol/link-codec.js'
import {
  LINK_PROTOCOL_VERSION,
  MAX_LINK_MESSAGE_BYTES,
  type AgentMessage,
  type Guard,
  type ServerMessage,
} from '../../protocol/link.js'
import type { ResolvedTarget } from '../../protocol/target.js'
import type { Injector, Origin } from '../lifecycle/injector.js'
import { forgetCredential, loadCredential, saveCredential, type LinkCredential } from './credential.js'
import { GuardSet, checkGuard } from './guards.js'
import { LeaseWatch } from './lease.js'

export interface AgentLinkOptions {
  /** wss://HOST:PORT, optionally with the path (default /v1/agents/connect). */
  server: string
  /** Needed once, to enrol; afterwards the agent's own credential (state dir) is used. */
  enrolToken?: string
  /** The id the agent asks for at enrolment (default: its hostname); the server may suffix it. */
  name: string
  labels: Record<string, string>
  /** CA that signed the server's certificate (PEM); default: the system's CAs. */
  ca?: string | Buffer
  stateDir: string
  hostname: string
  version: string
  injector: Injector
  capabilities: () => Promise<Capabilities>
  /** Containers and named network namespaces (not processes) for `hello`. */
  discoverTargets: () => Promise<ResolvedTarget[]>
  log: Logger
  /**
   * Reconnect backoff: exponential from initialMs to maxMs, with jitter (default 500 ms .. 10 s);
   * after a refusal that only a person can fix (a wrong enrolment token, a removed agent), at
   * least refusedMs (default 60 s), so a refused agent does not knock every few seconds.
   */
  backoff?: { initialMs: number; maxMs: number; refusedMs?: number }
}

export type LinkState = 'stopped' | 'connecting' | 'handshake' | 'ready' | 'waiting'

/** Largest number of injection updates kept for (re)delivery after a reconnect. */
const OUTBOX_LIMIT = 5_000
const OUTBOX_TTL_MS = 3_600_000
const WELCOME_TIMEOUT_MS = 10_000

/**
 * The agent's end of the link (protocol/link.ts): dials out, enrols or authenticates, says
 * hello, sends heartbeats, executes inject / recover / halt, and reports every status change of
 * a server injection. It reconnects for ever with exponential backoff and jitter.
 *
 * State machine:  stopped -> connecting -> handshake (socket open, waiting for `welcome`)
 *                 -> ready (after `hello`, outbox flush and a sync heartbeat) -> waiting (backoff)
 *                 -> connecting ...
 *
 * Safety does not depend on the link: the lease (LeaseWatch) and the guards (GuardSet) run on the
 * agent's own timers, whether or not a socket is open.
 */
export class AgentLink {
  readonly url: string
  readonly #opts: AgentLinkOptions
  readonly #log: Logger
  readonly #lease: LeaseWatch
  readonly #guards = new Map<string, GuardSet>()
  /**
   * Last update per server injection, re-sent after every reconnect (the server upserts, so a
   * duplicate is harmless; a socket that died silently may have swallowed the first copy).
   * Updates of finished injections are kept for OUTBOX_TTL_MS.
   */
  readonly #outbox = new Map<string, { message: AgentMessage; at: number; terminal: boolean }>()
  /** Request ids (body.id) whose inject is being applied now: their inject-result is on its way. */
  readonly #answering = new Set<string>()
  /** Detail to attach to the next update of an injection (why the lease or a guard recovered it). */
  readonly #details = new Map<string, string>()
  readonly #inflight = new Map<string, Promise<AgentMessage>>()
  #state: LinkState = 'stopped'
  #ws: WebSocket | undefined
  #credential: LinkCredential | undefined
  #attempt = 0
  #retryTimer: NodeJS.Timeout | undefined
  #heartbeatTimer: NodeJS.Timeout | undefined
  #welcomeTimer: NodeJS.Timeout | undefined
  #connectedAt: number | undefined
  /** The last attempt was refused for a reason only a person can fix: wait longer before the next. */
  #refused = false
  /** The last refusal (status and code), so a new reason is always logged. */
  #lastRefusal = ''

  constructor(opts: AgentLinkOptions) {
    this.#opts = opts
    this.#log = opts.log
    this.url = normaliseServerUrl(opts.server)
    this.#credential = loadCredential(opts.stateDir, this.url)
    this.#lease = new LeaseWatch(() => this.#leaseExpired())
    // Subscribed before the journal is reconciled (buildAgent), so recoveries at start are reported too.
    opts.injector.events.on('update', (injection, reason, origin) => this.#onUpdate(injection, reason, origin))
  }

  get state(): LinkState {
    return this.#state
  }

  get agentId(): string | undefined {
    return this.#credential?.agentId
  }

  status(): { state: LinkState; server: string; agentId?: string; connectedAt?: string; leaseExpiresAt?: string } {
    return {
      state: this.#state,
      server: this.url,
      ...(this.#credential ? { agentId: this.#credential.agentId } : {}),
      ...(this.#connectedAt ? { connectedAt: new Date(this.#connectedAt).toISOString() } : {}),
      ...(this.#lease.expiresAt ? { leaseExpiresAt: new Date(this.#lease.expiresAt).toISOString() } : {}),
    }
  }

  start(): void {
    if (this.#state !== 'stopped') return
    this.#connect()
  }

  /** Closes the link; the lease and guards stop (the agent recovers everything when it stops). */
  async stop(): Promise<void> {
    this.#state = 'stopped'
    clearTimeout(this.#retryTimer)
    clearTimeout(this.#welcomeTimer)
    clearInterval(this.#heartbeatTimer)
    this.#lease.stop()
    for (const set of this.#guards.values()) set.stop()
    this.#guards.clear()
    const ws = this.#ws
    this.#ws = undefined
    if (!ws || ws.readyState === WebSocket.CLOSED) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        ws.terminate()
        resolve()
      }, 2_000)
      ws.once('close', () => {
        clearTimeout(timer)
        resolve()
      })
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate()
      else ws.close(1001, 'agent stopping')
    })
  }

  // ---- connection ----------------------------------------------------------------------------

  #connect(): void {
    this.#state = 'connecting'
    const headers: Record<string, string> = { 'x-faultline-agent-name': this.#opts.name }
    const enrolling = !this.#credential
    if (this.#credential) headers.authorization = `Agent ${this.#credential.agentId}:${this.#credential.secret}`
    else if (this.#opts.enrolToken) headers.authorization = `Bearer ${this.#opts.enrolToken}`
    const ws = new WebSocket(this.url, {
      headers,
      ...(this.#opts.ca ? { ca: this.#opts.ca } : {}),
      maxPayload: MAX_LINK_MESSAGE_BYTES,
      handshakeTimeout: 10_000,
      perMessageDeflate: false,
    })
    this.#ws = ws
    ws.on('open', () => {
      if (this.#ws !== ws) return
      this.#state = 'handshake'
      this.#welcomeTimer = setTimeout(() => {
        this.#log.warn('no welcome from the server; reconnecting')
        ws.terminate()
      }, WELCOME_TIMEOUT_MS)
    })
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (this.#ws !== ws) return
      if (isBinary) return this.#log.warn('binary message from the server ignored')
      const decoded = decodeServerMessage(data)
      if (!decoded.ok) {
        this.#log.warn({ code: decoded.code, error: decoded.error }, 'invalid message from the server ignored')
        return
      }
      this.#handle(ws, decoded.message)
    })
    // A refused upgrade (401, 403): its body says why; read it, say it in words, and retry later.
    let refused = false
    ws.on('unexpected-response', (_req, res) => {
      refused = true
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        if (body.length < 8192) body += chunk
      })
      let done = false
      const finish = () => {
        if (done) return
        done = true
        let reply: { code?: string; message?: string } = {}
        try {
          reply = JSON.parse(body) as typeof reply
        } catch {
          /* not JSON: the status alone */
        }
        this.#onRefused(res.statusCode ?? 0, reply, enrolling)
        ws.terminate()
      }
      res.on('end', finish)
      res.on('error', finish)
      res.on('close', finish)
    })
    ws.on('error', (err) => {
      if (refused) return
      if (this.#attempt === 0 || this.#attempt % 10 === 0) {
        this.#log.warn({ err: err.message, server: this.url }, 'link error')
      } else {
        this.#log.debug({ err: err.message }, 'link error')
      }
    })
    ws.on('close', (code, reason) => {
      if (this.#ws !== ws) return
      this.#ws = undefined
      clearTimeout(this.#welcomeTimer)
      clearInterval(this.#heartbeatTimer)
      const wasReady = this.#state === 'ready'
      this.#connectedAt = undefined
      if (this.#state === 'stopped') return
      if (wasReady) this.#log.warn({ code, reason: reason.toString() }, 'link to the server lost; reconnecting')
      this.#scheduleReconnect()
    })
  }

  /**
   * The server refused the upgrade: said once in words (then every tenth attempt), with what to
   * do on this host. A credential the server no longer knows is dropped, and the agent enrols
   * again with its enrolment token.
   */
  #onRefused(status: number, reply: { code?: string; message?: string }, enrolling: boolean): void {
    const said = reply.message ?? `HTTP ${status}`
    // Said when the reason changes, then every tenth attempt: a refused agent keeps knocking.
    const key = `${status} ${reply.code ?? ''}`
    const loud = key !== this.#lastRefusal || this.#attempt % 10 === 0
    this.#lastRefusal = key
    const log = (msg: string) => (loud ? this.#log.error({ server: this.url, status, code: reply.code, reason: said }, msg) : this.#log.debug({ status, code: reply.code }, msg))
    if (status === 401 && !enrolling) {
      if (this.#opts.enrolToken) {
        this.#log.warn({ agentId: this.#credential?.agentId, reason: said }, 'the server no longer accepts this agent\'s credential; enrolling again with the enrolment token')
        forgetCredential(this.#opts.stateDir)
        this.#credential = undefined
        this.#attempt = 0
      } else {
        log(`the server refused this agent's credential (${said}) and there is no --enrol-token-file to enrol again with; give the agent the server's enrolment token`)
      }
    } else if (status === 401) {
      this.#refused = true
      log(
        this.#opts.enrolToken
          ? `the server refused the enrolment token: the file given as --enrol-token-file must hold the server's enrolment token (the server's --enrol-token-file, or enrol.token in its state dir) — ${said}`
          : `the server needs an enrolment token: start the agent with --enrol-token-file FILE holding the server's enrolment token — ${said}`,
      )
    } else if (reply.code === 'FAULTLINE_ERR_AGENT_REMOVED') {
      this.#refused = true
      log(`an admin removed this agent from the server: ${said}`)
    } else {
      log(`the server refused the connection (HTTP ${status}): ${said}`)
    }
  }

  #scheduleReconnect(): void {
    this.#state = 'waiting'
    const { initialMs, maxMs, refusedMs = 60_000 } = this.#opts.backoff ?? { initialMs: 500, maxMs: 10_000 }
    const ceiling = this.#refused ? Math.max(refusedMs, maxMs) : Math.min(maxMs, initialMs * 2 ** Math.min(this.#attempt, 20))
    this.#refused = false
    // "Equal jitter": half fixed, half random, so a fleet that lost the server together does
    // not come back in one burst, and no agent waits much less than the backoff.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2)
    this.#attempt++
    this.#retryTimer = setTimeout(() => {
      if (this.#state === 'waiting') this.#connect()
    }, delay)
  }

  #send(message: AgentMessage, ws = this.#ws): boolean {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false
    ws.send(JSON.stringify(message))
    return true
  }

  // ---- messages from the server ------------------------------------------------------------

  #handle(ws: WebSocket, message: ServerMessage): void {
    switch (message.type) {
      case 'welcome':
        void this.#welcome(ws, message).catch((err) => {
          this.#log.error({ err }, 'handshake failed')
          ws.terminate()
        })
        return
      case 'lease':
        this.#lease.renew(message.leaseMs)
        return
      case 'inject':
        void this.#inject(ws, message)
        return
      case 'recover':
        void this.#recover(ws, message)
        return
      case 'halt':
        void this.#halt(ws, message)
        return
      case 'error':
        this.#log.warn({ code: message.code, message: message.message, requestId: message.requestId }, 'the server reported an error')
        return
    }
  }

  async #welcome(ws: WebSocket, message: Extract<ServerMessage, { type: 'welcome' }>): Promise<void> {
    if (this.#state !== 'handshake') return void this.#log.warn('unexpected welcome ignored')
    clearTimeout(this.#welcomeTimer)
    if (message.credential) {
      this.#credential = { server: this.url, agentId: message.agentId, secret: message.credential }
      saveCredential(this.#opts.stateDir, this.#credential)
      this.#log.info({ agentId: message.agentId }, 'enrolled with the server; credential saved in the state dir')
    } else if (!this.#credential || this.#credential.agentId !== message.agentId) {
      throw new Error(`the server welcomed us as "${message.agentId}" without a credential`)
    }
    this.#lease.renew(message.leaseMs)
    const open = this.#opts.injector
      .openWithOrigin()
      .filter((o) => o.origin?.who === 'server')
      .map((o) => o.injection)
    const [capabilities, targets] = await Promise.all([
      this.#opts.capabilities(),
      this.#opts.discoverTargets().catch((err) => {
        this.#log.warn({ err }, 'target discovery for hello failed; sending none')
        return [] as ResolvedTarget[]
      }),
    ])
    if (this.#ws !== ws) return
    const hello: AgentMessage = {
      v: LINK_PROTOCOL_VERSION,
      type: 'hello',
      agentId: message.agentId,
      version: this.#opts.version,
      hostname: this.#opts.hostname,
      labels: this.#opts.labels,
      capabilities,
      targets: targets.slice(0, 5000),
      open: open.slice(0, 10_000),
    }
    // Keep hello under the message limit: targets are the part that can grow without bound.
    while (Buffer.byteLength(JSON.stringify(hello)) > MAX_LINK_MESSAGE_BYTES * 0.9 && hello.targets.length > 0) {
      hello.targets = hello.targets.slice(0, Math.floor(hello.targets.length / 2))
    }
    this.#send(hello, ws)
    // Whatever happened while the link was down, then a heartbeat: the server treats the first
    // heartbeat after hello as "everything the agent had to report has arrived".
    const now = Date.now()
    for (const [id, entry] of this.#outbox) {
      if (entry.terminal && now - entry.at > OUTBOX_TTL_MS) this.#outbox.delete(id)
      else this.#send(entry.message, ws)
    }
    this.#send({ v: LINK_PROTOCOL_VERSION, type: 'heartbeat', at: new Date().toISOString() }, ws)
    clearInterval(this.#heartbeatTimer)
    this.#heartbeatTimer = setInterval(() => this.#send({ v: LINK_PROTOCOL_VERSION, type: 'heartbeat', at: new Date().toISOString() }, ws), message.heartbeatMs)
    this.#state = 'ready'
    this.#lastRefusal = ''
    this.#connectedAt = Date.now()
    this.#attempt = 0
    this.#log.info({ agentId: message.agentId, leaseMs: message.leaseMs, reported: this.#outbox.size, open: open.length }, 'link to the server ready')
  }

  async #inject(ws: WebSocket, message: Extract<ServerMessage, { type: 'inject' }>): Promise<void> {
    // The same requestId again (a resend after a reconnect) joins the work already under way;
    // once done, the injector's own idempotency (body.id = requestId) answers with the same injections.
    let work = this.#inflight.get(message.requestId)
    if (!work) {
      work = this.#createInjection(message)
      this.#inflight.set(message.requestId, work)
      void work.finally(() => this.#inflight.delete(message.requestId))
    }
    const result = await work
    this.#send(result, this.#ws ?? ws)
  }

  async #createInjection(message: Extract<ServerMessage, { type: 'inject' }>): Promise<AgentMessage> {
    const base = { v: LINK_PROTOCOL_VERSION, type: 'inject-result', requestId: message.requestId } as const
    if (this.#lease.expired) {
      return { ...base, injections: [], error: { code: 'FAULTLINE_ERR_LEASE_EXPIRED', message: 'the lease has lapsed on this agent; not injecting until the server renews it' } }
    }
    const origin: Origin = { who: 'server', address: new URL(this.url).host, lease: true, ...(message.runId ? { runId: message.runId } : {}) }
    try {
      // Guards are checked once before anything is applied: a system already unhealthy is not
      // faulted for one guard interval before the first check notices.
      if (!message.body.dryRun && message.guards && message.guards.length > 0 && !this.#opts.injector.hasRequest(message.body.id ?? message.requestId)) {
        for (const guard of message.guards) {
          const outcome = await checkGuard(guard)
          if (!outcome.ok) {
            this.#log.warn({ runId: message.runId, detail: outcome.detail }, 'guard failed before the fault was applied: not injecting')
            throw new FaultlineError('FAULTLINE_ERR_GUARD_FAILED', `a guard failed before the fault was applied, so nothing was applied: ${outcome.detail}`)
          }
        }
      }
      const id = message.body.id ?? message.requestId
      // The inject-result carries what this request applied: no separate apply update for it.
      this.#answering.add(id)
      const { injections } = await this.#opts.injector.create({ ...message.body, id }, origin).finally(() => this.#answering.delete(id))
      if (!message.body.dryRun && message.runId && message.guards && message.guards.length > 0 && injections.some((i) => isOpenStatus(i.status))) {
        this.#startGuards(message.runId, message.guards)
      }
      return { ...base, injections }
    } catch (err) {
      const details = isFaultlineError(err) ? (err.details as { injections?: Injection[] } | undefined) : undefined
      const code: ErrorCode = isFaultlineError(err) ? err.code : 'FAULTLINE_ERR_INTERNAL'
      if (!isFaultlineError(err)) this.#log.error({ err, requestId: message.requestId }, 'inject from the server failed')
      return { ...base, injections: Array.isArray(details?.injections) ? details.injections : [], error: { code, message: (err as Error).message } }
    }
  }

  async #recover(ws: WebSocket, message: Extract<ServerMessage, { type: 'recover' }>): Promise<void> {
    const ids =
      message.injectionIds ??
      (message.runId
        ? this.#opts.injector
            .openWithOrigin()
            .filter((o) => o.origin?.runId === message.runId)
            .map((o) => o.injection.id)
        : [])
    if (message.runId) {
      this.#guards.get(message.runId)?.stop()
      this.#guards.delete(message.runId)
    }
    const errors = await this.#recoverEach(ids, 'abort')
    const error = errors.length > 0 ? { error: { code: 'FAULTLINE_ERR_RECOVER_FAILED', message: errors.join('; ').slice(0, 4000) } } : {}
    this.#send({ v: LINK_PROTOCOL_VERSION, type: 'ack', requestId: message.requestId, ...error }, this.#ws ?? ws)
  }

  async #halt(ws: WebSocket, message: Extract<ServerMessage, { type: 'halt' }>): Promise<void> {
    for (const set of this.#guards.values()) set.stop()
    this.#guards.clear()
    const { failed } = await this.#opts.injector.recoverAll('halt')
    const error = failed.length > 0 ? { error: { code: 'FAULTLINE_ERR_RECOVER_FAILED', message: failed.map((f) => `${f.id}: ${f.error}`).join('; ').slice(0, 4000) } } : {}
    this.#log.warn({ failed: failed.length }, 'halt from the server: every injection recovered')
    this.#send({ v: LINK_PROTOCOL_VERSION, type: 'ack', requestId: message.requestId, ...error }, this.#ws ?? ws)
  }

  async #recoverEach(ids: string[], reason: 'abort' | 'lease' | 'guard'): Promise<string[]> {
    const errors: string[] = []
    await Promise.all(
      ids.map((id) =>
        this.#opts.injector.recover(id, reason).catch((err) => {
          if (isFaultlineError(err) && err.code === 'FAULTLINE_ERR_NOT_FOUND') return
          errors.push(`${id}: ${(err as Error).message}`)
        }),
      ),
    )
    return errors
  }

  // ---- lease and guards ------------------------------------------------------------------------

  #leaseExpired(): void {
    const bound = this.#opts.injector.openWithOrigin().filter((o) => o.origin?.lease)
    const detail = `no lease renewal from the server for ${this.#lease.leaseMs} ms: recovered by the agent itself`
    if (bound.length > 0) this.#log.warn({ injections: bound.length, leaseMs: this.#lease.leaseMs }, 'lease expired: recovering every lease-bound injection')
    for (const { injection } of bound) this.#details.set(injection.id, detail)
    void this.#recoverEach(
      bound.map((b) => b.injection.id),
      'lease',
    ).then((errors) => {
      if (errors.length > 0) this.#log.error({ errors }, 'lease recovery failed for some injections; the injector retries')
    })
    // No renewal for a whole lease: this socket cannot be trusted, even if TCP has not noticed.
    if (this.#ws && (this.#state === 'ready' || this.#state === 'handshake')) {
      this.#log.warn('no lease renewal on an open link; reconnecting')
      this.#ws.terminate()
    }
  }

  #startGuards(runId: string, guards: Guard[]): void {
    if (this.#guards.has(runId)) return
    const log = this.#log.child({ runId })
    const set = new GuardSet(runId, guards, log, (outcome) => {
      this.#guards.delete(runId)
      const open = this.#opts.injector.openWithOrigin().filter((o) => o.origin?.runId === runId)
      log.warn({ detail: outcome.detail, injections: open.length }, 'guard failed: recovering this run on this host')
      for (const { injection } of open) this.#details.set(injection.id, `guard failed: ${outcome.detail}`)
      void this.#recoverEach(
        open.map((o) => o.injection.id),
        'guard',
      )
    })
    this.#guards.set(runId, set)
  }

  // ---- reports -------------------------------------------------------------------------------

  #onUpdate(injection: Injection, reason: UpdateReason, origin: Origin | null): void {
    if (origin?.who !== 'server') return
    // pending/applying are answered by inject-result; report what the server can act on.
    if (injection.status === 'pending' || injection.status === 'applying') return
    const detail = this.#details.get(injection.id)
    const update: AgentMessage = {
      v: LINK_PROTOCOL_VERSION,
      type: 'injection-update',
      injection,
      reason,
      ...(origin.runId ? { runId: origin.runId } : {}),
      ...(detail ? { detail: detail.slice(0, 4096) } : {}),
    }
    const terminal = !isOpenStatus(injection.status)
    if (terminal) this.#details.delete(injection.id)
    this.#outbox.delete(injection.id)
    this.#outbox.set(injection.id, { message: update, at: Date.now(), terminal })
    if (this.#outbox.size > OUTBOX_LIMIT) this.#outbox.delete(this.#outbox.keys().next().value!)
    // An apply under an inject still being answered is reported by its inject-result, once
    // (the outbox keeps the update for a reconnect, in case that answer is lost).
    const answered = reason === 'apply' && this.#answering.has(injection.requestId)
    if (this.#state === 'ready' && !answered) this.#send(update)
    if (terminal && origin.runId && this.#guards.has(origin.runId)) {
      const stillOpen = this.#opts.injector.openWithOrigin().some((o) => o.origin?.runId === origin.runId)
      if (!stillOpen) {
        this.#guards.get(origin.runId)?.stop()
        this.#guards.delete(origin.runId)
      }
    }
  }
}

/**
 * wss://host:7071 -> wss://host:7071/v1/agents/connect. https:// and http:// are taken as wss://
 * and ws://, so one FAULTLINE_SERVER serves both the agent and the CLI.
 */
export function normaliseServerUrl(server: string): string {
  const url = new URL(server.replace(/^http(s?):/i, 'ws$1:'))
  if (url.protocol !== 'wss:' && url.protocol !== 'ws:') throw new Error(`--server ${server} must be a wss:// URL`)
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/v1/agents/connect'
  return url.toString()
}
