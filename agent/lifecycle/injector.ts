import { createHash, randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import { stringify as stableStringify } from 'safe-stable-stringify'
import { Value } from 'typebox/value'
import type { Capabilities, FeatureMap } from '../../protocol/capabilities.js'
import { formatDuration, parseDuration } from '../../protocol/duration.js'
import { FaultlineError, isFaultlineError } from '../../protocol/errors.js'
import type { CreateInjectionBody, Injection, InjectionStatus } from '../../protocol/injection.js'
import { describeTarget, targetKey, type ResolvedTarget } from '../../protocol/target.js'
import { getFaultKind } from '../faults/registry.js'
import type { ControlChannel, FaultKind, HostPaths, PlanBase } from '../faults/types.js'
import type { Journal, JournalRow, NewJournalRow } from '../journal/journal.js'
import type { AgentMetrics } from '../metrics.js'
import { resolveTarget } from '../targets/registry.js'
import type { TargetContext } from '../targets/types.js'
import { DeadlineScheduler } from './deadlines.js'
import { KeyedLock } from './keyed-lock.js'

export type RecoverReason = 'api' | 'halt' | 'deadline' | 'shutdown' | 'restart' | 'rollback' | 'retry' | 'lease' | 'guard' | 'abort'

/** Who asked, for the journal and the logs (never used as a logger key). */
export interface Origin {
  who: string
  address?: string
  /** Set for injections the server asked for: the run they belong to. */
  runId?: string
  /** Bound to the server's lease: recovered by the agent itself when the lease lapses. */
  lease?: boolean
}

/**
 * Why an injection changed status: 'apply' while it is being applied (pending -> applying ->
 * active, or failed), otherwise the RecoverReason of its recovery.
 */
export type UpdateReason = RecoverReason | 'apply'

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
  /** What network faults must not cut; the agent fills in its API port once it listens. */
  control: ControlChannel
}

export interface CreateResult {
  /** false when an identical request with the same id had already been taken (idempotent replay). */
  created: boolean
  injections: Injection[]
}

/** A selector may match at most this many targets unless the request raises maxTargets. */
export const DEFAULT_MAX_TARGETS = 20

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

  /** The control channel network faults exempt; main.ts sets apiPort once the agent listens. */
  get control(): ControlChannel {
    return this.#opts.control
  }

  #claimsOf(row: { plan: unknown }): string[] {
    return (row.plan as PlanBase).claims ?? []
  }

  #releaseClaims(id: string): void {
    for (const [claim, holder] of this.#claims) if (holder === id) this.#claims.delete(claim)
  }

  // ---- create ------------------------------------------------------------------------------

  create(body: CreateInjectionBody, origin: Origin): Promise<CreateResult> {
    if (this.#closing) throw new FaultlineError('FAULTLINE_ERR_SHUTTING_DOWN', 'the agent is shutting down and recovering every injection; try again once it is back')
    const work = this.#create(body, origin)
    this.#inflight.add(work)
    const done = () => this.#inflight.delete(work)
    work.then(done, done)
    return work
  }

  async #create(body: CreateInjectionBody, origin: Origin): Promise<CreateResult> {
    const kind = getFaultKind(body.fault.kind)
    if (!kind) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `unknown fault kind "${body.fault.kind}"`)
    const durationMs = this.#checkDuration(body.duration)
    if (!kind.targets.includes(body.target.type)) {
      throw new FaultlineError(
        'FAULTLINE_ERR_TARGET_UNSUPPORTED',
        `${kind.kind} acts on ${kind.targets.join(' or ')} targets, not on "${body.target.type}"`,
      )
    }
    const requestHash = hashRequest(body)
    if (body.id && !body.dryRun) {
      const replay = this.#replay(body.id, requestHash)
      if (replay) return { created: false, injections: replay }
    }

    const caps = await this.#opts.capabilities()
    const availability = caps.kinds[kind.kind]
    if (!availability?.available) {
      throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `${kind.kind} is not available on this host: ${availability?.reason ?? 'not probed'}`)
    }

    const features = caps.features as FeatureMap
    const targets = await resolveTarget(body.target, this.#opts.targets)
    const maxTargets = body.maxTargets ?? DEFAULT_MAX_TARGETS
    if (targets.length > maxTargets) {
      throw new FaultlineError(
        'FAULTLINE_ERR_TOO_MANY_TARGETS',
        `the target selector matched ${targets.length} targets, more than maxTargets ${maxTargets}; narrow the selector or raise maxTargets`,
        { matched: targets.length, maxTargets },
      )
    }
    // An exclusive kind already on a target is a conflict (409), whatever state that fault has
    // put the target in; checked again right before the journal insert.
    if (kind.exclusive) for (const target of targets) this.#checkExclusive(kind.kind, target)

    const requestId = body.id ?? newId()
    const ids = targets.length === 1 ? [requestId] : targets.map((_, i) => `${requestId}-${i + 1}`)
    const gatherCtx = {
      paths: this.#opts.paths,
      features,
      control: this.#opts.control,
      stateDir: this.#opts.stateDir,
      openPlans: () => this.#journal.needingUndo().filter((r) => r.kind === kind.kind && r.status !== 'failed').map((r) => r.plan),
    }
    const planned = await Promise.all(
      targets.map(async (target, i) => {
        const facts = kind.gather ? await kind.gather(body.fault as never, target, gatherCtx) : undefined
        const plan = kind.plan(body.fault as never, target, { ...gatherCtx, injectionId: ids[i]!, facts: facts as never })
        return { target, plan }
      }),
    )

    const now = Date.now()
    const rows: NewJournalRow[] = planned.map(({ target, plan }, i) => ({
      id: ids[i]!,
      requestId,
      requestHash,
      kind: kind.kind,
      fault: body.fault,
      target: body.target,
      resolved: target,
      targetKey: targetKey(target),
      plan,
      state: kind.undoFromPlan(plan as never),
      duration: body.duration,
      durationMs,
      recoverable: kind.recoverable,
      createdAt: now,
      expiresAt: now + durationMs,
      origin,
    }))

    if (body.dryRun) {
      this.#opts.metrics.injections.inc({ kind: kind.kind, outcome: 'dry_run' }, rows.length)
      return { created: true, injections: rows.map((r) => toInjection(draftRow(r), true)) }
    }

    // From here to insertPending nothing awaits: the checks and the write-ahead insert are one
    // atomic step for this single-threaded process, so two racing requests cannot both pass.
    if (body.id) {
      const replay = this.#replay(body.id, requestHash)
      if (replay) return { created: false, injections: replay }
    }
    for (const r of rows) {
      const clash = this.#journal.get(r.id)
      if (clash) {
        throw new FaultlineError('FAULTLINE_ERR_ID_CONFLICT', `injection id "${r.id}" already belongs to request "${clash.requestId}"; choose another id`)
      }
      if (kind.exclusive) this.#checkExclusive(kind.kind, r.resolved)
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
    this.#log.info({ requestId, kind: kind.kind, targets: rows.map((r) => r.targetKey), who: origin.who }, 'injection journaled')
    crashPoint('after-journal')

    let fatal: unknown
    const gone: FaultlineError[] = []
    for (const row of rows) {
      if (this.#closing) {
        this.#journal.markFailed(row.id, { code: 'FAULTLINE_ERR_SHUTTING_DOWN', message: 'not applied: the agent began shutting down' })
        this.#journal.markUndone(row.id)
        this.#releaseClaims(row.id)
        this.#changed(row.id, 'shutdown')
        continue
      }
      if (fatal !== undefined) {
        this.#journal.markFailed(row.id, { code: 'FAULTLINE_ERR_APPLY_FAILED', message: 'not applied: another target of the same request failed' })
        this.#journal.markUndone(row.id)
        this.#releaseClaims(row.id)
        this.#changed(row.id, 'rollback')
        continue
      }
      try {
        await this.#applyOne(row, kind)
      } catch (err) {
        if (isFaultlineError(err) && err.code === 'FAULTLINE_ERR_TARGET_GONE') gone.push(err)
        else fatal = err
      }
    }

    if (fatal !== undefined) {
      // All or nothing: take back what this request already applied.
      for (const row of rows) {
        const current = this.#journal.get(row.id)
        if (current?.needsUndo) {
          if (current.status !== 'failed') {
            this.#journal.markFailed(row.id, { code: 'FAULTLINE_ERR_APPLY_FAILED', message: 'rolled back: another target of the same request failed' })
            this.#changed(row.id, 'rollback')
          }
          await this.#undo(row.id, 'rollback').catch(() => undefined)
        }
      }
      const injections = rows.map((r) => this.get(r.id))
      const message = fatal instanceof Error ? fatal.message : String(fatal)
      if (isFaultlineError(fatal)) throw new FaultlineError(fatal.code, fatal.message, { injections })
      throw new FaultlineError('FAULTLINE_ERR_APPLY_FAILED', message, { injections })
    }
    if (gone.length === rows.length) {
      throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', gone[0]!.message, { injections: rows.map((r) => this.get(r.id)) })
    }
    for (const row of rows) {
      const current = this.#journal.get(row.id)
      if (current?.status === 'active') this.#deadlines.set(row.id, current.expiresAt)
    }
    return { created: true, injections: rows.map((r) => this.get(r.id)) }
  }

  async #applyOne(row: NewJournalRow, kind: FaultKind): Promise<void> {
    const log = this.#log.child({ injectionId: row.id, kind: row.kind, target: row.targetKey })
    await this.#lock.run(row.targetKey, async () => {
      // A halt or DELETE may have recovered this injection while earlier targets of the same
      // request were being applied: then it must not be applied at all.
      if (this.#journal.get(row.id)?.status !== 'pending') return
      this.#journal.setStatus(row.id, 'applying')
      this.#changed(row.id, 'apply')
      const started = performance.now()
      try {
        const state = await kind.apply(row.plan as never, {
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

  #checkDuration(text: string): number {
    const durationMs = parseDuration(text)
    const min = this.#opts.minDurationMs ?? 1_000
    if (durationMs < min) {
      throw new FaultlineError('FAULTLINE_ERR_BAD_DURATION', `duration ${text} is shorter than the minimum ${formatDuration(min)}`)
    }
    if (durationMs > this.#opts.maxDurationMs) {
      throw new FaultlineError(
        'FAULTLINE_ERR_BAD_DURATION',
        `duration ${text} exceeds this agent's maximum of ${formatDuration(this.#opts.maxDurationMs)} (raise it with --max-duration)`,
      )
    }
    return durationMs
  }

  #checkExclusive(kind: string, target: ResolvedTarget): void {
    const busy = this.#journal.openOnTarget(kind, targetKey(target))
    if (busy.length > 0) {
      throw new FaultlineError(
        'FAULTLINE_ERR_TARGET_BUSY',
        `${describeTarget(target)} already has ${kind} injection "${busy[0]!.id}"; recover it first`,
        { injectionIds: busy.map((b) => b.id) },
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

  get(id: string): Injection {
    const row = this.#journal.get(id)
    if (!row) throw new FaultlineError('FAULTLINE_ERR_NOT_FOUND', `no injection with id "${id}"`)
    return toInjection(row)
  }

  list(status?: InjectionStatus, limit?: number): Injection[] {
    return this.#journal.list(status, limit).map((r) => toInjection(r))
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
    if (!this.#journal.get(id)) throw new FaultlineError('FAULTLINE_ERR_NOT_FOUND', `no injection with id "${id}"`)
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
    return { recovered, failed }
  }

  #undo(id: string, reason: RecoverReason): Promise<void> {
    const row = this.#journal.get(id)
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
      this.#journal.setStatus(id, 'recovering')
      this.#changed(id, reason)
    }
    const started = performance.now()
    try {
      const kind = getFaultKind(row.kind)
      if (!kind) throw new Error(`this agent does not know fault kind "${row.kind}" (was the journal written by a newer agent?)`)
      if (!Value.Check(kind.stateSchema, row.state)) throw new Error(`journal state of ${id} does not match the ${row.kind} state schema`)
      const outcome = await kind.recover(row.state as never, { log, paths: this.#opts.paths })
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

function newId(): string {
  // 10 characters of base32 (Crockford alphabet, lower case): short enough to type.
  const alphabet = '0123456789abcdefghjkmnpqrstvwxyz'
  const bytes = randomBytes(10)
  let id = ''
  for (const b of bytes) id += alphabet[b & 31]
  return id
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

