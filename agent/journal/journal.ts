import Database from 'better-sqlite3'
import { chmodSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { openInjectionStatuses, type InjectionStatus } from '../../protocol/injection.js'
import type { Plan } from '../../protocol/plan.js'
import type { ResolvedTarget } from '../../protocol/target.js'

/**
 * The write-ahead journal. Every injection and its plan are committed before anything touches
 * the host; the undo state right after apply. better-sqlite3 is synchronous, so a method
 * returning means the commit is in the WAL file: it survives kill -9 of the agent.
 *
 * Surviving a power cut (or a kernel crash) takes an fsync of the WAL, which is most of what a
 * commit costs. Writes that carry what recovery needs are synced (synchronous = FULL): the
 * pending row with its plan and undo state, any new undo state, recovered, failed, undone, notes
 * and errors. Two status changes are not (synchronous = NORMAL: written, not fsynced): applying
 * and recovering, and active too when apply returned the undo state the row already holds.
 * Losing them in a power cut is harmless for three reasons:
 * - reconcile at start undoes every row with needs_undo = 1 with the row's undo state, whatever
 *   its status (pending, applying, active, recovering), and every undo is idempotent;
 * - the WAL is a log: a torn or lost commit loses it and every later one, never an earlier one
 *   (frames are checksummed), and every synced commit fsyncs all the commits before it;
 * - the commits that must not be lost are synced before anything depends on them: the pending
 *   row before the host is touched, new undo state before the client hears "active", recovered
 *   before the client hears "recovered" (after that others may change the target, and a repeated
 *   undo would act on their state, not ours).
 * synchronous = NORMAL is never the default here: in WAL mode it syncs only at checkpoints, so a
 * commit answered to a client could vanish with the power.
 */
export interface JournalRow {
  seq: number
  id: string
  requestId: string
  requestHash: string
  kind: string
  status: InjectionStatus
  fault: unknown
  target: unknown
  resolved: ResolvedTarget
  targetKey: string
  plan: Plan
  /** The undo state: derived from the plan before apply, replaced by apply's result after. */
  state: unknown
  duration: string
  durationMs: number
  recoverable: boolean
  createdAt: number
  expiresAt: number
  updatedAt: number
  recoveredAt: number | null
  /** 1 until the host carries nothing of this injection any more. */
  needsUndo: boolean
  error: { code: string; message: string } | null
  notes: string[]
  origin: unknown
}

export type JournalHead = Pick<JournalRow, 'status' | 'needsUndo' | 'targetKey' | 'expiresAt'>

export type NewJournalRow = Omit<JournalRow, 'seq' | 'updatedAt' | 'recoveredAt' | 'error' | 'notes' | 'needsUndo' | 'status'>

interface RawRow {
  seq: number
  id: string
  request_id: string
  request_hash: string
  kind: string
  status: string
  fault: string
  target: string
  resolved: string
  target_key: string
  plan: string
  state: string | null
  duration: string
  duration_ms: number
  recoverable: number
  created_at: number
  expires_at: number
  updated_at: number
  recovered_at: number | null
  needs_undo: number
  error: string | null
  notes: string
  origin: string | null
}

const SCHEMA_VERSION = 1

export class Journal {
  readonly path: string
  readonly #db: Database.Database
  readonly #stmts: ReturnType<Journal['prepare']>
  /** The synchronous level of the connection now; switched only when a write needs the other. */
  #synced = true
  #commits = 0
  #syncedCommits = 0

  constructor(stateDir: string) {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 })
    this.path = join(stateDir, 'journal.sqlite')
    this.#db = new Database(this.path)
    // Private, as the state dir is: SQLite makes its -wal and -shm files with the same mode.
    chmodSync(this.path, 0o600)
    this.#db.pragma('journal_mode = WAL')
    this.#db.pragma('synchronous = FULL')
    this.#db.pragma('busy_timeout = 5000')
    this.migrate()
    this.#stmts = this.prepare()
  }

  private migrate(): void {
    const version = this.#db.pragma('user_version', { simple: true }) as number
    if (version > SCHEMA_VERSION) {
      throw new Error(`journal ${this.path} has schema version ${version}, newer than this agent understands (${SCHEMA_VERSION}); upgrade the agent`)
    }
    if (version < 1) {
      this.#db.exec(`
        CREATE TABLE injections (
          seq          INTEGER PRIMARY KEY AUTOINCREMENT,
          id           TEXT NOT NULL UNIQUE,
          request_id   TEXT NOT NULL,
          request_hash TEXT NOT NULL,
          kind         TEXT NOT NULL,
          status       TEXT NOT NULL,
          fault        TEXT NOT NULL,
          target       TEXT NOT NULL,
          resolved     TEXT NOT NULL,
          target_key   TEXT NOT NULL,
          plan         TEXT NOT NULL,
          state        TEXT,
          duration     TEXT NOT NULL,
          duration_ms  INTEGER NOT NULL,
          recoverable  INTEGER NOT NULL,
          created_at   INTEGER NOT NULL,
          expires_at   INTEGER NOT NULL,
          updated_at   INTEGER NOT NULL,
          recovered_at INTEGER,
          needs_undo   INTEGER NOT NULL,
          error        TEXT,
          notes        TEXT NOT NULL DEFAULT '[]',
          origin       TEXT
        );
        CREATE INDEX injections_request ON injections(request_id);
        CREATE INDEX injections_undo ON injections(needs_undo) WHERE needs_undo = 1;
        PRAGMA user_version = 1;
      `)
    }
  }

  private prepare() {
    const db = this.#db
    return {
      insert: db.prepare(`
        INSERT INTO injections (id, request_id, request_hash, kind, status, fault, target, resolved, target_key,
          plan, state, duration, duration_ms, recoverable, created_at, expires_at, updated_at, needs_undo, origin)
        VALUES (@id, @requestId, @requestHash, @kind, 'pending', @fault, @target, @resolved, @targetKey,
          @plan, @state, @duration, @durationMs, @recoverable, @createdAt, @expiresAt, @createdAt, 1, @origin)`),
      get: db.prepare('SELECT * FROM injections WHERE id = ?'),
      getState: db.prepare('SELECT state FROM injections WHERE id = ?'),
      head: db.prepare('SELECT status, needs_undo, target_key, expires_at FROM injections WHERE id = ?'),
      openIdsOnKey: db.prepare(
        "SELECT id FROM injections WHERE needs_undo = 1 AND status != 'failed' AND kind = ? AND target_key = ? ORDER BY seq",
      ),
      byRequest: db.prepare('SELECT * FROM injections WHERE request_id = ? ORDER BY seq'),
      list: db.prepare('SELECT * FROM injections ORDER BY seq DESC LIMIT ?'),
      listByStatus: db.prepare('SELECT * FROM injections WHERE status = ? ORDER BY seq DESC LIMIT ?'),
      needingUndo: db.prepare('SELECT * FROM injections WHERE needs_undo = 1 ORDER BY seq'),
      openOnKey: db.prepare(
        "SELECT * FROM injections WHERE needs_undo = 1 AND status != 'failed' AND kind = ? AND target_key = ?",
      ),
      countOpenByKind: db.prepare(
        `SELECT kind, COUNT(*) AS n FROM injections WHERE status IN (${openInjectionStatuses.map((s) => `'${s}'`).join(',')}) GROUP BY kind`,
      ),
      setStatus: db.prepare('UPDATE injections SET status = ?, updated_at = ? WHERE id = ?'),
      setState: db.prepare('UPDATE injections SET state = ?, updated_at = ? WHERE id = ?'),
      activate: db.prepare("UPDATE injections SET status = 'active', state = ?, updated_at = ? WHERE id = ?"),
      recovered: db.prepare(
        "UPDATE injections SET status = 'recovered', needs_undo = 0, error = NULL, recovered_at = ?, updated_at = ? WHERE id = ?",
      ),
      failed: db.prepare("UPDATE injections SET status = 'failed', error = ?, updated_at = ? WHERE id = ?"),
      undone: db.prepare('UPDATE injections SET needs_undo = 0, recovered_at = ?, updated_at = ? WHERE id = ?'),
      setError: db.prepare('UPDATE injections SET error = ?, updated_at = ? WHERE id = ?'),
      setNotes: db.prepare('UPDATE injections SET notes = ?, updated_at = ? WHERE id = ?'),
    }
  }

  /** Commits so far (each write method is one commit), for the benchmark and the no-growth test. */
  get commits(): number {
    return this.#commits
  }

  /** Of `commits`, those fsynced before returning (synchronous = FULL). */
  get syncedCommits(): number {
    return this.#syncedCommits
  }

  /**
   * Runs one commit, fsynced or not. The pragma is a property of the connection that SQLite
   * applies when the statement is compiled, so it is set through exec, not a prepared statement.
   */
  #commit<T>(synced: boolean, write: () => T): T {
    if (synced !== this.#synced) {
      this.#db.exec(synced ? 'PRAGMA synchronous = FULL' : 'PRAGMA synchronous = NORMAL')
      this.#synced = synced
    }
    const result = write()
    this.#commits++
    if (synced) this.#syncedCommits++
    return result
  }

  /** Commits all rows of one request in one transaction, as 'pending' with needs_undo = 1. Synced. */
  insertPending(rows: NewJournalRow[]): void {
    const insert = this.#stmts.insert
    this.#commit(true, () => this.#db.transaction((all: NewJournalRow[]) => {
      for (const r of all) {
        insert.run({
          id: r.id,
          requestId: r.requestId,
          requestHash: r.requestHash,
          kind: r.kind,
          fault: JSON.stringify(r.fault),
          target: JSON.stringify(r.target),
          resolved: JSON.stringify(r.resolved),
          targetKey: r.targetKey,
          plan: JSON.stringify(r.plan),
          state: JSON.stringify(r.state),
          duration: r.duration,
          durationMs: r.durationMs,
          recoverable: r.recoverable ? 1 : 0,
          createdAt: r.createdAt,
          expiresAt: r.expiresAt,
          origin: r.origin === undefined ? null : JSON.stringify(r.origin),
        })
      }
    })(rows))
  }

  get(id: string): JournalRow | undefined {
    const raw = this.#stmts.get.get(id) as RawRow | undefined
    return raw && decode(raw)
  }

  /** The few columns the lifecycle checks on every step, without decoding the whole row. */
  head(id: string): JournalHead | undefined {
    const raw = this.#stmts.head.get(id) as { status: string; needs_undo: number; target_key: string; expires_at: number } | undefined
    return raw && { status: raw.status as InjectionStatus, needsUndo: raw.needs_undo === 1, targetKey: raw.target_key, expiresAt: raw.expires_at }
  }

  byRequest(requestId: string): JournalRow[] {
    return (this.#stmts.byRequest.all(requestId) as RawRow[]).map(decode)
  }

  list(status?: InjectionStatus, limit = 1000): JournalRow[] {
    const raws = status ? this.#stmts.listByStatus.all(status, limit) : this.#stmts.list.all(limit)
    return (raws as RawRow[]).map(decode)
  }

  needingUndo(): JournalRow[] {
    return (this.#stmts.needingUndo.all() as RawRow[]).map(decode)
  }

  /** Injections of `kind` on the concrete target `targetKey` that may still be on the host. */
  openOnTarget(kind: string, targetKey: string): JournalRow[] {
    return (this.#stmts.openOnKey.all(kind, targetKey) as RawRow[]).map(decode)
  }

  /** The ids of openOnTarget, oldest first, without decoding the rows. */
  openIdsOnTarget(kind: string, targetKey: string): string[] {
    return (this.#stmts.openIdsOnKey.all(kind, targetKey) as { id: string }[]).map((r) => r.id)
  }

  countOpenByKind(): Map<string, number> {
    const rows = this.#stmts.countOpenByKind.all() as { kind: string; n: number }[]
    return new Map(rows.map((r) => [r.kind, r.n]))
  }

  setStatus(id: string, status: InjectionStatus): void {
    this.#commit(true, () => this.#stmts.setStatus.run(status, Date.now(), id))
  }

  /**
   * About to apply: not synced. A power cut that loses it leaves the row pending, which
   * reconcile undoes exactly as it undoes an applying one (kill -9 does not lose it).
   */
  markApplying(id: string): void {
    this.#commit(false, () => this.#stmts.setStatus.run('applying', Date.now(), id))
  }

  /** About to undo: not synced. A power cut that loses it leaves the row active: undone at start. */
  markRecovering(id: string): void {
    this.#commit(false, () => this.#stmts.setStatus.run('recovering', Date.now(), id))
  }

  /** Undo state recorded during apply (a checkpoint): synced, the apply goes on relying on it. */
  setState(id: string, state: unknown): void {
    this.#commit(true, () => this.#stmts.setState.run(JSON.stringify(state), Date.now(), id))
  }

  /**
   * Applied, with the undo state apply returned. Synced only when that state differs from the
   * one already in the row: otherwise a power cut that loses this commit leaves a pending or
   * applying row with the very same undo state, which reconcile undoes just the same.
   */
  markActive(id: string, state: unknown): void {
    const json = JSON.stringify(state)
    const stored = this.#stmts.getState.get(id) as { state: string | null } | undefined
    this.#commit(stored?.state !== json, () => this.#stmts.activate.run(json, Date.now(), id))
  }

  /** Recovered: nothing of it is on the host any more; a previous recovery error is cleared. Synced. */
  markRecovered(id: string): void {
    const now = Date.now()
    this.#commit(true, () => this.#stmts.recovered.run(now, now, id))
  }

  markFailed(id: string, error: { code: string; message: string }): void {
    this.#commit(true, () => this.#stmts.failed.run(JSON.stringify(error), Date.now(), id))
  }

  /** The host carries nothing of this injection any more (used for failed injections). */
  markUndone(id: string): void {
    const now = Date.now()
    this.#commit(true, () => this.#stmts.undone.run(now, now, id))
  }

  setError(id: string, error: { code: string; message: string } | null): void {
    this.#commit(true, () => this.#stmts.setError.run(error === null ? null : JSON.stringify(error), Date.now(), id))
  }

  addNote(id: string, note: string): void {
    const row = this.get(id)
    if (!row) return
    this.#commit(true, () => this.#stmts.setNotes.run(JSON.stringify([...row.notes, note]), Date.now(), id))
  }

  close(): void {
    if (this.#db.open) this.#db.close()
  }
}

function decode(r: RawRow): JournalRow {
  return {
    seq: r.seq,
    id: r.id,
    requestId: r.request_id,
    requestHash: r.request_hash,
    kind: r.kind,
    status: r.status as InjectionStatus,
    fault: JSON.parse(r.fault),
    target: JSON.parse(r.target),
    resolved: JSON.parse(r.resolved) as ResolvedTarget,
    targetKey: r.target_key,
    plan: JSON.parse(r.plan) as Plan,
    state: r.state === null ? null : JSON.parse(r.state),
    duration: r.duration,
    durationMs: r.duration_ms,
    recoverable: r.recoverable === 1,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    updatedAt: r.updated_at,
    recoveredAt: r.recovered_at,
    needsUndo: r.needs_undo === 1,
    error: r.error === null ? null : (JSON.parse(r.error) as { code: string; message: string }),
    notes: JSON.parse(r.notes) as string[],
    origin: r.origin === null ? null : JSON.parse(r.origin),
  }
}
