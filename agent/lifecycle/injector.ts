import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { realpathSync } from 'node:fs'
import type { Logger } from 'pino'
import { stringify as stableStringify } from 'safe-stable-stringify'
import type { Capabilities, FeatureMap } from '../../protocol/capabilities.js'
import { formatDuration, parseDuration } from '../../protocol/duration.js'
import { FaultlineError, isFaultlineError, type ErrorCode } from '../../protocol/errors.js'
import { newId } from '../../protocol/id.js'
import type { Plan } from '../../protocol/plan.js'
import type { CreateInjectionBody, Injection, InjectionStatus, RecoverReason, UpdateReason } from '../../protocol/injection.js'
import { describeTarget, targetKey, type ResolvedTarget } from '../../protocol/target.js'
import { runnerFor, runnerNamed, sweeps, type KindRunner, type PlannedTarget } from '../faults/runner.js'
import type { ControlChannel, GatherContext } from '../faults/types.js'
import type { HostPaths } from '../host-paths.js'
import type { HostPolicyCheck } from '../policy.js'
import type { Journal, JournalRow, NewJournalRow } from '../journal/journal.js'
import type { AgentMetrics } from '../metrics.js'
import { resolveTarget } from '../targets/registry.js'
import type { TargetContext } from '../targets/types.js'
import { DeadlineScheduler } from './deadlines.js'
import { KeyedLock } from './keyed-lock.js'

export type { RecoverReason, UpdateReason } from '../../protocol/injection.js'

/** Who asked, for the journal and the logs (never used as a logger key). */
export interface Origin {
  who: string
  address?: string
  /** Set for injections the server asked for: the run they belong to. */
  runId?: string
  /** Bound to the server's lease: recovered by the agent itself when the lease lapses. */
  lease?: boolean
  /**
   * Set for injections asked for through the chaosd-compatible API (agent/chaosd): the
   * experiment's uid (also the request id), chaosd's kind and action, and the body as sent.
   * The journal is where GET /api/experiments and DELETE /api/attack/:uid find them.
   */
  chaosd?: ChaosdOrigin
}

export interface ChaosdOrigin {
  uid: string
  kind: string
  action: string
  body: unknown
}

export interface InjectorEvents {
  /** Every status change of a journaled injection, after the journal write. */
  update: [injection: Injection, reason: UpdateReason, origin: Origin | null]
}

export interface InjectorOptions {
  journal: Journal
  /** The agent's state dir: disk and file faults keep their backups under it (GatherContext.stateDir). */
  stateDir: string
  log: Logger
  paths: HostPaths
  targets: TargetContext
  metrics: AgentMetrics
  capabilities: () => Promise<Capabilities>
  maxDurationMs: number
  minDurationMs?: number
  /** What network faults must not cut (the API port is asked for when a fault is planned). */
  control: ControlChannel
  /** The host policy (--policy): what the host's owner allows, whoever asks. */
  policy?: HostPolicyCheck
}

export interface InjectorStats {
  /** Targets with work queued or running on the keyed lock. */
  lockedTargets: number
  /** Injections with a deadline (or a recovery retry) scheduled. */
  deadlines: number
  /** Injections whose recovery failed and is being retried. */
  retries: number
  /** Claims held by open injections (see PlanBase.claims). */
  claims: number
  /** Create requests still running. */
  inflight: number
  /** Journal commits since the agent started, and those of them fsynced. */
  journalCommits: number
  journalSyncedCommits: number
}

export interface CreateResult {
  /** false when an identical request with the same id had already been taken (idempotent replay). */
  created: boolean
  injections: Injection[]
}

/** A request that passed step 1: the kind that runs it and its duration. */
interface ValidRequest {
  body: CreateInjectionBody
  runner: KindRunner
  durationMs: number
  /** Identifies the request's fault, target and duration: the same id with another hash is 409. */
  requestHash: string
}

/** One target of a request after step 2: the journal row to write, and the apply of its plan. */
interface PlannedRow {
  row: NewJournalRow
  planned: PlannedTarget
}

/**
 * A selector may match one target unless the request says how many it means (maxTargets): a
 * loose name or regex must never freeze every matching process of the host by surprise.
 */
export const DEFAULT_MAX_TARGETS = 1

/** The shortest duration a request may ask for (tests lower it). */
export const DEFAULT_MIN_DURATION_MS = 1_000

const RETRY_BACKOFF_MS = [1_000, 5_000, 15_000, 60_000]

/**
 * Test hook: with FAULTLINE_CRASH_AT=<point> the agent kills itself with SIGKILL at that point,
 * which is how the crash-safety tests reach "between the journal write and the apply" and
 * "between the apply and the state write". Inert unless the variable is set.
 */
function crashPoint(point: 'after-journal' | 'after-apply'): void {
  if (process.env.FAULTLINE_CRASH_AT === point) process.kill(process.pid, 'SIGKILL')
}

/**
 * The injection lifecycle: write ahead, then act; reconcile at every start; every injection
 * carries its own deadline. Work on one concrete target is serialised by a keyed lock.
 */
export class Injector {
  readonly #journal: Journal
  readonly #log: Logger
  readonly #opts: InjectorOptions
  readonly #lock = new KeyedLock()
  readonly #deadlines: DeadlineScheduler
  readonly #retryAttempts = new Map<string, number>()
  readonly #inflight = new Set<Promise<unknown>>()
  /** claim -> id of the open injection holding it (see PlanBase.claims). */
  readonly #claims = new Map<string, string>()
  #closing = false
  /** Status changes, for the server link (agent/link): listeners must not throw. */
  readonly events = new EventEmitter<InjectorEvents>()

  constructor(opts: InjectorOptions) {
    this.#opts = opts
    this.#journal = opts.journal
    this.#log = opts.log
    this.#deadlines = new DeadlineScheduler((id) => {
      const reason: RecoverReason = this.#retryAttempts.has(id) ? 'retry' : 'deadline'
      this.recover(id, reason).catch((err) => this.#log.error({ err, injectionId: id }, 'scheduled recovery failed'))
    })
    for (const row of this.#journal.needingUndo()) for (const claim of this.#claimsOf(row)) this.#claims.set(claim, row.id)
  }

  get closing(): boolean {
    return this.#closing
  }

  /**
   * What the injector holds in memory per injection, and the journal's commits so far: each
   * structure is back to its starting size once nothing is open (test/agent/no-growth.test.ts),
   * and commits per inject/recover pair are what the journal costs (bench, docs/benchmarks.md).
   */
  get stats(): InjectorStats {
    return {
      lockedTargets: this.#lock.size,
      deadlines: this.#deadlines.size,
      retries: this.#retryAttempts.size,
      claims: this.#claims.size,
      inflight: this.#inflight.size,
      journalCommits: this.#journal.commits,
      journalSyncedCommits: this.#journal.syncedCommits,
    }
  }

  #claimsOf(row: { plan: Plan }): string[] {
    return row.plan.claims ?? []
  }

  #releaseClaims(id: string): void {
    for (const [claim, holder] of this.#claims) if (holder === id) this.#claims.delete(claim)
  }

  // ---- create: validate -> resolve and plan -> journal ahead -> apply (rolling back on failure) ----

  create(body: CreateInjectionBody, origin: Origin): Promise<CreateResult> {
    if (this.#closing) throw new FaultlineError('FAULTLINE_ERR_SHUTTING_DOWN', 'the agent is shutting down and recovering every injection; try again once it is back')
    const work = this.#create(body, origin)
    this.#inflight.add(work)
    const done = () => this.#inflight.delete(work)
    work.then(done, done)
    return work
  }

  async #create(body: CreateInjectionBody, origin: Origin): Promise<CreateResult> {
    const request = this.#validate(body)
    const replay = this.#replayOf(request)
    if (replay) return { created: false, injections: replay }
    const planned = await this.#resolveAndPlan(request, origin)
    if (body.dryRun) {
      this.#opts.metrics.injections.inc({ kind: request.runner.kind, outcome: 'dry_run' }, planned.length)
      return { created: true, injections: planned.map((p) => toInjection(draftRow(p.row), true)) }
    }
    const journaled = this.#journalAhead(request, planned, origin)
    if (journaled.replay) return { created: false, injections: journaled.replay }
    crashPoint('after-journal')
    return { created: true, injections: await this.#applyAll(planned) }
  }

  /**
   * Step 1, before anything looks at the host: the kind that will run (the body already matched
   * the schema of the kind it names), a duration within this agent's limits, what the host policy
   * says of the body, a target type the kind acts on.
   */
  #validate(body: CreateInjectionBody): ValidRequest {
    const runner = runnerFor(body.fault.kind)
    const durationMs = this.#checkDuration(body.duration)
    this.#opts.policy?.checkRequest(body, durationMs)
    if (!runner.targets.includes(body.target.type)) {
      throw new FaultlineError(
        'FAULTLINE_ERR_TARGET_UNSUPPORTED',
        `${runner.kind} acts on ${runner.targets.join(' or ')} targets, not on "${body.target.type}"`,
      )
    }
    return { body, runner, durationMs, requestHash: hashRequest(body) }
  }

  /** The injections of an earlier identical request with the client's id (409 if it differed). */
  #replayOf(request: ValidRequest): Injection[] | undefined {
    const { body } = request
    return body.id && !body.dryRun ? this.#replay(body.id, request.requestHash) : undefined
  }

  /**
   * Step 2: the host can do the kind; the selector resolves to at most maxTargets concrete
   * targets, each one the host policy allows and none already carrying an exclusive kind; each
   * target gets its id, facts and plan, and the journal row that will hold them.
   */
  async #resolveAndPlan(request: ValidRequest, origin: Origin): Promise<PlannedRow[]> {
    const { body, runner } = request
    const caps = await this.#opts.capabilities()
    const availability = caps.kinds[runner.kind]
    if (!availability?.available) {
      throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `${runner.kind} is not available on this host: ${availability?.reason ?? 'not probed'}`)
    }
    const targets = await resolveTarget(body.target, this.#opts.targets)
    this.#checkTargetCount(body, targets, origin)
    this.#opts.policy?.checkTargets(body, targets, this.#opts.paths)
    // An exclusive kind already on a target is a conflict (409), whatever state that fault has
    // put the target in; checked again right before the journal insert.
    if (runner.exclusive) for (const target of targets) this.#checkExclusive(runner.kind, target)

    const requestId = body.id ?? newId()
    const ids = targets.length === 1 ? [requestId] : targets.map((_, i) => `${requestId}-${i + 1}`)
    const gatherCtx: GatherContext = {
      paths: this.#opts.paths,
      features: caps.features as FeatureMap,
      control: this.#opts.control,
      stateDir: this.#opts.stateDir,
      openPlans: () => this.#journal.needingUndo().filter((r) => r.kind === runner.kind && r.status !== 'failed').map((r) => r.plan),
    }
    const now = Date.now()
    return Promise.all(
      targets.map(async (target, i) => {
        const id = ids[i]!
        const planned = await runner.plan(body.fault, target, { ...gatherCtx, injectionId: id })
        const row: NewJournalRow = {
          id,
          requestId,
          requestHash: request.requestHash,
          kind: runner.kind,
          fault: body.fault,
          target: body.target,
          resolved: target,
          targetKey: targetKey(target),
          plan: planned.plan,
          state: planned.undo,
          duration: body.duration,
          durationMs: request.durationMs,
          recoverable: runner.recoverable,
          createdAt: now,
          expiresAt: now + request.durationMs,
          origin,
        }
        return { row, planned }
      }),
    )
  }

  /**
   * Step 3, write ahead: the last checks and the insert of every row as 'pending' are one atomic
   * step for this single-threaded process (nothing awaits in between), so two racing requests
   * cannot both pass. From here on, whatever happens to the agent, recovery knows what to undo.
   */
  #journalAhead(request: ValidRequest, planned: PlannedRow[], origin: Origin): { replay?: Injection[] } {
    const { body, runner } = request
    if (body.id) {
      const replay = this.#replay(body.id, request.requestHash)
      if (replay) return { replay }
    }
    const rows = planned.map((p) => p.row)
    for (const r of rows) {
      const clash = this.#journal.get(r.id)
      if (clash) {
        throw new FaultlineError('FAULTLINE_ERR_ID_CONFLICT', `injection id "${r.id}" already belongs to request "${clash.requestId}"; choose another id`)
      }
      if (runner.exclusive) this.#checkExclusive(runner.kind, r.resolved)
    }
    const wanted = new Map<string, string>()
    for (const r of rows) {
      for (const claim of this.#claimsOf(r)) {
        const holder = this.#claims.get(claim) ?? wanted.get(claim)
        if (holder) {
          throw new FaultlineError(
            'FAULTLINE_ERR_TARGET_BUSY',
            `${describeTarget(r.resolved)}: ${claim} is already held by injection "${holder}"; recover it first`,
            { injectionIds: [holder], claim },
          )
        }
        wanted.set(claim, r.id)
      }
    }
    this.#journal.insertPending(rows)
    for (const [claim, id] of wanted) this.#claims.set(claim, id)
    this.#log.info({ requestId: rows[0]?.requestId, kind: runner.kind, targets: rows.map((r) => r.targetKey), who: origin.who }, 'injection journaled')
    return {}
  }

  /**
   * Step 4: applies target after target. All or nothing: when one fails, what the request
   * already applied is taken back (a target that vanished meanwhile is not a failure of the
   * others); a shutdown that begins half-way leaves the rest unapplied.
   */
  async #applyAll(planned: PlannedRow[]): Promise<Injection[]> {
    const rows = planned.map((p) => p.row)
    let fatal: unknown
    const gone: FaultlineError[] = []
    for (const { row, planned: target } of planned) {
      if (this.#closing || fatal !== undefined) {
        const [code, message, reason]: [ErrorCode, string, UpdateReason] = this.#closing
          ? ['FAULTLINE_ERR_SHUTTING_DOWN', 'not applied: the agent began shutting down', 'shutdown']
          : ['FAULTLINE_ERR_APPLY_FAILED', 'not applied: another target of the same request failed', 'rollback']
        this.#journal.markFailed(row.id, { code, message })
        this.#journal.markUndone(row.id)
        this.#releaseClaims(row.id)
        this.#changed(row.id, reason)
        continue
      }
      try {
        await this.#applyOne(row, target)
      } catch (err) {
        if (isFaultlineError(err) && err.code === 'FAULTLINE_ERR_TARGET_GONE') gone.push(err)
        else fatal = err
      }
    }

    if (fatal !== undefined) {
      await this.#rollBack(rows)
      const injections = rows.map((r) => this.get(r.id))
      if (isFaultlineError(fatal)) throw new FaultlineError(fatal.code, fatal.message, { injections })
      throw new FaultlineError('FAULTLINE_ERR_APPLY_FAILED', errorMessage(fatal), { injections })
    }
    if (gone.length === rows.length) {
      throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', gone[0]!.message, { injections: rows.map((r) => this.get(r.id)) })
    }
    for (const row of rows) {
      const current = this.#journal.head(row.id)
      if (current?.status === 'active') this.#deadlines.set(row.id, current.expiresAt)
    }
    return rows.map((r) => this.get(r.id))
  }

  /** Takes back what a failed request already applied to its other targets. */
  async #rollBack(rows: NewJournalRow[]): Promise<void> {
    for (const row of rows) {
      const current = this.#journal.get(row.id)
      if (!current?.needsUndo) continue
      if (current.status !== 'failed') {
        this.#journal.markFailed(row.id, { code: 'FAULTLINE_ERR_APPLY_FAILED', message: 'rolled back: another target of the same request failed' })
        this.#changed(row.id, 'rollback')
      }
      await this.#undo(row.id, 'rollback').catch(() => undefined)
    }
  }

  async #applyOne(row: NewJournalRow, target: PlannedTarget): Promise<void> {
    const log = this.#log.child({ injectionId: row.id, kind: row.kind, target: row.targetKey })
    await this.#lock.run(row.targetKey, async () => {
      // A halt or DELETE may have recovered this injection while earlier targets of the same
      // request were being applied: then it must not be applied at all.
      if (this.#journal.head(row.id)?.status !== 'pending') return
      this.#journal.markApplying(row.id)
      this.#changed(row.id, 'apply')
      const started = performance.now()
      try {
        const state = await target.apply({
          log,
          paths: this.#opts.paths,
          expiresAt: row.expiresAt,
          checkpoint: (s) => this.#journal.setState(row.id, s),
        })
        crashPoint('after-apply')
        this.#journal.markActive(row.id, state)
        this.#changed(row.id, 'apply')
        this.#opts.metrics.applySeconds.observe({ kind: row.kind }, (performance.now() - started) / 1000)
        this.#opts.metrics.injections.inc({ kind: row.kind, outcome: 'active' })
        log.info({ expiresAt: new Date(row.expiresAt).toISOString() }, 'injection active')
      } catch (err) {
        const failure = isFaultlineError(err)
          ? err
          : new FaultlineError('FAULTLINE_ERR_APPLY_FAILED', `${row.kind} on ${describeTarget(row.resolved)} failed: ${errorMessage(err)}; what was applied has been rolled back`)
        this.#journal.markFailed(row.id, { code: failure.code, message: failure.message })
        this.#changed(row.id, 'apply')
        this.#opts.metrics.injections.inc({ kind: row.kind, outcome: 'failed' })
        log.warn({ err }, 'apply failed; undoing whatever was partly applied')
        await this.#undoLocked(row.id, 'rollback').catch(() => undefined)
        throw failure
      }
    })
  }

  /**
   * More targets than the request's maxTargets (default 1) is refused with the list of what was
   * matched; so is a name or command-line selector that reaches processes of users other than
   * the caller, when the caller is a known non-root user on the agent's socket, unless the
   * request set maxTargets to mean it.
   */
  #checkTargetCount(body: CreateInjectionBody, targets: ResolvedTarget[], origin: Origin): void {
    const maxTargets = body.maxTargets ?? DEFAULT_MAX_TARGETS
    const listed = (list: ResolvedTarget[]) => `${list.slice(0, 10).map(describeTarget).join('; ')}${list.length > 10 ? `; and ${list.length - 10} more` : ''}`
    const details = (list: ResolvedTarget[]) => ({ matched: targets.length, maxTargets, targets: list.slice(0, 100).map(describeTarget) })
    if (targets.length > maxTargets) {
      throw new FaultlineError(
        'FAULTLINE_ERR_TOO_MANY_TARGETS',
        `the target selector matched ${targets.length} targets, more than maxTargets ${maxTargets}: ${listed(targets)}. Name one (e.g. process:PID), or set maxTargets to ${targets.length} (faultline inject --all) to fault them all`,
        details(targets),
      )
    }
    const caller = /^unix:uid=([0-9]+)$/.exec(origin.who)
    if (body.maxTargets === undefined && caller && caller[1] !== '0' && body.target.type === 'process' && !('pid' in body.target)) {
      const others = targets.filter((t) => t.type === 'process' && t.uid !== undefined && t.uid !== Number(caller[1]))
      if (others.length > 0) {
        throw new FaultlineError(
          'FAULTLINE_ERR_TOO_MANY_TARGETS',
          `the target selector matched processes of other users: ${listed(others)}. Name the process by pid, or set maxTargets (faultline inject --all) to mean it`,
          details(others),
        )
      }
    }
  }

  #checkDuration(text: string): number {
    const durationMs = parseDuration(text)
    const min = this.#opts.minDurationMs ?? DEFAULT_MIN_DURATION_MS
    const allowed = `${formatDuration(min)} to ${formatDuration(this.#opts.maxDurationMs)} (this agent's --max-duration)`
    const refuse = (problem: string) =>
      new FaultlineError('FAULTLINE_ERR_BAD_DURATION', `duration: ${problem} — allowed: ${allowed}`, { issues: [{ field: 'duration', problem, allowed }] })
    if (durationMs < min) throw refuse(`${text} is shorter than the minimum ${formatDuration(min)}`)
    if (durationMs > this.#opts.maxDurationMs) throw refuse(`${text} exceeds this agent's maximum of ${formatDuration(this.#opts.maxDurationMs)} (raise it with --max-duration)`)
    return durationMs
  }

  #checkExclusive(kind: string, target: ResolvedTarget): void {
    const busy = this.#journal.openIdsOnTarget(kind, targetKey(target))
    if (busy.length > 0) {
      throw new FaultlineError(
        'FAULTLINE_ERR_TARGET_BUSY',
        `${describeTarget(target)} already has ${kind} injection "${busy[0]!}"; recover it first`,
        { injectionIds: busy },
      )
    }
  }

  /** The injections of an earlier request with this id, if it was identical; 409 if it differed. */
  #replay(requestId: string, requestHash: string): Injection[] | undefined {
    const prior = this.#journal.byRequest(requestId)
    if (prior.length === 0) return undefined
    if (prior[0]!.requestHash !== requestHash) {
      throw new FaultlineError(
        'FAULTLINE_ERR_ID_CONFLICT',
        `id "${requestId}" was already used for a different fault, target or duration; use a new id`,
        { injectionIds: prior.map((p) => p.id) },
      )
    }
    return prior.map((p) => toInjection(p))
  }

  // ---- read --------------------------------------------------------------------------------

  /** Whether a request with this client id was already journaled (a resend is answered from the journal). */
  hasRequest(requestId: string): boolean {
    return this.#journal.byRequest(requestId).length > 0
  }

  get(id: string): Injection {
    const row = this.#journal.get(id)
    if (!row) throw new FaultlineError('FAULTLINE_ERR_NOT_FOUND', `no injection with id "${id}"`)
    return toInjection(row)
  }

  list(status?: InjectionStatus, limit?: number): Injection[] {
    return this.#journal.list(status, limit).map((r) => toInjection(r))
  }

  /** The injections of one request (every target it matched), with who asked for it. */
  requestWithOrigin(requestId: string): { injection: Injection; origin: Origin | null }[] {
    return this.#journal.byRequest(requestId).map((r) => ({ injection: toInjection(r), origin: asOrigin(r.origin) }))
  }

  /** Injections, newest first, with who asked for each. */
  listWithOrigin(limit?: number): { injection: Injection; origin: Origin | null }[] {
    return this.#journal.list(undefined, limit).map((r) => ({ injection: toInjection(r), origin: asOrigin(r.origin) }))
  }

  /** Every injection that may still be on the host, with who asked for it (the link filters on origin). */
  openWithOrigin(): { injection: Injection; origin: Origin | null }[] {
    return this.#journal.needingUndo().map((r) => ({ injection: toInjection(r), origin: asOrigin(r.origin) }))
  }

  /** Tells the listeners of `update`; a throwing listener never breaks the lifecycle. */
  #changed(id: string, reason: UpdateReason): void {
    if (this.events.listenerCount('update') === 0) return
    const row = this.#journal.get(id)
    if (!row) return
    try {
      this.events.emit('update', toInjection(row), reason, asOrigin(row.origin))
    } catch (err) {
      this.#log.error({ err, injectionId: id }, 'an update listener threw')
    }
  }

  // ---- recover -----------------------------------------------------------------------------

  /** Recovers one injection. Idempotent: a recovered injection is returned as it is. */
  async recover(id: string, reason: RecoverReason): Promise<Injection> {
    if (!this.#journal.head(id)) throw new FaultlineError('FAULTLINE_ERR_NOT_FOUND', `no injection with id "${id}"`)
    await this.#undo(id, reason)
    return this.get(id)
  }

  /** Recovers every injection that may still be on the host. Failures are reported, not thrown. */
  async recoverAll(reason: RecoverReason): Promise<{ injections: Injection[]; failed: { id: string; error: string }[] }> {
    const open = this.#journal.needingUndo()
    const failed: { id: string; error: string }[] = []
    await Promise.all(
      open.map((row) =>
        this.#undo(row.id, reason).catch((err) => {
          failed.push({ id: row.id, error: errorMessage(err) })
        }),
      ),
    )
    return { injections: open.map((r) => this.get(r.id)), failed }
  }

  /**
   * At every start, before the API answers: whatever the journal says may still be on the host
   * is taken back out, whatever step the previous agent died at.
   */
  async reconcile(): Promise<{ recovered: number; failed: number }> {
    const open = this.#journal.needingUndo()
    let recovered = 0
    let failed = 0
    for (const row of open) {
      this.#journal.addNote(row.id, `recovered at agent start: the previous agent stopped while this injection was ${row.status}`)
      try {
        await this.#undo(row.id, 'restart')
        recovered++
      } catch (err) {
        failed++
        this.#log.error({ err, injectionId: row.id }, 'recovery at start failed; retrying in the background')
      }
    }
    if (open.length > 0) this.#log.info({ recovered, failed }, 'reconciled the journal at start')
    await this.#sweep()
    return { recovered, failed }
  }

  /**
   * Resources no open injection owns, found by name (a journal deleted while faults were on
   * the host): each kind's sweep removes its own. A failing sweep is logged, not fatal.
   */
  async #sweep(): Promise<void> {
    const openIds = new Set(this.#journal.needingUndo().map((r) => r.id))
    let stateDir: string
    try {
      stateDir = realpathSync(this.#opts.stateDir)
    } catch {
      stateDir = this.#opts.stateDir
    }
    for (const sweep of sweeps()) {
      try {
        const notes = await sweep({ log: this.#log, paths: this.#opts.paths, stateDir, openIds })
        for (const note of notes) this.#log.warn({ note }, 'removed a stray fault at start')
      } catch (err) {
        this.#log.error({ err }, 'the start-up sweep failed')
      }
    }
  }

  #undo(id: string, reason: RecoverReason): Promise<void> {
    const row = this.#journal.head(id)
    if (!row) return Promise.resolve()
    return this.#lock.run(row.targetKey, () => this.#undoLocked(id, reason))
  }

  /** The undo itself; the caller holds the target's lock. */
  async #undoLocked(id: string, reason: RecoverReason): Promise<void> {
    const row = this.#journal.get(id)
    if (!row || !row.needsUndo) return
    const log = this.#log.child({ injectionId: id, kind: row.kind, target: row.targetKey })
    const wasFailed = row.status === 'failed'
    if (!wasFailed) {
      this.#journal.markRecovering(id)
      this.#changed(id, reason)
    }
    const started = performance.now()
    try {
      const runner = runnerNamed(row.kind)
      if (!runner) throw new Error(`this agent does not know fault kind "${row.kind}" (was the journal written by a newer agent?)`)
      const outcome = await runner.recover(row.state, { log, paths: this.#opts.paths })
      if (outcome.note) this.#journal.addNote(id, outcome.note)
      if (wasFailed) {
        this.#journal.markUndone(id)
      } else {
        this.#journal.markRecovered(id)
      }
      this.#releaseClaims(id)
      this.#deadlines.delete(id)
      this.#retryAttempts.delete(id)
      this.#changed(id, reason)
      this.#opts.metrics.recoveries.inc({ kind: row.kind, reason, outcome: 'recovered' })
      this.#opts.metrics.recoverSeconds.observe({ kind: row.kind }, (performance.now() - started) / 1000)
      log.info({ reason }, wasFailed ? 'partial apply undone' : 'injection recovered')
    } catch (err) {
      const message = `recovery failed: ${errorMessage(err)}`
      if (wasFailed) this.#journal.addNote(id, message)
      else this.#journal.setError(id, { code: 'FAULTLINE_ERR_RECOVER_FAILED', message })
      this.#opts.metrics.recoveries.inc({ kind: row.kind, reason, outcome: 'failed' })
      const attempt = (this.#retryAttempts.get(id) ?? 0) + 1
      this.#retryAttempts.set(id, attempt)
      const backoff = RETRY_BACKOFF_MS[Math.min(attempt - 1, RETRY_BACKOFF_MS.length - 1)]!
      this.#deadlines.set(id, Date.now() + backoff)
      log.error({ err, reason, attempt, retryInMs: backoff }, 'recovery failed; will retry')
      throw new FaultlineError('FAULTLINE_ERR_RECOVER_FAILED', `${id}: ${message}; the agent retries in ${formatDuration(backoff)}`)
    }
  }

  /** Graceful stop: no new injections; every open injection is recovered before the journal closes. */
  async close(): Promise<void> {
    this.#closing = true
    await Promise.allSettled([...this.#inflight])
    this.#deadlines.stop()
    const { failed } = await this.recoverAll('shutdown')
    if (failed.length > 0) this.#log.error({ failed }, 'some injections could not be recovered at shutdown; they will be recovered at next start')
  }
}

function hashRequest(body: CreateInjectionBody): string {
  return createHash('sha256')
    .update(stableStringify({ fault: body.fault, target: body.target, duration: body.duration }) ?? '')
    .digest('hex')
}

function asOrigin(value: unknown): Origin | null {
  return value !== null && typeof value === 'object' && typeof (value as Origin).who === 'string' ? (value as Origin) : null
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

function draftRow(r: NewJournalRow): JournalRow {
  return { ...r, seq: 0, status: 'pending', updatedAt: r.createdAt, recoveredAt: null, needsUndo: false, error: null, notes: [] }
}

export function toInjection(row: JournalRow, dryRun = false): Injection {
  const iso = (ms: number) => new Date(ms).toISOString()
  const injection: Injection = {
    id: row.id,
    requestId: row.requestId,
    kind: row.kind,
    status: row.status,
    fault: row.fault as Injection['fault'],
    target: row.target as Injection['target'],
    resolved: row.resolved,
    plan: row.plan,
    duration: row.duration,
    durationMs: row.durationMs,
    recoverable: row.recoverable,
    createdAt: iso(row.createdAt),
    expiresAt: iso(row.expiresAt),
    updatedAt: iso(row.updatedAt),
    notes: row.notes,
  }
  if (row.recoveredAt !== null) injection.recoveredAt = iso(row.recoveredAt)
  if (row.error) injection.error = row.error
  if (dryRun) injection.dryRun = true
  return injection
}

