import { randomBytes } from 'node:crypto'
import { newSecret, secretMatchesHash, tokensEqual } from '../common/tokens.js'
import { EventEmitter } from 'node:events'
import type { FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { WebSocket } from 'ws'
import { FaultlineError, type ErrorCode } from '../protocol/errors.js'
import { isOpenStatus, type InjectionSchema } from '../protocol/injection.js'
import type { Static } from 'typebox'
import { decodeAgentMessage } from '../protocol/link-codec.js'
import { LINK_PROTOCOL_VERSION, type AgentMessage, type ServerMessage } from '../protocol/link.js'
import type { LinkCounters } from './metrics.js'
import type { Store } from './store.js'

/** An injection as it travels on the link (its fault and target are not narrowed). */
type WireInjection = Static<typeof InjectionSchema>

type Hello = Extract<AgentMessage, { type: 'hello' }>
export type InjectionUpdate = Extract<AgentMessage, { type: 'injection-update' }>
type Reply = Extract<AgentMessage, { type: 'inject-result' | 'ack' }>

/** Who is dialling in, decided from the upgrade request before any message is read. */
export type LinkIdentity = { enrol: false; agentId: string } | { enrol: true; name: string }

export interface HubEvents {
  /** hello received: the agent may be sent commands. */
  ready: [agentId: string]
  /** The first heartbeat after hello: every update the agent had queued has arrived before it. */
  sync: [agentId: string, open: WireInjection[]]
  update: [agentId: string, update: InjectionUpdate]
  disconnected: [agentId: string]
}

export interface HubOptions {
  store: Store
  log: Logger
  leaseMs: number
  heartbeatMs: number
  enrolToken: string
  /** Invalid messages tolerated per minute before the connection is closed (default 20). */
  maxViolationsPerMinute?: number
  /** Messages in and out, and the invalid ones (server metrics). */
  counters?: LinkCounters
  /** Writes an event row (and tells the live listeners). */
  event: (type: string, message: string, refs?: { agentId?: string; runId?: string; data?: unknown }) => void
}

/** Closes a connection that sent nothing for this many heartbeats (and at least a lease). */
const SILENT_HEARTBEATS = 3
const HELLO_TIMEOUT_MS = 15_000

interface Pending {
  resolve: (reply: Reply) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

class Session {
  phase: 'welcomed' | 'ready' | 'synced' = 'welcomed'
  hello: Hello | undefined
  readonly pending = new Map<string, Pending>()
  readonly violations: number[] = []
  violationsTotal = 0
  lastMessageAt = Date.now()
  lastSeenWrite = 0
  readonly connectedAt = Date.now()
  helloTimer: NodeJS.Timeout | undefined

  constructor(
    readonly agentId: string,
    readonly socket: WebSocket,
    readonly address: string,
    readonly counters: LinkCounters | undefined,
  ) {}

  /** `frame`: the message already serialized, when the same one goes to many agents (halt, lease). */
  send(message: ServerMessage, frame?: Buffer): void {
    if (this.socket.readyState !== this.socket.OPEN) return
    // A Buffer goes out as a text frame, as the string would (the protocol is JSON text).
    if (frame) this.socket.send(frame, { binary: false })
    else this.socket.send(JSON.stringify(message))
    this.counters?.messageOut()
  }
}

/**
 * The server's end of the link: authenticates the upgrade, welcomes (and enrols) agents, checks
 * every message, renews every agent's lease, and carries commands with a requestId to the
 * agent and its answer back. A misbehaving connection only ever harms itself: its bad messages
 * are answered with `error` and counted, and past the limit only that socket is closed.
 */
export class Hub extends EventEmitter<HubEvents> {
  readonly #opts: HubOptions
  readonly #log: Logger
  readonly #sessions = new Map<string, Session>()
  readonly #ticker: NodeJS.Timeout
  #closing = false

  constructor(opts: HubOptions) {
    super()
    this.#opts = opts
    this.#log = opts.log
    // Renew at a third of the lease: two renewals may be lost before an agent gives up.
    this.#ticker = setInterval(() => this.#tick(), Math.max(250, Math.floor(opts.leaseMs / 3)))
  }

  get leaseMs(): number {
    return this.#opts.leaseMs
  }

  isReady(agentId: string): boolean {
    const s = this.#sessions.get(agentId)
    return s !== undefined && s.phase !== 'welcomed'
  }

  readyIds(): string[] {
    return [...this.#sessions.values()].filter((s) => s.phase !== 'welcomed').map((s) => s.agentId)
  }

  connection(agentId: string): { connectedAt: number; address: string; violations: number } | undefined {
    const s = this.#sessions.get(agentId)
    return s && { connectedAt: s.connectedAt, address: s.address, violations: s.violationsTotal }
  }

  /** Open injections the agent reported in its last hello (kept current by updates). */
  openOf(agentId: string): WireInjection[] {
    return this.#sessions.get(agentId)?.hello?.open ?? []
  }

  // ---- upgrade -------------------------------------------------------------------------------

  /**
   * Decides who is connecting from the upgrade request: "Agent <id>:<secret>" (an enrolled
   * agent), or "Bearer <enrolment token>" (first contact). Throws 401 otherwise, before upgrade.
   */
  authenticate(req: FastifyRequest): LinkIdentity {
    const header = req.headers.authorization ?? ''
    const proposed = String(req.headers['x-faultline-agent-name'] ?? '')
    const name = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(proposed) ? proposed : 'agent'
    const refuse = (code: ErrorCode, message: string, claim: string): never => {
      // Logged and recorded as an event here; the route's onResponse adds the audit row.
      this.#log.warn({ claim, address: req.ip, code }, `agent connection refused: ${message}`)
      this.#opts.event('agent.refused', `connection from ${req.ip} (${claim}) refused: ${message}`, { data: { claim, code } })
      throw new FaultlineError(code, message)
    }
    const agent = /^Agent\s+([^:\s]{1,128}):(\S{1,256})$/.exec(header)
    if (agent) {
      const [, agentId, secret] = agent
      const stored = this.#opts.store.agentSecretHash(agentId!)
      if (!stored || !secretMatchesHash(secret!, stored)) {
        refuse(
          'FAULTLINE_ERR_UNAUTHORIZED',
          `agent "${agentId}" is unknown to this server or its credential is wrong (removed, or the server's state dir was reset); it enrols again with its --enrol-token-file`,
          `agent:${agentId}`,
        )
      }
      return { enrol: false, agentId: agentId! }
    }
    const bearer = /^Bearer\s+(\S+)$/i.exec(header)
    if (!bearer) refuse('FAULTLINE_ERR_UNAUTHORIZED', 'no enrolment token was sent: start the agent with --enrol-token-file (the server\'s enrol.token)', `enrol:${name}`)
    if (!tokensEqual(bearer![1]!, this.#opts.enrolToken)) {
      refuse('FAULTLINE_ERR_UNAUTHORIZED', "the enrolment token is wrong: the agent's --enrol-token-file must hold the server's enrolment token (its --enrol-token-file, or <state-dir>/enrol.token)", `enrol:${name}`)
    }
    const removed = this.#opts.store.removedAgent(name)
    if (removed) {
      refuse(
        'FAULTLINE_ERR_AGENT_REMOVED',
        `an admin removed the agent "${name}" from this server (${removed.removedBy}, ${new Date(removed.removedAt).toISOString()}); it may enrol again once an admin runs "faultline agents admit ${name}"`,
        `enrol:${name}`,
      )
    }
    return { enrol: true, name }
  }

  /** Who an upgrade request claims to be, for the audit log: "agent:<id>", "enrol:<name>", or anonymous. */
  static claimOf(req: FastifyRequest): string {
    const header = req.headers.authorization ?? ''
    const agent = /^Agent\s+([^:\s]{1,128}):/.exec(header)
    if (agent) return `agent:${agent[1]}`
    const proposed = String(req.headers['x-faultline-agent-name'] ?? '').slice(0, 63)
    return /^Bearer\s/i.test(header) ? `enrol:${proposed || 'agent'}` : 'anonymous'
  }

  /** A socket upgraded for `identity`: welcome (with a new credential when enrolling), then hello. */
  accept(socket: WebSocket, identity: LinkIdentity, address: string): void {
    if (this.#closing) return void socket.close(1001, 'server stopping')
    let agentId: string
    let credential: string | undefined
    if (identity.enrol) {
      agentId = this.#freeId(identity.name)
      credential = newSecret()
      this.#opts.store.insertAgent(agentId, credential, identity.name)
      this.#opts.event('agent.enrolled', `agent ${agentId} enrolled from ${address}`, { agentId })
    } else {
      agentId = identity.agentId
    }
    const previous = this.#sessions.get(agentId)
    if (previous) {
      // A reconnect whose old socket has not noticed yet: the new connection wins.
      this.#log.info({ agentId }, 'agent reconnected; closing its previous connection')
      previous.socket.close(4000, 'replaced by a new connection')
      this.#drop(previous)
    }
    const session = new Session(agentId, socket, address, this.#opts.counters)
    this.#sessions.set(agentId, session)
    socket.on('message', (data: Buffer, isBinary: boolean) => this.#onMessage(session, data, isBinary))
    socket.on('close', () => this.#drop(session))
    socket.on('error', (err) => this.#log.debug({ err: err.message, agentId }, 'agent socket error'))
    session.helloTimer = setTimeout(() => {
      if (session.phase === 'welcomed') socket.close(1008, 'no hello')
    }, HELLO_TIMEOUT_MS)
    session.send({
      v: LINK_PROTOCOL_VERSION,
      type: 'welcome',
      agentId,
      ...(credential ? { credential } : {}),
      leaseMs: this.#opts.leaseMs,
      heartbeatMs: this.#opts.heartbeatMs,
    })
  }

  #freeId(name: string): string {
    if (!this.#opts.store.getAgent(name)) return name
    for (;;) {
      const id = `${name.slice(0, 56)}-${randomBytes(3).toString('hex')}`
      if (!this.#opts.store.getAgent(id)) return id
    }
  }

  // ---- messages ------------------------------------------------------------------------------

  #onMessage(session: Session, data: Buffer, isBinary: boolean): void {
    if (this.#sessions.get(session.agentId) !== session) return
    this.#opts.counters?.messageIn()
    session.lastMessageAt = Date.now()
    if (isBinary) return this.#violation(session, 'FAULTLINE_ERR_LINK_MALFORMED', 'binary frames are not part of the protocol; send JSON text')
    const decoded = decodeAgentMessage(data)
    if (!decoded.ok) return this.#violation(session, decoded.code, decoded.error, decoded.requestId)
    const message = decoded.message
    // What this message writes joins the other messages of this turn in one commit.
    this.#opts.store.batchTurn()
    if (session.phase === 'welcomed' && message.type !== 'hello') {
      return this.#violation(session, 'FAULTLINE_ERR_LINK_ORDER', `"${message.type}" before hello; the first message after welcome is hello`)
    }
    switch (message.type) {
      case 'hello':
        return this.#onHello(session, message)
      case 'heartbeat':
        if (session.lastMessageAt - session.lastSeenWrite > 5_000) {
          session.lastSeenWrite = session.lastMessageAt
          this.#opts.store.agentSeen(session.agentId)
        }
        if (session.phase === 'ready') {
          session.phase = 'synced'
          this.emit('sync', session.agentId, session.hello!.open)
        }
        return
      case 'inject-result':
      case 'ack': {
        const pending = session.pending.get(message.requestId)
        if (!pending) return this.#violation(session, 'FAULTLINE_ERR_LINK_ORDER', `no request "${message.requestId}" is waiting for an answer (late, or never sent)`, message.requestId)
        session.pending.delete(message.requestId)
        clearTimeout(pending.timer)
        pending.resolve(message)
        return
      }
      case 'injection-update':
        this.#trackOpen(session, message.injection)
        this.emit('update', session.agentId, message)
        return
    }
  }

  #onHello(session: Session, hello: Hello): void {
    if (session.phase !== 'welcomed') return this.#violation(session, 'FAULTLINE_ERR_LINK_ORDER', 'hello was already received on this connection')
    if (hello.agentId !== session.agentId) {
      // Speaking for another agent is not a mistake to tolerate.
      this.#violation(session, 'FAULTLINE_ERR_LINK_ORDER', `hello names agent "${hello.agentId}", but this connection authenticated as "${session.agentId}"`)
      session.socket.close(1008, 'agent id mismatch')
      return
    }
    clearTimeout(session.helloTimer)
    session.hello = hello
    session.phase = 'ready'
    session.lastSeenWrite = Date.now()
    this.#opts.store.recordHello(session.agentId, hello)
    this.#opts.event('agent.connected', `agent ${session.agentId} (${hello.hostname}, ${hello.version}) connected from ${session.address}; ${hello.open.length} server injection(s) open`, {
      agentId: session.agentId,
    })
    this.emit('ready', session.agentId)
  }

  #trackOpen(session: Session, injection: WireInjection): void {
    if (!session.hello) return
    const open = session.hello.open.filter((i) => i.id !== injection.id)
    if (isOpenStatus(injection.status)) open.push(injection)
    session.hello.open = open
  }

  #violation(session: Session, code: ErrorCode, message: string, requestId?: string): void {
    const now = Date.now()
    this.#opts.counters?.rejected()
    session.violationsTotal++
    session.violations.push(now)
    while (session.violations.length > 0 && now - session.violations[0]! > 60_000) session.violations.shift()
    session.send({ v: LINK_PROTOCOL_VERSION, type: 'error', code, message: message.slice(0, 1000), ...(requestId ? { requestId } : {}) })
    // One event per burst, not per message: a flood must not flood the event log too.
    if (session.violations.length === 1) {
      this.#opts.event('link.invalid', `agent ${session.agentId}: ${code}: ${message.slice(0, 300)}`, { agentId: session.agentId })
    }
    this.#log.warn({ agentId: session.agentId, code, error: message.slice(0, 300), total: session.violationsTotal }, 'invalid message from agent')
    const limit = this.#opts.maxViolationsPerMinute ?? 20
    if (session.violations.length > limit) {
      this.#opts.event('link.closed', `agent ${session.agentId}: closed after ${session.violations.length} invalid messages within a minute`, { agentId: session.agentId })
      session.socket.close(1008, 'too many invalid messages')
    }
  }

  #drop(session: Session): void {
    clearTimeout(session.helloTimer)
    for (const [id, pending] of session.pending) {
      clearTimeout(pending.timer)
      pending.reject(new FaultlineError('FAULTLINE_ERR_AGENT_OFFLINE', `agent ${session.agentId} disconnected before answering ${id}`))
    }
    session.pending.clear()
    if (this.#sessions.get(session.agentId) !== session) return
    this.#sessions.delete(session.agentId)
    if (session.phase === 'welcomed') return
    this.#opts.store.agentSeen(session.agentId)
    this.#opts.event('agent.disconnected', `agent ${session.agentId} disconnected`, { agentId: session.agentId })
    this.emit('disconnected', session.agentId)
  }

  // ---- commands ------------------------------------------------------------------------------

  /** Sends a command with a requestId and resolves with the agent's inject-result or ack. */
  request(agentId: string, message: Extract<ServerMessage, { requestId: string }>, timeoutMs: number, frame?: Buffer): Promise<Reply> {
    const session = this.#sessions.get(agentId)
    if (!session || session.phase === 'welcomed') {
      return Promise.reject(new FaultlineError('FAULTLINE_ERR_AGENT_OFFLINE', `agent ${agentId} is not connected`))
    }
    return new Promise<Reply>((resolve, reject) => {
      const previous = session.pending.get(message.requestId)
      if (previous) {
        clearTimeout(previous.timer)
        previous.reject(new FaultlineError('FAULTLINE_ERR_LINK_TIMEOUT', `request ${message.requestId} was sent again`))
      }
      const timer = setTimeout(() => {
        session.pending.delete(message.requestId)
        reject(new FaultlineError('FAULTLINE_ERR_LINK_TIMEOUT', `agent ${agentId} did not answer ${message.type} ${message.requestId} within ${timeoutMs} ms`))
      }, timeoutMs)
      session.pending.set(message.requestId, { resolve, reject, timer })
      session.send(message, frame)
    })
  }

  /** Renews every lease; closes connections that went silent (the agent reconnects). */
  #tick(): void {
    const now = Date.now()
    const silentMs = Math.max(SILENT_HEARTBEATS * this.#opts.heartbeatMs, this.#opts.leaseMs)
    const lease = { v: LINK_PROTOCOL_VERSION, type: 'lease', leaseMs: this.#opts.leaseMs } as const
    const leaseFrame = Buffer.from(JSON.stringify(lease))
    for (const session of this.#sessions.values()) {
      if (now - session.lastMessageAt > silentMs) {
        this.#log.warn({ agentId: session.agentId, silentMs: now - session.lastMessageAt }, 'agent silent; closing its connection')
        session.socket.terminate()
        this.#drop(session)
        continue
      }
      session.send(lease, leaseFrame)
    }
  }

  /** Stops renewing leases and closes every connection (preClose). */
  close(): void {
    this.#closing = true
    clearInterval(this.#ticker)
    for (const session of [...this.#sessions.values()]) {
      session.socket.close(1001, 'server stopping')
      this.#drop(session)
    }
  }

  /** Forgets an agent that was removed: its connection is closed and its credential no longer works. */
  disconnect(agentId: string): void {
    const session = this.#sessions.get(agentId)
    if (!session) return
    session.socket.close(4001, 'agent removed')
    this.#drop(session)
  }
}
