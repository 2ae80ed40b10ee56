import type { ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import { FaultlineError } from '../protocol/errors.js'
import type { Role } from '../protocol/roles.js'
import type { StreamHello, StreamMessageType, StreamSignedOut } from '../protocol/views.js'
import type { AuditRow, EventRow, Store } from './store.js'
import { auditEntryView, fleetEventView } from './views.js'

/** What the server writes (event rows, audit rows), handed to live listeners in the same synchronous turn. */
export type LiveItem = { kind: 'fleet'; row: EventRow } | { kind: 'audit'; row: AuditRow }
export type LiveListener = (item: LiveItem) => void

/** Where a stream is: the last fleet event id and the last audit id sent (or skipped). */
export interface StreamCursor {
  eventId: number
  auditId: number
}

const CURSOR_RE = /^([0-9]{1,15})\.([0-9]{1,15})$/

export function formatCursor(c: StreamCursor): string {
  return `${c.eventId}.${c.auditId}`
}

/** "<event id>.<audit id>", or FAULTLINE_ERR_BAD_CURSOR. */
export function parseCursor(text: string): StreamCursor {
  const m = CURSOR_RE.exec(text.trim())
  if (!m) {
    throw new FaultlineError(
      'FAULTLINE_ERR_BAD_CURSOR',
      `the cursor ${JSON.stringify(text.slice(0, 40))} is not "<event id>.<audit id>" (two whole numbers, e.g. "120.37", as the id: of a stream message); reconnect without one to start at the end`,
    )
  }
  return { eventId: Number(m[1]), auditId: Number(m[2]) }
}

export interface StreamIdentity {
  who: string
  role: Role
  /** The API token the stream authenticated with (none for the admin token): revoking it ends the stream. */
  tokenId?: string
  tokenName?: string
  expiresAt?: number
}

export interface EventStreamsOptions {
  store: Store
  log: Logger
  /** Adds a live listener; returns the function that removes it. */
  subscribe: (listener: LiveListener) => () => void
  /** A ": ping" comment this often (default 15 s), so proxies and clients see a live connection. */
  pingMs?: number
  /** A client with more than this many bytes written but not yet taken by the socket is dropped (default 1 MiB). */
  maxPendingBytes?: number
  /** Rows read per page of a backlog (default 200), so a long one does not hold the event loop. */
  pageSize?: number
}

type ResolvedOptions = Required<Pick<EventStreamsOptions, 'pingMs' | 'maxPendingBytes' | 'pageSize'>> & EventStreamsOptions

/** setTimeout takes at most 2^31-1 ms (24.8 days); longer expiries are waited for in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * The live event streams (GET /v1/events/stream, Server-Sent Events): one per client, each
 * resumable from a cursor without a gap or a duplicate. A stream first sends its backlog from
 * the database, page by page, oldest first (fleet events and audit rows merged by time); the
 * turn in which a page finds nothing more is the turn it goes live, and since rows are written
 * and handed to listeners in one synchronous turn, nothing falls between the two. Every message
 * is deduplicated by id anyway.
 */
export class EventStreams {
  readonly #o: ResolvedOptions
  readonly #clients = new Set<StreamClient>()

  constructor(opts: EventStreamsOptions) {
    this.#o = { pingMs: 15_000, maxPendingBytes: 1024 * 1024, pageSize: 200, ...opts }
  }

  get size(): number {
    return this.#clients.size
  }

  /** Starts a stream on `res` (already hijacked from Fastify). `cursor` undefined: from the current end. */
  open(res: ServerResponse, identity: StreamIdentity, cursor: StreamCursor | undefined): void {
    const client = new StreamClient(this.#o, res, identity, () => this.#clients.delete(client))
    this.#clients.add(client)
    client.start(cursor)
  }

  /** Ends every stream authenticated with this token (revoked), after a signed-out message. */
  signOut(tokenId: string, reason: StreamSignedOut['reason'], message: string): void {
    for (const client of [...this.#clients]) if (client.identity.tokenId === tokenId) client.signOut(reason, message)
  }

  /** Ends every stream (server closing): the HTTP server waits for open responses otherwise. */
  closeAll(): void {
    for (const client of [...this.#clients]) client.end()
  }
}

class StreamClient {
  readonly #o: ResolvedOptions
  readonly #res: ServerResponse
  readonly #log: Logger
  readonly #onEnd: () => void
  #cursor: StreamCursor = { eventId: 0, auditId: 0 }
  #live = false
  #closed = false
  #unsubscribe: (() => void) | undefined
  #ping: NodeJS.Timeout | undefined
  #expiry: NodeJS.Timeout | undefined
  #pump: NodeJS.Immediate | undefined

  constructor(
    opts: ResolvedOptions,
    res: ServerResponse,
    readonly identity: StreamIdentity,
    onEnd: () => void,
  ) {
    this.#o = opts
    this.#res = res
    this.#log = opts.log.child({ who: identity.who })
    this.#onEnd = onEnd
  }

  start(from: StreamCursor | undefined): void {
    const res = this.#res
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      // nginx and friends: pass every message on at once.
      'x-accel-buffering': 'no',
    })
    res.on('close', () => this.end())
    // One synchronous turn: subscribe, then read where the database is. Whatever is written
    // after this turn reaches the listener; whatever before, the backlog.
    this.#unsubscribe = this.#o.subscribe((item) => this.#onLive(item))
    const end = this.#o.store.lastIds()
    if (from === undefined) {
      this.#cursor = { eventId: end.eventId, auditId: end.auditId }
      this.#live = true
    } else {
      // A cursor past the end (another server's, or a database restored from a backup) starts at the end.
      this.#cursor = { eventId: Math.min(from.eventId, end.eventId), auditId: Math.min(from.auditId, end.auditId) }
    }
    const hello: StreamHello = { cursor: formatCursor(this.#cursor), role: this.identity.role, who: this.identity.who }
    this.#send('hello', hello)
    if (!this.#live) this.#backlog()
    this.#ping = setInterval(() => this.#write(': ping\n\n'), this.#o.pingMs)
    this.#ping.unref()
    if (this.identity.expiresAt !== undefined) this.#armExpiry(this.identity.expiresAt)
  }

  /** One page of the backlog, then the next once the socket took it; live when nothing is left. */
  #backlog(): void {
    this.#pump = undefined
    if (this.#closed) return
    const { store, pageSize } = this.#o
    const events = store.events(this.#cursor.eventId, pageSize)
    const audits = store.auditAfter(this.#cursor.auditId, pageSize)
    const moreEvents = events.length === pageSize
    const moreAudits = audits.length === pageSize
    let e = 0
    let a = 0
    // Merged by time; a full page may have more rows behind it, so the merge stops where such a
    // page runs out and the next page goes on from there.
    for (;;) {
      const ev = events[e]
      const au = audits[a]
      if (ev && au) {
        if (ev.at <= au.at) this.#sendFleet(events[e++]!)
        else this.#sendAudit(audits[a++]!)
      } else if (ev && !moreAudits) {
        this.#sendFleet(events[e++]!)
      } else if (au && !moreEvents) {
        this.#sendAudit(audits[a++]!)
      } else {
        break
      }
      if (this.#closed) return
    }
    if (!moreEvents && !moreAudits) {
      this.#live = true
      return
    }
    if (this.#res.writableNeedDrain) this.#res.once('drain', () => this.#backlog())
    else this.#pump = setImmediate(() => this.#backlog())
  }

  #onLive(item: LiveItem): void {
    if (!this.#live || this.#closed) return
    try {
      if (item.kind === 'fleet') this.#sendFleet(item.row)
      else this.#sendAudit(item.row)
    } catch (err) {
      // A listener never fails the writer of the row (a run, the hub, a request's audit).
      this.#log.warn({ err }, 'event stream write failed; closing the stream')
      this.#res.destroy()
    }
  }

  #sendFleet(row: EventRow): void {
    if (row.id <= this.#cursor.eventId) return
    this.#cursor = { ...this.#cursor, eventId: row.id }
    // token.* events are for admins only (as GET /v1/tokens is).
    if (row.type.startsWith('token.') && this.identity.role !== 'admin') return
    this.#send('fleet', fleetEventView(row))
  }

  #sendAudit(row: AuditRow): void {
    if (row.id <= this.#cursor.auditId) return
    this.#cursor = { ...this.#cursor, auditId: row.id }
    this.#send('audit', auditEntryView(row))
  }

  #send(type: StreamMessageType, data: unknown): void {
    // JSON.stringify escapes line breaks in strings: one data: line per message.
    this.#write(`id: ${formatCursor(this.#cursor)}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`)
  }

  #write(chunk: string): void {
    if (this.#closed || this.#res.destroyed) return
    this.#res.write(chunk)
    if (this.#res.writableLength > this.#o.maxPendingBytes) {
      // A client that does not read is dropped rather than buffered without bound; it resumes
      // from its last cursor when it reconnects.
      this.#log.warn({ pendingBytes: this.#res.writableLength, limit: this.#o.maxPendingBytes }, 'event stream client does not keep up; dropping it')
      this.#res.destroy()
      this.end()
    }
  }

  #armExpiry(expiresAt: number): void {
    const left = expiresAt - Date.now()
    if (left <= 0) {
      this.signOut('expired', `the API token ${this.identity.tokenName ?? this.identity.tokenId} expired at ${new Date(expiresAt).toISOString()}; ask an admin for a new one`)
      return
    }
    this.#expiry = setTimeout(() => this.#armExpiry(expiresAt), Math.min(left, MAX_TIMER_MS))
    this.#expiry.unref()
  }

  signOut(reason: StreamSignedOut['reason'], message: string): void {
    if (this.#closed) return
    const data: StreamSignedOut = { reason, message }
    this.#send('signed-out', data)
    this.end()
  }

  end(): void {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#ping)
    clearTimeout(this.#expiry)
    if (this.#pump) clearImmediate(this.#pump)
    this.#unsubscribe?.()
    if (!this.#res.writableEnded && !this.#res.destroyed) this.#res.end()
    this.#onEnd()
  }
}
