import Database from 'better-sqlite3'
import { hashSecret } from '../common/tokens.js'
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { FaultlineError } from '../protocol/errors.js'
import { join } from 'node:path'
import type { Experiment } from '../protocol/experiment.js'
import type { Role } from '../protocol/roles.js'
import { terminalRecordStatuses, type RecordReason, type RecordStatus, type RunStatus, type RunTrigger } from '../protocol/views.js'

/**
 * The server's state in one SQLite file (better-sqlite3, WAL): agents (with a hashed credential),
 * experiments, runs, one record per run x host x target, events, API tokens (hashed) and the
 * audit log. Nothing else to install. Synchronous: a method returning means the row is written.
 */
export type { RecordReason, RecordStatus, RunStatus, RunTrigger } from '../protocol/views.js'

export const TERMINAL_RECORD: ReadonlySet<RecordStatus> = new Set(terminalRecordStatuses)

export interface AgentRow {
  id: string
  hostname: string
  labels: Record<string, string>
  version: string
  capabilities: unknown
  targets: unknown[]
  enrolledAt: number
  lastSeen: number | null
}

export interface ExperimentRow {
  name: string
  spec: Experiment
  createdAt: number
  updatedAt: number
  updatedBy: string
}

export interface RunRow {
  id: string
  experiment: string
  spec: Experiment
  status: RunStatus
  trigger: RunTrigger
  startedBy: string
  startedAt: number
  endedAt: number | null
  deadlineAt: number
  abortRequestedAt: number | null
  abortedBy: string | null
  /** Hosts matched / chosen, and the mode, for the record of why these hosts. */
  selection: { matched: number; connected: number; chosen: number; mode: string }
}

export interface RecordRow {
  seq: number
  runId: string
  agentId: string
  requestId: string
  injectionId: string
  target: string
  targetKey: string
  status: RecordStatus
  reason: RecordReason
  error: { code: string; message: string } | null
  updatedAt: number
}

export interface EventRow {
  id: number
  at: number
  type: string
  agentId: string | null
  runId: string | null
  message: string
  data: unknown
}

export interface TokenRow {
  id: string
  name: string
  role: Role
  createdAt: number
  createdBy: string
  lastUsedAt: number | null
  /** When the token stops working (ms since the epoch); null: never. */
  expiresAt: number | null
}

export interface AuditRow {
  id: number
  at: number
  who: string
  role: string
  method: string
  route: string
  url: string
  status: number
  outcome: string
  source: string
}

const SCHEMA_VERSION = 3

const json = (v: unknown) => JSON.stringify(v)

function readFileIfAny(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

export class Store {
  readonly path: string
  readonly db: Database.Database
  readonly #s: ReturnType<Store['prepare']>
  readonly #onError: (err: Error) => void
  #turnOpen = false

  /** `onError`: a batched commit that failed (its writes are rolled back); default: throw. */
  constructor(stateDir: string, opts: { onError?: (err: Error) => void } = {}) {
    this.#onError =
      opts.onError ??
      ((err) => {
        throw err
      })
    mkdirSync(stateDir, { recursive: true, mode: 0o700 })
    this.path = join(stateDir, 'server.sqlite')
    this.db = new Database(this.path)
    // One server per state dir: the database stays exclusively locked for as long as this server
    // runs (SQLite's EXCLUSIVE locking mode), so a second one stops at once, naming the first.
    const pidFile = join(stateDir, 'server.pid')
    try {
      this.db.pragma('busy_timeout = 0')
      this.db.pragma('locking_mode = EXCLUSIVE')
      this.db.pragma('journal_mode = WAL')
      this.db.exec('BEGIN EXCLUSIVE; COMMIT;')
    } catch (err) {
      this.db.close()
      if ((err as { code?: string }).code !== 'SQLITE_BUSY') throw err
      const pid = Number(readFileIfAny(pidFile).trim()) || undefined
      throw new FaultlineError(
        'FAULTLINE_ERR_STATE_DIR_BUSY',
        `another server${pid ? ` (pid ${pid})` : ''} is running with the state dir ${stateDir}; stop it first, or give this one another --state-dir`,
        { stateDir, ...(pid ? { pid } : {}) },
      )
    }
    chmodSync(this.path, 0o600)
    writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o600 })
    // NORMAL is durable across a process crash in WAL mode; the agents' journals hold the truth
    // about what is on each host, so the server trades power-cut durability for write speed.
    this.db.pragma('synchronous = NORMAL')
    this.db.pragma('busy_timeout = 5000')
    this.db.pragma('foreign_keys = ON')
    this.migrate()
    // Found by agent and injection on every answer: without it, each lookup walks every record
    // the agent ever had (records_request leads with agent_id only). Not a schema change.
    this.db.exec('CREATE INDEX IF NOT EXISTS records_injection ON records(agent_id, injection_id)')
    this.#s = this.prepare()
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number
    if (version > SCHEMA_VERSION) {
      throw new Error(`server database ${this.path} has schema version ${version}, newer than this server understands (${SCHEMA_VERSION}); upgrade the server`)
    }
    if (version < 1) {
      this.db.exec(`
        CREATE TABLE agents (
          id           TEXT PRIMARY KEY,
          secret_hash  TEXT NOT NULL,
          hostname     TEXT NOT NULL DEFAULT '',
          labels       TEXT NOT NULL DEFAULT '{}',
          version      TEXT NOT NULL DEFAULT '',
          capabilities TEXT,
          targets      TEXT NOT NULL DEFAULT '[]',
          enrolled_at  INTEGER NOT NULL,
          last_seen    INTEGER
        );
        CREATE TABLE experiments (
          name       TEXT PRIMARY KEY,
          spec       TEXT NOT NULL,
          created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL,
          updated_by TEXT NOT NULL
        );
        CREATE TABLE runs (
          id                 TEXT PRIMARY KEY,
          experiment         TEXT NOT NULL,
          spec               TEXT NOT NULL,
          status             TEXT NOT NULL,
          trigger            TEXT NOT NULL,
          started_by         TEXT NOT NULL,
          started_at         INTEGER NOT NULL,
          ended_at           INTEGER,
          deadline_at        INTEGER NOT NULL,
          abort_requested_at INTEGER,
          aborted_by         TEXT,
          selection          TEXT NOT NULL
        );
        CREATE INDEX runs_experiment ON runs(experiment, started_at);
        CREATE INDEX runs_open ON runs(status) WHERE status IN ('pending', 'running');
        CREATE TABLE records (
          seq          INTEGER PRIMARY KEY AUTOINCREMENT,
          run_id       TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          agent_id     TEXT NOT NULL,
          request_id   TEXT NOT NULL,
          injection_id TEXT NOT NULL DEFAULT '',
          target       TEXT NOT NULL DEFAULT '',
          target_key   TEXT NOT NULL DEFAULT '',
          status       TEXT NOT NULL,
          reason       TEXT NOT NULL DEFAULT '',
          error        TEXT,
          updated_at   INTEGER NOT NULL,
          UNIQUE (run_id, agent_id, injection_id)
        );
        CREATE INDEX records_request ON records(agent_id, request_id);
        CREATE TABLE events (
          id       INTEGER PRIMARY KEY AUTOINCREMENT,
          at       INTEGER NOT NULL,
          type     TEXT NOT NULL,
          agent_id TEXT,
          run_id   TEXT,
          message  TEXT NOT NULL,
          data     TEXT
        );
        CREATE TABLE tokens (
          id           TEXT PRIMARY KEY,
          name         TEXT NOT NULL,
          role         TEXT NOT NULL,
          hash         TEXT NOT NULL UNIQUE,
          created_at   INTEGER NOT NULL,
          created_by   TEXT NOT NULL,
          last_used_at INTEGER
        );
        CREATE TABLE audit (
          id      INTEGER PRIMARY KEY AUTOINCREMENT,
          at      INTEGER NOT NULL,
          who     TEXT NOT NULL,
          role    TEXT NOT NULL,
          method  TEXT NOT NULL,
          route   TEXT NOT NULL,
          url     TEXT NOT NULL,
          status  INTEGER NOT NULL,
          outcome TEXT NOT NULL,
          source  TEXT NOT NULL
        );
        PRAGMA user_version = 1;
      `)
    }
    if (version < 2) {
      // Removal holds: the name an agent enrolled under stays refused until an admin re-admits it.
      this.db.exec(`
        ALTER TABLE agents ADD COLUMN enrol_name TEXT NOT NULL DEFAULT '';
        CREATE TABLE removed_agents (
          name       TEXT PRIMARY KEY,
          agent_id   TEXT NOT NULL,
          removed_at INTEGER NOT NULL,
          removed_by TEXT NOT NULL
        );
        PRAGMA user_version = 2;
      `)
    }
    if (version < 3) {
      // Tokens that expire; existing tokens keep working (NULL: never expires).
      this.db.exec(`
        ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
        CREATE INDEX events_run ON events(run_id, id) WHERE run_id IS NOT NULL;
        CREATE INDEX events_agent ON events(agent_id, id) WHERE agent_id IS NOT NULL;
        PRAGMA user_version = 3;
      `)
    }
  }

  private prepare() {
    const db = this.db
    return {
      agentGet: db.prepare('SELECT * FROM agents WHERE id = ?'),
      agentAll: db.prepare('SELECT * FROM agents ORDER BY id'),
      agentBriefAll: db.prepare('SELECT id, hostname, labels FROM agents ORDER BY id'),
      agentInsert: db.prepare('INSERT INTO agents (id, secret_hash, hostname, enrol_name, enrolled_at) VALUES (?, ?, ?, ?, ?)'),
      removedGet: db.prepare('SELECT * FROM removed_agents WHERE name = ?'),
      removedAll: db.prepare('SELECT * FROM removed_agents ORDER BY name'),
      removedInsert: db.prepare('INSERT OR REPLACE INTO removed_agents (name, agent_id, removed_at, removed_by) VALUES (?, ?, ?, ?)'),
      removedDelete: db.prepare('DELETE FROM removed_agents WHERE name = ?'),
      agentHello: db.prepare('UPDATE agents SET hostname = ?, labels = ?, version = ?, capabilities = ?, targets = ?, last_seen = ? WHERE id = ?'),
      agentSeen: db.prepare('UPDATE agents SET last_seen = ? WHERE id = ?'),
      agentDelete: db.prepare('DELETE FROM agents WHERE id = ?'),
      expGet: db.prepare('SELECT * FROM experiments WHERE name = ?'),
      expAll: db.prepare('SELECT * FROM experiments ORDER BY name'),
      expUpsert: db.prepare(`
        INSERT INTO experiments (name, spec, created_at, updated_at, updated_by) VALUES (@name, @spec, @now, @now, @who)
        ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at, updated_by = excluded.updated_by`),
      expDelete: db.prepare('DELETE FROM experiments WHERE name = ?'),
      runInsert: db.prepare(`
        INSERT INTO runs (id, experiment, spec, status, trigger, started_by, started_at, deadline_at, selection)
        VALUES (@id, @experiment, @spec, @status, @trigger, @startedBy, @startedAt, @deadlineAt, @selection)`),
      runGet: db.prepare('SELECT * FROM runs WHERE id = ?'),
      runList: db.prepare('SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?'),
      runListByExp: db.prepare('SELECT * FROM runs WHERE experiment = ? ORDER BY started_at DESC, rowid DESC LIMIT ?'),
      runOpen: db.prepare("SELECT * FROM runs WHERE status IN ('pending', 'running') ORDER BY started_at"),
      runOpenByExp: db.prepare("SELECT * FROM runs WHERE experiment = ? AND status IN ('pending', 'running')"),
      runEnd: db.prepare('UPDATE runs SET status = ?, ended_at = ? WHERE id = ?'),
      runAbort: db.prepare('UPDATE runs SET abort_requested_at = ?, aborted_by = ?, deadline_at = MIN(deadline_at, ?) WHERE id = ? AND abort_requested_at IS NULL'),
      recInsert: db.prepare(`
        INSERT INTO records (run_id, agent_id, request_id, injection_id, target, target_key, status, reason, error, updated_at)
        VALUES (@runId, @agentId, @requestId, @injectionId, @target, @targetKey, @status, @reason, @error, @updatedAt)
        ON CONFLICT(run_id, agent_id, injection_id) DO UPDATE SET target = excluded.target, target_key = excluded.target_key,
          status = excluded.status, reason = excluded.reason, error = excluded.error, updated_at = excluded.updated_at`),
      recByRun: db.prepare('SELECT * FROM records WHERE run_id = ? ORDER BY agent_id, seq'),
      begin: db.prepare('BEGIN'),
      commit: db.prepare('COMMIT'),
      runState: db.prepare('SELECT status, abort_requested_at FROM runs WHERE id = ?'),
      recOpenCount: db.prepare("SELECT count(*) AS n FROM records WHERE run_id = ? AND status IN ('sent', 'active')"),
      recByRequest: db.prepare('SELECT * FROM records WHERE agent_id = ? AND request_id = ? ORDER BY seq'),
      recByInjection: db.prepare('SELECT * FROM records WHERE agent_id = ? AND injection_id = ?'),
      recFillPlaceholder: db.prepare(`
        UPDATE OR IGNORE records SET run_id = @runId, injection_id = @injectionId, target = @target, target_key = @targetKey, status = @status,
          reason = @reason, error = @error, updated_at = @updatedAt
        WHERE agent_id = @agentId AND request_id = @requestId AND injection_id = ''`),
      recPlaceholderDelete: db.prepare("DELETE FROM records WHERE agent_id = ? AND request_id = ? AND injection_id = ''"),
      recOpenByAgent: db.prepare(`
        SELECT records.* FROM records JOIN runs ON runs.id = records.run_id
        WHERE records.agent_id = ? AND records.status IN ('sent', 'active') ORDER BY records.seq`),
      recSetStatus: db.prepare('UPDATE records SET status = ?, reason = ?, error = ?, updated_at = ? WHERE seq = ?'),
      recUpdate: db.prepare('UPDATE records SET target = @target, target_key = @targetKey, status = @status, reason = @reason, error = @error, updated_at = @updatedAt WHERE seq = @seq'),
      eventInsert: db.prepare('INSERT INTO events (at, type, agent_id, run_id, message, data) VALUES (?, ?, ?, ?, ?, ?)'),
      eventList: db.prepare('SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?'),
      eventLatest: db.prepare('SELECT * FROM (SELECT * FROM events ORDER BY id DESC LIMIT ?) ORDER BY id'),
      tokenInsert: db.prepare('INSERT INTO tokens (id, name, role, hash, created_at, created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      tokenGet: db.prepare('SELECT * FROM tokens WHERE id = ?'),
      tokenByHash: db.prepare('SELECT * FROM tokens WHERE hash = ?'),
      tokenAll: db.prepare('SELECT * FROM tokens ORDER BY created_at, id'),
      tokenDelete: db.prepare('DELETE FROM tokens WHERE id = ?'),
      tokenUsed: db.prepare('UPDATE tokens SET last_used_at = ? WHERE id = ?'),
      auditInsert: db.prepare('INSERT INTO audit (at, who, role, method, route, url, status, outcome, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'),
      eventMaxId: db.prepare('SELECT COALESCE(MAX(id), 0) AS id FROM events'),
      auditMaxId: db.prepare('SELECT COALESCE(MAX(id), 0) AS id FROM audit'),
      auditAfter: db.prepare('SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT ?'),
      agentCount: db.prepare('SELECT count(*) AS n FROM agents'),
      runCounts: db.prepare('SELECT status, count(*) AS n FROM runs GROUP BY status'),
      recordCounts: db.prepare('SELECT status, count(*) AS n FROM records GROUP BY status'),
      recOpenWithRun: db.prepare(`
        SELECT records.agent_id, records.run_id, records.injection_id, records.target, records.status, runs.experiment,
               json_extract(runs.spec, '$.fault.kind') AS kind
        FROM records JOIN runs ON runs.id = records.run_id
        WHERE records.status IN ('sent', 'active') ORDER BY records.seq`),
    }
  }

  // ---- agents ------------------------------------------------------------------------------

  getAgent(id: string): AgentRow | undefined {
    const r = this.#s.agentGet.get(id) as RawAgent | undefined
    return r && decodeAgent(r)
  }

  agentSecretHash(id: string): string | undefined {
    return (this.#s.agentGet.get(id) as RawAgent | undefined)?.secret_hash
  }

  agents(): AgentRow[] {
    return (this.#s.agentAll.all() as RawAgent[]).map(decodeAgent)
  }

  /** Every agent's id, hostname and labels: what choosing hosts needs, without the inventories. */
  agentsBrief(): Pick<AgentRow, 'id' | 'hostname' | 'labels'>[] {
    return (this.#s.agentBriefAll.all() as Pick<RawAgent, 'id' | 'hostname' | 'labels'>[]).map((r) => ({ id: r.id, hostname: r.hostname, labels: JSON.parse(r.labels) as Record<string, string> }))
  }

  /** `name` is the one the agent asked to enrol under (its --name, default its hostname). */
  insertAgent(id: string, secret: string, name: string): void {
    this.#s.agentInsert.run(id, hashSecret(secret), name, name, Date.now())
  }

  recordHello(id: string, hello: { hostname: string; labels: Record<string, string>; version: string; capabilities: unknown; targets: unknown[] }): void {
    this.#s.agentHello.run(hello.hostname, json(hello.labels), hello.version, json(hello.capabilities), json(hello.targets), Date.now(), id)
  }

  agentSeen(id: string, at = Date.now()): void {
    this.#s.agentSeen.run(at, id)
  }

  /**
   * Forgets an agent and refuses its enrolment name (and its id) from now on: the enrolment token
   * it always carries no longer brings it back. Returns the names now refused, or undefined when
   * there is no such agent.
   */
  removeAgent(id: string, by: string): string[] | undefined {
    const row = this.#s.agentGet.get(id) as RawAgent | undefined
    if (!row) return undefined
    const names = [...new Set([row.enrol_name || id, id])]
    this.db.transaction(() => {
      this.#s.agentDelete.run(id)
      for (const name of names) this.#s.removedInsert.run(name, id, Date.now(), by)
    })()
    return names
  }

  /** Why an enrolment under `name` is refused: an admin removed an agent of that name. */
  removedAgent(name: string): RemovedAgentRow | undefined {
    const r = this.#s.removedGet.get(name) as RawRemoved | undefined
    return r && { name: r.name, agentId: r.agent_id, removedAt: r.removed_at, removedBy: r.removed_by }
  }

  removedAgents(): RemovedAgentRow[] {
    return (this.#s.removedAll.all() as RawRemoved[]).map((r) => ({ name: r.name, agentId: r.agent_id, removedAt: r.removed_at, removedBy: r.removed_by }))
  }

  /** Lets an agent of this name (or of this agent id) enrol again. Returns the names admitted. */
  admitAgent(name: string): string[] {
    const refused = this.removedAgents().filter((r) => r.name === name || r.agentId === name)
    for (const r of refused) this.#s.removedDelete.run(r.name)
    return refused.map((r) => r.name)
  }

  // ---- experiments -------------------------------------------------------------------------

  getExperiment(name: string): ExperimentRow | undefined {
    const r = this.#s.expGet.get(name) as RawExperiment | undefined
    return r && decodeExperiment(r)
  }

  experiments(): ExperimentRow[] {
    return (this.#s.expAll.all() as RawExperiment[]).map(decodeExperiment)
  }

  /** Returns true when the experiment is new. */
  putExperiment(spec: Experiment, who: string): boolean {
    const existed = this.#s.expGet.get(spec.name) !== undefined
    this.#s.expUpsert.run({ name: spec.name, spec: json(spec), now: Date.now(), who })
    return !existed
  }

  deleteExperiment(name: string): boolean {
    return this.#s.expDelete.run(name).changes > 0
  }

  // ---- runs and records --------------------------------------------------------------------

  insertRun(run: Omit<RunRow, 'endedAt' | 'abortRequestedAt' | 'abortedBy'>, records: Omit<RecordRow, 'seq'>[]): void {
    this.db.transaction(() => {
      this.#s.runInsert.run({ ...run, spec: json(run.spec), selection: json(run.selection) })
      for (const r of records) this.#insertRecord(r)
    })()
  }

  getRun(id: string): RunRow | undefined {
    const r = this.#s.runGet.get(id) as RawRun | undefined
    return r && decodeRun(r)
  }

  /** A run's status and whether an abort was asked for, without decoding its spec: for every answer. */
  runState(id: string): { status: RunStatus; abortRequested: boolean } | undefined {
    const r = this.#s.runState.get(id) as { status: RunStatus; abort_requested_at: number | null } | undefined
    return r && { status: r.status, abortRequested: r.abort_requested_at !== null }
  }

  /**
   * Runs, newest first (by start, then insertion). `status`: open (pending, running) or finished
   * (the others); `before`: only runs that come after this run id in that order (paging).
   */
  runs(limit: number, experiment?: string, filter: { status?: 'open' | 'finished'; before?: RunRow } = {}): RunRow[] {
    if (filter.status === undefined && filter.before === undefined) {
      const raws = experiment ? this.#s.runListByExp.all(experiment, limit) : this.#s.runList.all(limit)
      return (raws as RawRun[]).map(decodeRun)
    }
    const where: string[] = []
    if (experiment !== undefined) where.push('experiment = @experiment')
    if (filter.status === 'open') where.push("status IN ('pending', 'running')")
    if (filter.status === 'finished') where.push("status NOT IN ('pending', 'running')")
    if (filter.before !== undefined) where.push('(started_at < @beforeAt OR (started_at = @beforeAt AND rowid < (SELECT rowid FROM runs WHERE id = @beforeId)))')
    const sql = `SELECT * FROM runs ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY started_at DESC, rowid DESC LIMIT @limit`
    const params = { experiment, limit, beforeAt: filter.before?.startedAt, beforeId: filter.before?.id }
    return (this.#cached(sql).all(params) as RawRun[]).map(decodeRun)
  }

  openRuns(experiment?: string): RunRow[] {
    const raws = experiment ? this.#s.runOpenByExp.all(experiment) : this.#s.runOpen.all()
    return (raws as RawRun[]).map(decodeRun)
  }

  endRun(id: string, status: RunStatus): void {
    this.#s.runEnd.run(status, Date.now(), id)
  }

  /** Marks the abort (once); the run's deadline is brought forward to `deadlineAt`. */
  requestAbort(id: string, who: string, deadlineAt: number): boolean {
    return this.#s.runAbort.run(Date.now(), who, deadlineAt, id).changes > 0
  }

  records(runId: string): RecordRow[] {
    return (this.#s.recByRun.all(runId) as RawRecord[]).map(decodeRecord)
  }

  /** How many records of the run are still under way (sent or active): cheap, for every update. */
  openRecordCount(runId: string): number {
    return (this.#s.recOpenCount.get(runId) as { n: number }).n
  }

  recordsOfRequest(agentId: string, requestId: string): RecordRow[] {
    return (this.#s.recByRequest.all(agentId, requestId) as RawRecord[]).map(decodeRecord)
  }

  recordOfInjection(agentId: string, injectionId: string): RecordRow | undefined {
    const r = this.#s.recByInjection.get(agentId, injectionId) as RawRecord | undefined
    return r && decodeRecord(r)
  }

  /** Records of this agent that the server believes are still under way (sent or active). */
  openRecordsOfAgent(agentId: string): RecordRow[] {
    return (this.#s.recOpenByAgent.all(agentId) as RawRecord[]).map(decodeRecord)
  }

  /**
   * Writes what an agent said about one injection of a request: the placeholder written when
   * the inject was sent (no injection id yet) gives way to one record per concrete target.
   */
  upsertRecord(r: Omit<RecordRow, 'seq'>): void {
    // The common case, one statement: the placeholder becomes the record of its first target.
    if (r.injectionId !== '' && this.#s.recFillPlaceholder.run({ ...r, error: r.error ? json(r.error) : null }).changes > 0) return
    this.db.transaction(() => {
      if (r.injectionId !== '') this.#s.recPlaceholderDelete.run(r.agentId, r.requestId)
      this.#insertRecord(r)
    })()
  }

  /**
   * Writes what an agent said about an injection whose record exists already (same run, agent,
   * request and injection): what upsertRecord ends in for it, as one UPDATE of that row.
   */
  updateRecord(seq: number, r: Pick<RecordRow, 'target' | 'targetKey' | 'status' | 'reason' | 'error' | 'updatedAt'>): void {
    this.#s.recUpdate.run({ seq, target: r.target, targetKey: r.targetKey, status: r.status, reason: r.reason, error: r.error ? json(r.error) : null, updatedAt: r.updatedAt })
  }

  setRecordStatus(seq: number, status: RecordStatus, reason: RecordReason, error: { code: string; message: string } | null): void {
    this.#s.recSetStatus.run(status, reason, error ? json(error) : null, Date.now(), seq)
  }

  #insertRecord(r: Omit<RecordRow, 'seq'>): void {
    this.#s.recInsert.run({ ...r, error: r.error ? json(r.error) : null })
  }

  // ---- events, tokens, audit ----------------------------------------------------------------

  addEvent(type: string, message: string, refs: { agentId?: string; runId?: string; data?: unknown } = {}): EventRow {
    const at = Date.now()
    const info = this.#s.eventInsert.run(at, type, refs.agentId ?? null, refs.runId ?? null, message, refs.data === undefined ? null : json(refs.data))
    return { id: Number(info.lastInsertRowid), at, type, agentId: refs.agentId ?? null, runId: refs.runId ?? null, message, data: refs.data ?? null }
  }

  /**
   * Events after `afterId` (oldest first), or the latest `limit` when afterId is undefined;
   * only those of a run, of an agent, or whose type starts with `typePrefix` when given.
   */
  events(afterId: number | undefined, limit: number, filter: EventFilter = {}): EventRow[] {
    let raws: unknown[]
    if (filter.runId === undefined && filter.agentId === undefined && filter.typePrefix === undefined && filter.withoutTypePrefix === undefined) {
      raws = afterId === undefined ? this.#s.eventLatest.all(limit) : this.#s.eventList.all(afterId, limit)
    } else {
      const where = ['id > @after']
      if (filter.runId !== undefined) where.push('run_id = @runId')
      if (filter.agentId !== undefined) where.push('agent_id = @agentId')
      if (filter.typePrefix !== undefined) where.push('substr(type, 1, @prefixLength) = @typePrefix')
      if (filter.withoutTypePrefix !== undefined) where.push('substr(type, 1, @withoutLength) <> @withoutTypePrefix')
      const params = {
        after: afterId ?? 0,
        limit,
        runId: filter.runId,
        agentId: filter.agentId,
        typePrefix: filter.typePrefix,
        prefixLength: filter.typePrefix?.length ?? 0,
        withoutTypePrefix: filter.withoutTypePrefix,
        withoutLength: filter.withoutTypePrefix?.length ?? 0,
      }
      const select = `SELECT * FROM events WHERE ${where.join(' AND ')}`
      const sql = afterId === undefined ? `SELECT * FROM (${select} ORDER BY id DESC LIMIT @limit) ORDER BY id` : `${select} ORDER BY id LIMIT @limit`
      raws = this.#cached(sql).all(params)
    }
    return (raws as RawEvent[]).map(decodeEvent)
  }

  /** The largest event id and audit id so far (0 when none): where a live stream starts. */
  lastIds(): { eventId: number; auditId: number } {
    return { eventId: (this.#s.eventMaxId.get() as { id: number }).id, auditId: (this.#s.auditMaxId.get() as { id: number }).id }
  }

  readonly #statements = new Map<string, Database.Statement>()
  /** Statements built from a fixed set of optional filters: prepared once per combination. */
  #cached(sql: string): Database.Statement {
    let statement = this.#statements.get(sql)
    if (!statement) this.#statements.set(sql, (statement = this.db.prepare(sql)))
    return statement
  }

  insertToken(id: string, name: string, role: Role, secret: string, createdBy: string, expiresAt: number | null = null): TokenRow {
    const createdAt = Date.now()
    this.#s.tokenInsert.run(id, name, role, hashSecret(secret), createdAt, createdBy, expiresAt)
    return { id, name, role, createdAt, createdBy, lastUsedAt: null, expiresAt }
  }

  getToken(id: string): TokenRow | undefined {
    const r = this.#s.tokenGet.get(id) as RawToken | undefined
    return r && decodeToken(r)
  }

  /** The token whose secret hashes to this; lookups go by hash, so no secret is ever compared. */
  tokenBySecret(secret: string): TokenRow | undefined {
    const r = this.#s.tokenByHash.get(hashSecret(secret)) as RawToken | undefined
    return r && decodeToken(r)
  }

  tokens(): TokenRow[] {
    return (this.#s.tokenAll.all() as RawToken[]).map(decodeToken)
  }

  deleteToken(id: string): boolean {
    return this.#s.tokenDelete.run(id).changes > 0
  }

  tokenUsed(id: string): void {
    this.#s.tokenUsed.run(Date.now(), id)
  }

  /** Writes an audit row; the server hands it on to live listeners (see ServerContext.audit). */
  audit(entry: Omit<AuditRow, 'id' | 'at'>): AuditRow {
    const at = Date.now()
    const info = this.#s.auditInsert.run(at, entry.who, entry.role, entry.method, entry.route, entry.url, entry.status, entry.outcome, entry.source)
    return { id: Number(info.lastInsertRowid), at, ...entry }
  }

  /**
   * The audit log. Oldest first: rows after `after` (the newest `limit` of them when `after` is
   * not given, as before); newest first (`order: 'desc'`): rows before `before` (default: the
   * newest). Filters: `who` (substring), `outcome`, `method`.
   */
  auditLog(query: AuditQuery): AuditRow[] {
    const where: string[] = []
    if (query.who !== undefined) where.push('instr(who, @who) > 0')
    if (query.outcome !== undefined) where.push('outcome = @outcome')
    if (query.method !== undefined) where.push('method = @method')
    let sql: string
    if (query.order === 'desc') {
      if (query.before !== undefined) where.push('id < @before')
      sql = `SELECT * FROM audit ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT @limit`
    } else {
      where.push('id > @after')
      sql = `SELECT * FROM (SELECT * FROM audit WHERE ${where.join(' AND ')} ORDER BY id DESC LIMIT @limit) ORDER BY id`
    }
    const params = { who: query.who, outcome: query.outcome, method: query.method, before: query.before, after: query.after ?? 0, limit: query.limit }
    return this.#cached(sql).all(params) as AuditRow[]
  }

  /** Audit rows after `afterId`, oldest first (the event stream's backlog). */
  auditAfter(afterId: number, limit: number): AuditRow[] {
    return this.#s.auditAfter.all(afterId, limit) as AuditRow[]
  }

  // ---- counts (metrics) ---------------------------------------------------------------------

  agentCount(): number {
    return (this.#s.agentCount.get() as { n: number }).n
  }

  runCounts(): Map<string, number> {
    return new Map((this.#s.runCounts.all() as { status: string; n: number }[]).map((r) => [r.status, r.n]))
  }

  recordCounts(): Map<string, number> {
    return new Map((this.#s.recordCounts.all() as { status: string; n: number }[]).map((r) => [r.status, r.n]))
  }

  /** Every open record (sent or active) with its run's experiment and fault kind, by agent. */
  openRecordsByAgent(): Map<string, OpenRecord[]> {
    const byAgent = new Map<string, OpenRecord[]>()
    for (const r of this.#s.recOpenWithRun.all() as RawOpenRecord[]) {
      const list = byAgent.get(r.agent_id) ?? []
      list.push({ runId: r.run_id, experiment: r.experiment, injectionId: r.injection_id, kind: String(r.kind ?? ''), target: r.target, status: r.status as 'sent' | 'active' })
      byAgent.set(r.agent_id, list)
    }
    return byAgent
  }

  /**
   * Joins the writes of this event-loop turn into one transaction, committed by setImmediate
   * (or by flush(), before an HTTP answer goes out). The link calls it for every agent message:
   * a thousand answers arriving together become one commit instead of a thousand (see
   * docs/benchmarks.md, server fan-out). Reads on this connection see the uncommitted rows. A
   * crash may lose the last turn's link writes; the agents' reconnect (outbox, hello.open and
   * the sync that follows) brings them back, and their journals hold the truth anyway.
   */
  batchTurn(): void {
    if (this.#turnOpen || !this.db.open || this.db.inTransaction) return
    this.#s.begin.run()
    this.#turnOpen = true
    setImmediate(() => this.flush())
  }

  /** Commits the writes batched so far (no-op when none are). */
  flush(): void {
    if (!this.#turnOpen) return
    this.#turnOpen = false
    if (!this.db.open || !this.db.inTransaction) return
    try {
      this.#s.commit.run()
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK')
      this.#onError(err as Error)
    }
  }

  close(): void {
    this.flush()
    if (this.db.open) this.db.close()
  }
}

export interface EventFilter {
  runId?: string
  agentId?: string
  /** e.g. "record." */
  typePrefix?: string
  /** Leave out events whose type starts with this (e.g. "token." for those below admin). */
  withoutTypePrefix?: string
}

export interface AuditQuery {
  after?: number
  before?: number
  order?: 'asc' | 'desc'
  limit: number
  who?: string
  outcome?: string
  method?: string
}

export interface OpenRecord {
  runId: string
  experiment: string
  injectionId: string
  kind: string
  target: string
  status: 'sent' | 'active'
}
interface RawOpenRecord {
  agent_id: string
  run_id: string
  injection_id: string
  target: string
  status: string
  experiment: string
  kind: string | null
}

export interface RemovedAgentRow {
  name: string
  agentId: string
  removedAt: number
  removedBy: string
}
interface RawRemoved {
  name: string
  agent_id: string
  removed_at: number
  removed_by: string
}
interface RawAgent {
  id: string
  secret_hash: string
  enrol_name: string
  hostname: string
  labels: string
  version: string
  capabilities: string | null
  targets: string
  enrolled_at: number
  last_seen: number | null
}
interface RawExperiment {
  name: string
  spec: string
  created_at: number
  updated_at: number
  updated_by: string
}
interface RawRun {
  id: string
  experiment: string
  spec: string
  status: RunStatus
  trigger: RunTrigger
  started_by: string
  started_at: number
  ended_at: number | null
  deadline_at: number
  abort_requested_at: number | null
  aborted_by: string | null
  selection: string
}
interface RawRecord {
  seq: number
  run_id: string
  agent_id: string
  request_id: string
  injection_id: string
  target: string
  target_key: string
  status: RecordStatus
  reason: RecordReason
  error: string | null
  updated_at: number
}
interface RawEvent {
  id: number
  at: number
  type: string
  agent_id: string | null
  run_id: string | null
  message: string
  data: string | null
}
interface RawToken {
  id: string
  name: string
  role: Role
  created_at: number
  created_by: string
  last_used_at: number | null
  expires_at: number | null
}

function decodeAgent(r: RawAgent): AgentRow {
  return {
    id: r.id,
    hostname: r.hostname,
    labels: JSON.parse(r.labels) as Record<string, string>,
    version: r.version,
    capabilities: r.capabilities === null ? null : JSON.parse(r.capabilities),
    targets: JSON.parse(r.targets) as unknown[],
    enrolledAt: r.enrolled_at,
    lastSeen: r.last_seen,
  }
}

function decodeExperiment(r: RawExperiment): ExperimentRow {
  return { name: r.name, spec: JSON.parse(r.spec) as Experiment, createdAt: r.created_at, updatedAt: r.updated_at, updatedBy: r.updated_by }
}

function decodeRun(r: RawRun): RunRow {
  return {
    id: r.id,
    experiment: r.experiment,
    spec: JSON.parse(r.spec) as Experiment,
    status: r.status,
    trigger: r.trigger,
    startedBy: r.started_by,
    startedAt: r.started_at,
    endedAt: r.ended_at,
    deadlineAt: r.deadline_at,
    abortRequestedAt: r.abort_requested_at,
    abortedBy: r.aborted_by,
    selection: JSON.parse(r.selection) as RunRow['selection'],
  }
}

function decodeRecord(r: RawRecord): RecordRow {
  return {
    seq: r.seq,
    runId: r.run_id,
    agentId: r.agent_id,
    requestId: r.request_id,
    injectionId: r.injection_id,
    target: r.target,
    targetKey: r.target_key,
    status: r.status,
    reason: r.reason,
    error: r.error === null ? null : (JSON.parse(r.error) as { code: string; message: string }),
    updatedAt: r.updated_at,
  }
}

function decodeToken(r: RawToken): TokenRow {
  return { id: r.id, name: r.name, role: r.role, createdAt: r.created_at, createdBy: r.created_by, lastUsedAt: r.last_used_at, expiresAt: r.expires_at ?? null }
}

function decodeEvent(r: RawEvent): EventRow {
  return { id: r.id, at: r.at, type: r.type, agentId: r.agent_id, runId: r.run_id, message: r.message, data: r.data === null ? null : JSON.parse(r.data) }
}
