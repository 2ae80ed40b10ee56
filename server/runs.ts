import { randomInt } from 'node:crypto'
import type { Logger } from 'pino'
import type { Static } from 'typebox'
import { parseDuration } from '../protocol/duration.js'
import { FaultlineError, isFaultlineError } from '../protocol/errors.js'
import type { Experiment } from '../protocol/experiment.js'
import { newId } from '../protocol/id.js'
import { isOpenStatus, type InjectionSchema, type UpdateReason } from '../protocol/injection.js'
import { LINK_PROTOCOL_VERSION, type AgentMessage } from '../protocol/link.js'
import { describeTarget, targetKey } from '../protocol/target.js'
import type { ExperimentPlan, RunTrigger, RunView } from '../protocol/views.js'
import type { Hub, InjectionUpdate } from './hub.js'
import { TERMINAL_RECORD, type AgentRow, type RecordRow, type RecordStatus, type RunRow, type Store } from './store.js'

/** An injection as it travels on the link (its fault and target are not narrowed). */
type WireInjection = Static<typeof InjectionSchema>

type InjectResult = Extract<AgentMessage, { type: 'inject-result' }>

export interface RunsOptions {
  store: Store
  hub: Hub
  log: Logger
  leaseMs: number
  event: (type: string, message: string, refs?: { agentId?: string; runId?: string; data?: unknown }) => void
  /** How long an agent may take to answer inject (default 60 s: resolving and applying can be slow). */
  injectTimeoutMs?: number
}

const iso = (ms: number) => new Date(ms).toISOString()
/** Time after a run's planned end (duration + lease) before unanswered records are written off. */
const RUN_GRACE_MS = 15_000

/** Does this agent belong to the experiment's hosts? Names match the agent id or its hostname. */
export function matchesHosts(hosts: Experiment['hosts'], agent: Pick<AgentRow, 'id' | 'hostname' | 'labels'>): boolean {
  if ('all' in hosts) return true
  if ('names' in hosts) return hosts.names.includes(agent.id) || (agent.hostname !== '' && hosts.names.includes(agent.hostname))
  return Object.entries(hosts.labels).every(([k, v]) => agent.labels[k] === v)
}

/**
 * How many of the `connected` matching hosts a mode picks. Percentages are of the connected
 * matching hosts, rounded up, so `percent: 50` never touches more than half of the live fleet
 * (plus rounding) however many hosts are offline; `fixed: N` takes at most the connected ones.
 */
export function hostCount(mode: Experiment['mode'], connected: number): number {
  if (connected === 0) return 0
  if (mode === undefined || mode === 'all') return connected
  if (mode === 'one') return 1
  if ('fixed' in mode) return Math.min(mode.fixed, connected)
  return Math.min(connected, Math.max(1, Math.ceil((mode.percent / 100) * connected)))
}

function describeMode(mode: Experiment['mode']): string {
  if (mode === undefined || mode === 'all' || mode === 'one') return mode ?? 'all'
  return 'fixed' in mode ? `fixed ${mode.fixed}` : `percent ${mode.percent}`
}

/** A uniform random choice of n items (partial Fisher-Yates with a CSPRNG). */
export function sample<T>(items: T[], n: number): T[] {
  const copy = [...items]
  for (let i = 0; i < n && i < copy.length - 1; i++) {
    const j = randomInt(i, copy.length)
    ;[copy[i], copy[j]] = [copy[j]!, copy[i]!]
  }
  return copy.slice(0, n)
}

/**
 * The record status an injection's state maps to. A recovery at the deadline is "recovered";
 * any earlier recovery (abort, halt, guard, lease, a local DELETE, a restart) is "aborted".
 */
export function recordStatusOf(injection: Pick<WireInjection, 'status'>, reason: UpdateReason | ''): RecordStatus {
  switch (injection.status) {
    case 'pending':
    case 'applying':
      return 'sent'
    case 'active':
    case 'recovering':
      return 'active'
    case 'failed':
      return 'failed'
    case 'recovered':
      // Taken back because another target of the same request failed: the request failed.
      if (reason === 'rollback') return 'failed'
      return reason === 'deadline' || reason === 'retry' || reason === '' || reason === 'apply' ? 'recovered' : 'aborted'
  }
}

/**
 * Runs of experiments: which hosts, the inject fan-out, one record per host and target kept
 * current from the agents' reports, abort, halt-all, and the end of a run.
 */
export class Runs {
  readonly #o: RunsOptions
  readonly #log: Logger
  readonly #sweeper: NodeJS.Timeout
  readonly #endChecks = new Set<string>()
  #closed = false

  constructor(opts: RunsOptions) {
    this.#o = opts
    this.#log = opts.log
    opts.hub.on('sync', (agentId, open) => this.#onSync(agentId, open))
    opts.hub.on('update', (agentId, update) => this.#onUpdate(agentId, update))
    this.#sweeper = setInterval(() => this.sweep(), 1_000)
  }

  close(): void {
    clearInterval(this.#sweeper)
    this.#closed = true
    this.#runEndChecks()
  }

  // ---- start -------------------------------------------------------------------------------

  /** Starts a run of the experiment as it is stored now. */
  start(name: string, who: string, trigger: RunTrigger): RunRow {
    const exp = this.#o.store.getExperiment(name)
    if (!exp) throw new FaultlineError('FAULTLINE_ERR_EXPERIMENT_NOT_FOUND', `no experiment "${name}"; list them with "faultline exp ls"`)
    return this.#launch(name, exp.spec, who, trigger)
  }

  /**
   * Starts a new run with the spec an earlier run kept: the experiment as it was then, even if
   * it has been changed or deleted since.
   */
  rerun(runId: string, who: string): RunRow {
    const previous = this.#o.store.getRun(runId)
    if (!previous) throw new FaultlineError('FAULTLINE_ERR_RUN_NOT_FOUND', `no run "${runId}"; list them with "faultline exp show NAME"`)
    return this.#launch(previous.experiment, previous.spec, who, 'api', previous.id)
  }

  #launch(name: string, spec: Experiment, who: string, trigger: RunTrigger, rerunOf?: string): RunRow {
    const { store, hub } = this.#o
    const running = store.openRuns(name)
    if (running.length > 0) {
      throw new FaultlineError('FAULTLINE_ERR_RUN_ACTIVE', `experiment "${name}" already has run ${running[0]!.id} in progress; wait for it or abort it ("faultline exp abort ${running[0]!.id}")`, {
        runId: running[0]!.id,
      })
    }
    const matching = store.agentsBrief().filter((a) => matchesHosts(spec.hosts, a))
    const connected = matching.filter((a) => hub.isReady(a.id))
    if (connected.length === 0) {
      throw new FaultlineError(
        'FAULTLINE_ERR_NO_HOSTS',
        matching.length === 0
          ? `no agent matches the hosts of "${name}" (${JSON.stringify(spec.hosts)}); see "faultline agents ls"`
          : `${matching.length} agent(s) match the hosts of "${name}", but none is connected`,
      )
    }
    const chosen = sample(connected, hostCount(spec.mode, connected.length))
    // fixed N (or one) that finds fewer connected hosts runs on those, and says so.
    const requested = spec.mode === 'one' ? 1 : typeof spec.mode === 'object' && 'fixed' in spec.mode ? spec.mode.fixed : chosen.length
    const short = chosen.length < requested
    const chosenIds = new Set(chosen.map((a) => a.id))
    const id = newId()
    const now = Date.now()
    const durationMs = parseDuration(spec.duration)
    const records: Omit<RecordRow, 'seq'>[] = []
    chosen.forEach((a, i) =>
      records.push({ runId: id, agentId: a.id, requestId: `${id}.${i + 1}`, injectionId: '', target: '', targetKey: '', status: 'sent', reason: '', error: null, updatedAt: now }),
    )
    for (const a of matching) {
      if (chosenIds.has(a.id)) continue
      const online = hub.isReady(a.id)
      records.push({
        runId: id,
        agentId: a.id,
        requestId: '',
        injectionId: '',
        target: '',
        targetKey: '',
        status: online ? 'skipped' : 'offline',
        reason: online ? 'not-chosen' : 'not-connected',
        error: null,
        updatedAt: now,
      })
    }
    const run = {
      id,
      experiment: name,
      spec,
      status: 'running' as const,
      trigger,
      startedBy: who,
      startedAt: now,
      deadlineAt: now + durationMs + this.#o.leaseMs + RUN_GRACE_MS,
      selection: { matched: matching.length, connected: connected.length, chosen: chosen.length, mode: describeMode(spec.mode), ...(short ? { requested } : {}) },
    }
    store.insertRun(run, records)
    const shortfall = short ? `; mode ${describeMode(spec.mode)} asked for ${requested} host(s), only ${chosen.length} connected` : ''
    const again = rerunOf ? `, a re-run of ${rerunOf}` : ''
    this.#o.event('run.started', `run ${id} of ${name} started by ${who} (${trigger}${again}): ${chosen.length} of ${connected.length} connected host(s), ${matching.length - connected.length} offline${shortfall}`, {
      runId: id,
      data: { hosts: chosen.map((a) => a.id), ...(rerunOf ? { rerunOf } : {}) },
    })
    chosen.forEach((a, i) => this.#sendInject(id, spec, a.id, `${id}.${i + 1}`))
    return store.getRun(id)!
  }

  // ---- plan --------------------------------------------------------------------------------

  /**
   * What a run of `spec` would do, host by host, without applying anything: each connected agent
   * it selects resolves the target and plans the fault (a dry run); offline ones are listed.
   */
  async plan(spec: Experiment, warnings: string[], timeoutMs = 30_000): Promise<ExperimentPlan> {
    const { store, hub } = this.#o
    const matching = store.agents().filter((a) => matchesHosts(spec.hosts, a))
    const connected = matching.filter((a) => hub.isReady(a.id))
    const hosts = await Promise.all(
      matching.map(async (a): Promise<ExperimentPlan['hosts'][number]> => {
        const host = { agent: a.id, hostname: a.hostname }
        if (!hub.isReady(a.id)) return { ...host, outcome: 'offline', injections: [] }
        const message = {
          v: LINK_PROTOCOL_VERSION,
          type: 'inject',
          requestId: newId(),
          body: { fault: spec.fault, target: spec.target, duration: spec.duration, dryRun: true, ...(spec.maxTargets ? { maxTargets: spec.maxTargets } : {}) },
        } as const
        try {
          const reply = (await hub.request(a.id, message, timeoutMs)) as InjectResult
          return reply.error ? { ...host, outcome: 'refused', injections: reply.injections, error: reply.error } : { ...host, outcome: 'would-inject', injections: reply.injections }
        } catch (err) {
          return { ...host, outcome: 'no-answer', injections: [], error: { code: isFaultlineError(err) ? err.code : 'FAULTLINE_ERR_INTERNAL', message: (err as Error).message } }
        }
      }),
    )
    return {
      experiment: spec.name,
      mode: describeMode(spec.mode),
      duration: spec.duration,
      selection: { matched: matching.length, connected: connected.length, wouldChoose: hostCount(spec.mode, connected.length) },
      warnings,
      hosts,
    }
  }

  #sendInject(runId: string, spec: Experiment, agentId: string, requestId: string): void {
    const message = {
      v: LINK_PROTOCOL_VERSION,
      type: 'inject',
      requestId,
      runId,
      body: { fault: spec.fault, target: spec.target, duration: spec.duration, id: requestId, ...(spec.maxTargets ? { maxTargets: spec.maxTargets } : {}) },
      ...(spec.guards && spec.guards.length > 0 ? { guards: spec.guards } : {}),
    } as const
    this.#o.hub
      .request(agentId, message, this.#o.injectTimeoutMs ?? 60_000)
      .then((reply) => this.#onInjectResult(agentId, runId, requestId, reply as InjectResult))
      .catch((err) => {
        // Disconnected: the record stays "sent" and the inject is sent again when the agent is
        // back (same requestId, so it is never applied twice); its lease covers the meantime.
        if (isFaultlineError(err) && err.code === 'FAULTLINE_ERR_AGENT_OFFLINE') return
        const code = isFaultlineError(err) ? err.code : 'FAULTLINE_ERR_INTERNAL'
        for (const rec of this.#o.store.recordsOfRequest(agentId, requestId)) {
          if (rec.status === 'sent') this.#o.store.setRecordStatus(rec.seq, 'failed', 'timeout', { code, message: (err as Error).message })
        }
        this.#checkEnd(runId)
      })
  }

  #onInjectResult(agentId: string, runId: string, requestId: string, reply: InjectResult): void {
    const { store } = this.#o
    const now = Date.now()
    for (const injection of reply.injections) this.#apply(agentId, runId, requestId, injection, '', undefined)
    if (reply.error) {
      // The host's own policy refused it: the record says so, whatever the error's details.
      const reason = reply.error.code === 'FAULTLINE_ERR_POLICY' ? 'policy' : reply.error.code === 'FAULTLINE_ERR_GUARD_FAILED' ? 'guard' : 'apply'
      if (reply.injections.length === 0) {
        store.upsertRecord({ runId, agentId, requestId, injectionId: '', target: '', targetKey: '', status: 'failed', reason, error: reply.error, updatedAt: now })
      } else {
        for (const rec of store.recordsOfRequest(agentId, requestId)) {
          if (rec.status === 'failed' && !rec.error) store.setRecordStatus(rec.seq, 'failed', rec.reason || reason, reply.error)
        }
      }
      if (reason === 'guard') this.#o.event('guard.failed', `run ${runId}: guard failed on ${agentId} before the fault was applied: ${reply.error.message}`, { runId, agentId })
      else this.#o.event('record.failed', `run ${runId}: agent ${agentId} could not inject: ${reply.error.message}`, { runId, agentId, data: { code: reply.error.code } })
    }
    // Aborted (or halted) while the inject was under way: take back what it just applied.
    const run = store.runState(runId)
    const open = reply.injections.filter((i) => isOpenStatus(i.status)).map((i) => i.id)
    if (run && (run.abortRequested || run.status !== 'running') && open.length > 0) this.#recover(agentId, { injectionIds: open })
    this.#checkEndSoon(runId)
  }

  /**
   * #checkEnd once for every run that agents reported on in this event-loop turn: the answers
   * of a large fleet arrive together, and counting a run's open records for each of them made
   * the fan-out quadratic (docs/benchmarks.md, server fan-out).
   */
  #checkEndSoon(runId: string): void {
    if (this.#closed) return this.#checkEnd(runId)
    if (this.#endChecks.size === 0) setImmediate(() => this.#runEndChecks())
    this.#endChecks.add(runId)
  }

  #runEndChecks(): void {
    const runIds = [...this.#endChecks]
    this.#endChecks.clear()
    for (const id of runIds) this.#checkEnd(id)
  }

  /** Writes one injection's state into its record; a finished record never goes back. */
  #apply(agentId: string, runId: string, requestId: string, injection: WireInjection, reason: UpdateReason | '', detail: string | undefined, found?: RecordRow): boolean {
    const { store } = this.#o
    const existing = found ?? store.recordOfInjection(agentId, injection.id)
    const status = recordStatusOf(injection, reason)
    if (existing && TERMINAL_RECORD.has(existing.status)) return false
    let error = injection.error ?? null
    if (status === 'aborted' && reason === 'guard') error = { code: 'FAULTLINE_ERR_GUARD_FAILED', message: detail ?? 'a guard failed on the agent' }
    if (status === 'aborted' && reason === 'lease') error = { code: 'FAULTLINE_ERR_LEASE_EXPIRED', message: detail ?? 'the agent lost the server for longer than the lease' }
    const fields = {
      target: describeTarget(injection.resolved),
      targetKey: targetKey(injection.resolved),
      status,
      reason: status === 'sent' || status === 'active' ? ('' as const) : reason || (status === 'failed' ? ('apply' as const) : ('deadline' as const)),
      error,
      updatedAt: Date.now(),
    }
    // The record of this very injection exists (e.g. active, now recovered): update its row;
    // otherwise the placeholder gives way to it, or it is inserted (upsertRecord).
    if (existing && existing.runId === runId && existing.requestId === requestId && existing.injectionId === injection.id) store.updateRecord(existing.seq, fields)
    else store.upsertRecord({ runId, agentId, requestId, injectionId: injection.id, ...fields })
    if (existing?.status !== status) {
      this.#o.event(`record.${status}`, `run ${runId}: ${agentId} ${describeTarget(injection.resolved)} ${status}${reason ? ` (${reason})` : ''}${detail ? `: ${detail}` : ''}`, {
        runId,
        agentId,
        data: { injectionId: injection.id, reason },
      })
    }
    return true
  }

  #onUpdate(agentId: string, update: InjectionUpdate): void {
    const { store } = this.#o
    const injection = update.injection
    const exact = store.recordOfInjection(agentId, injection.id)
    const known = exact ?? store.recordsOfRequest(agentId, injection.requestId)[0]
    if (!known) {
      this.#log.debug({ agentId, injectionId: injection.id }, 'update for an injection of no known run ignored')
      return
    }
    if (update.reason === 'guard' && injection.status === 'recovered') {
      this.#o.event('guard.failed', `run ${known.runId}: guard failed on ${agentId}: ${update.detail ?? ''}`, { runId: known.runId, agentId })
    }
    this.#apply(agentId, known.runId, known.requestId, injection, update.reason, update.detail, exact)
    this.#checkEndSoon(known.runId)
  }

  /**
   * After a (re)connect, once every queued update has arrived: reconcile what the server
   * believed with what the agent has open.
   */
  #onSync(agentId: string, open: WireInjection[]): void {
    const { store } = this.#o
    const touched = new Set<string>()
    const openIds = new Set(open.map((i) => i.id))
    const stale: string[] = []
    for (const injection of open) {
      const rec = store.recordOfInjection(agentId, injection.id) ?? store.recordsOfRequest(agentId, injection.requestId)[0]
      const run = rec && store.getRun(rec.runId)
      // Open on the agent, but its run was aborted, halted or has ended (or the server no longer
      // knows it): take it back out now rather than wait for its deadline.
      if (!rec || !run || run.status !== 'running' || run.abortRequestedAt !== null) stale.push(injection.id)
      if (rec) {
        this.#apply(agentId, rec.runId, rec.requestId, injection, '', undefined)
        touched.add(rec.runId)
      }
    }
    if (stale.length > 0) this.#recover(agentId, { injectionIds: stale })
    for (const rec of store.openRecordsOfAgent(agentId)) {
      if (rec.injectionId !== '' && openIds.has(rec.injectionId)) continue
      const run = store.getRun(rec.runId)
      touched.add(rec.runId)
      if (rec.status === 'sent' && rec.injectionId === '') {
        if (run && run.status === 'running' && run.abortRequestedAt === null && Date.now() < run.startedAt + parseDuration(run.spec.duration)) {
          this.#sendInject(run.id, run.spec, agentId, rec.requestId)
          continue
        }
        store.setRecordStatus(rec.seq, 'failed', 'offline', { code: 'FAULTLINE_ERR_AGENT_OFFLINE', message: 'the agent was not connected to receive this injection in time' })
        continue
      }
      // The agent no longer has it and sent no update saying why (its journal has the details).
      store.setRecordStatus(rec.seq, 'aborted', 'missing', {
        code: 'FAULTLINE_ERR_AGENT_OFFLINE',
        message: 'the agent no longer has this injection open and did not report why (see its journal: faultline show ' + rec.injectionId + ')',
      })
    }
    for (const runId of touched) this.#checkEnd(runId)
  }

  #recover(agentId: string, what: { injectionIds?: string[]; runId?: string }): void {
    const requestId = `rc-${newId()}`
    this.#o.hub
      .request(agentId, { v: LINK_PROTOCOL_VERSION, type: 'recover', requestId, ...what }, 60_000)
      .then((ack) => {
        if (ack.error) this.#o.event('recover.failed', `agent ${agentId} could not recover everything: ${ack.error.message}`, { agentId, ...(what.runId ? { runId: what.runId } : {}) })
      })
      .catch((err) => this.#log.warn({ err: (err as Error).message, agentId }, 'recover not acknowledged; the lease covers it'))
  }

  // ---- abort, halt, end ----------------------------------------------------------------------

  abort(runId: string, who: string): RunView {
    const { store, hub } = this.#o
    const run = store.getRun(runId)
    if (!run) throw new FaultlineError('FAULTLINE_ERR_RUN_NOT_FOUND', `no run "${runId}"`)
    if (run.status !== 'running' && run.status !== 'pending') return this.view(runId)
    // Agents out of reach recover through their lease: the run waits that long for their word.
    if (store.requestAbort(runId, who, Date.now() + this.#o.leaseMs + RUN_GRACE_MS)) {
      this.#o.event('run.abort', `run ${runId} aborted by ${who}`, { runId })
    }
    const agents = new Set(store.records(runId).filter((r) => r.status === 'sent' || r.status === 'active').map((r) => r.agentId))
    for (const agentId of agents) if (hub.isReady(agentId)) this.#recover(agentId, { runId })
    this.#checkEnd(runId)
    return this.view(runId)
  }

  async halt(who: string): Promise<{ agents: { agent: string; ok: boolean; error?: string }[]; offline: string[]; runs: string[] }> {
    const { store, hub } = this.#o
    const runs = store.openRuns()
    for (const run of runs) store.requestAbort(run.id, who, Date.now() + this.#o.leaseMs + RUN_GRACE_MS)
    const ready = hub.readyIds()
    this.#o.event('halt', `halt by ${who}: recovering everything on ${ready.length} connected agent(s); ${runs.length} run(s) aborted`, { data: { runs: runs.map((r) => r.id) } })
    const requestId = `halt-${newId()}`
    // The same halt goes to every agent: serialized once.
    const message = { v: LINK_PROTOCOL_VERSION, type: 'halt', requestId } as const
    const frame = Buffer.from(JSON.stringify(message))
    const agents = await Promise.all(
      ready.map((agentId) =>
        hub
          .request(agentId, message, 60_000, frame)
          .then((ack) => ({ agent: agentId, ok: !ack.error, ...(ack.error ? { error: ack.error.message } : {}) }))
          .catch((err: Error) => ({ agent: agentId, ok: false, error: err.message })),
      ),
    )
    const readySet = new Set(ready)
    const offline = store
      .agentsBrief()
      .map((a) => a.id)
      .filter((id) => !readySet.has(id))
    for (const run of runs) this.#checkEnd(run.id)
    return { agents, offline, runs: runs.map((r) => r.id) }
  }

  /** Ends the run once every record is final. */
  #checkEnd(runId: string): void {
    const { store } = this.#o
    const run = store.getRun(runId)
    if (!run || (run.status !== 'running' && run.status !== 'pending')) return
    // Called on every update: count first, so a run of N hosts does not read N records N times.
    if (store.openRecordCount(runId) > 0) return
    const records = store.records(runId)
    if (!records.every((r) => TERMINAL_RECORD.has(r.status))) return
    const chosen = records.filter((r) => r.requestId !== '')
    // Aborted: by a person (abort, halt), or every host stopped early (guard, lease, ...).
    // Failed: no host could apply the fault. Completed: at least one host ran its course.
    const status =
      run.abortRequestedAt !== null
        ? 'aborted'
        : chosen.length > 0 && chosen.every((r) => r.status === 'failed')
          ? 'failed'
          : chosen.some((r) => r.status === 'recovered')
            ? 'completed'
            : 'aborted'
    store.endRun(runId, status)
    const counts: Record<string, number> = {}
    for (const r of records) counts[r.status] = (counts[r.status] ?? 0) + 1
    this.#o.event('run.ended', `run ${runId} of ${run.experiment} ${status}: ${Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(', ')}`, { runId, data: counts })
  }

  /** Runs past their deadline: what no agent reported on by then is written off. */
  sweep(): void {
    const { store, hub } = this.#o
    const now = Date.now()
    for (const run of store.openRuns()) {
      if (now < run.deadlineAt) continue
      for (const rec of store.records(run.id)) {
        if (TERMINAL_RECORD.has(rec.status)) continue
        if (hub.isReady(rec.agentId)) {
          store.setRecordStatus(rec.seq, 'failed', 'timeout', { code: 'FAULTLINE_ERR_LINK_TIMEOUT', message: 'the agent did not report the end of this injection by the end of the run' })
        } else {
          store.setRecordStatus(rec.seq, 'offline', 'lost', {
            code: 'FAULTLINE_ERR_AGENT_OFFLINE',
            message: 'the agent disconnected during the run; its lease recovers whatever it had, and it reports when it is back',
          })
        }
      }
      this.#checkEnd(run.id)
    }
  }

  view(runId: string): RunView {
    const { store } = this.#o
    const run = store.getRun(runId)
    if (!run) throw new FaultlineError('FAULTLINE_ERR_RUN_NOT_FOUND', `no run "${runId}"`)
    return {
      id: run.id,
      experiment: run.experiment,
      status: run.status,
      trigger: run.trigger,
      startedBy: run.startedBy,
      startedAt: iso(run.startedAt),
      ...(run.endedAt !== null ? { endedAt: iso(run.endedAt) } : {}),
      ...(run.abortRequestedAt !== null ? { abortRequestedAt: iso(run.abortRequestedAt) } : {}),
      ...(run.abortedBy !== null ? { abortedBy: run.abortedBy } : {}),
      selection: run.selection,
      duration: run.spec.duration,
      records: store.records(runId).map((r) => ({
        agent: r.agentId,
        target: r.target,
        injectionId: r.injectionId,
        status: r.status,
        reason: r.reason,
        error: r.error,
        updatedAt: iso(r.updatedAt),
      })),
    }
  }
}
