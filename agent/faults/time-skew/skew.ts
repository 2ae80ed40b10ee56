import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { Type, type Static } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import { readStat, type ProcStat } from '../../targets/procfs.js'
import { describeProcess } from '../shared/process.js'
import {
  TimeskewHelperError,
  addressAt,
  injectSkew,
  inspectVdso,
  restoreSkew,
  vdsoFunctions,
  type PristineVdso,
  type VdsoFunction,
} from './helper.js'
import { cgroupPids, descendants, findCarriers, readVdsoView, skewable } from './processes.js'

const Hex = (description: string) => Type.String({ pattern: '^[0-9a-f]+$', maxLength: 64, description })
const Address = Type.String({ pattern: '^0x[0-9a-f]{1,16}$' })

export const PatchSchema = Type.Object({
  symbol: Type.Enum(vdsoFunctions),
  address: Address,
  original: Hex('The bytes at the entry before the patch (recovery writes them back)'),
  patched: Type.Optional(Hex('The jmp rel32 written over the first 5 of them')),
})

/**
 * One process whose vDSO this injection changed, or is changing. 'patching' is journaled
 * before the helper runs, so a crash mid-patch still leaves the addresses and original bytes
 * for recovery; 'inherited' is a child forked (without exec) from a patched process, which
 * carries the same patch at the same addresses.
 */
export const PatchedProcessSchema = Type.Object({
  pid: Type.Integer({ minimum: 1 }),
  startTime: Type.Integer({ minimum: 0 }),
  comm: Type.String(),
  status: Type.Enum(['patching', 'patched', 'inherited']),
  vdso: Address,
  page: Type.Optional(Address),
  patches: Type.Array(PatchSchema),
})
export type PatchedProcess = Static<typeof PatchedProcessSchema>

export const ScopeSchema = Type.Union([
  Type.Object({ type: Type.Literal('process'), pid: Type.Integer(), startTime: Type.Integer(), comm: Type.String() }),
  Type.Object({ type: Type.Literal('container'), id: Type.String(), cgroupDir: Type.String() }),
])
export type Scope = Static<typeof ScopeSchema>

export const StateSchema = Type.Object({
  injectionId: Type.String(),
  scope: ScopeSchema,
  children: Type.Boolean(),
  processes: Type.Array(PatchedProcessSchema),
})
export type SkewState = Static<typeof StateSchema>

export interface SkewParams {
  offsetNs: string
  clockMask: number
  functions: VdsoFunction[]
}

type Exact = { pid: number; startTime: number; comm: string }

const key = (p: { pid: number; startTime: number }) => `${p.pid}:${p.startTime}`

/** The user-facing error for a helper refusal at apply (the helper changed nothing in these cases). */
function applyError(procRoot: string, p: Exact, err: TimeskewHelperError): FaultlineError {
  const who = describeProcess(p)
  switch (err.code) {
    case 'traced': {
      const tracer = /^TracerPid:\s*(\d+)/m.exec(safeRead(join(procRoot, String(p.pid), 'status')))?.[1]
      return new FaultlineError(
        'FAULTLINE_ERR_TARGET_STATE',
        `${who} is traced${tracer && tracer !== '0' ? ` by pid ${tracer}` : ''} (a debugger, strace or another tool): ptrace allows one tracer at a time; detach it and retry`,
      )
    }
    case 'skewed':
      return new FaultlineError('FAULTLINE_ERR_TARGET_BUSY', `${who} is already skewed by another time-skew injection; recover it first`)
    case 'mismatch':
      return new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `${who}: ${err.message}; Faultline patches only an unmodified vDSO`)
    case 'busy':
    case 'timeout':
      return new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `${who}: ${err.message}; retry`)
    case 'no-vdso':
    case 'unsupported-vdso':
      return new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `${who}: ${err.message}`)
    default:
      return new FaultlineError('FAULTLINE_ERR_APPLY_FAILED', `${who}: ${err.message}; nothing of it was changed`)
  }
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

/**
 * The patching side of one injection: patches processes one by one, journaling each before and
 * after the helper runs (write ahead), and finds new processes under the target while active.
 */
export class SkewSession {
  readonly state: SkewState
  readonly #params: SkewParams
  readonly #pristine: PristineVdso
  readonly #procRoot: string
  readonly #checkpoint: (state: SkewState) => void
  readonly #log: Logger
  /** Processes a re-scan could not patch (pid:startTime:vdso): tried once, logged once. */
  readonly #skipped = new Set<string>()

  constructor(opts: { state: SkewState; params: SkewParams; pristine: PristineVdso; procRoot: string; checkpoint: (s: SkewState) => void; log: Logger }) {
    this.state = opts.state
    this.#params = opts.params
    this.#pristine = opts.pristine
    this.#procRoot = opts.procRoot
    this.#checkpoint = opts.checkpoint
    this.#log = opts.log
  }

  #save(): void {
    this.#checkpoint(this.state)
  }

  /**
   * Patches one process. 'gone' when it exited (or its pid was reused) before or while the
   * helper ran; any other refusal throws a FaultlineError (nothing of that process was changed).
   */
  async patch(p: Exact): Promise<'patched' | 'gone'> {
    for (let attempt = 0; ; attempt++) {
      const stat = readStat(this.#procRoot, p.pid)
      if (!skewable(stat, process.pid) || stat.startTime !== p.startTime) return 'gone'
      const view = readVdsoView(this.#procRoot, p.pid)
      if (!view) {
        if (readStat(this.#procRoot, p.pid)?.startTime !== p.startTime) return 'gone'
        throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `${describeProcess(p)} has no [vdso] mapping (is the kernel booted with vdso=0?)`)
      }
      const entry: PatchedProcess = {
        pid: p.pid,
        startTime: p.startTime,
        comm: p.comm,
        status: 'patching',
        vdso: view.vdso,
        patches: this.#params.functions.map((symbol) => ({
          symbol,
          address: addressAt(view.vdso, this.#pristine.functions[symbol].offset),
          original: this.#pristine.functions[symbol].bytes,
        })),
      }
      this.state.processes.push(entry)
      this.#save()
      let result
      try {
        result = await injectSkew({ procRoot: this.#procRoot }, p.pid, p.startTime, view.vdso, this.#params.offsetNs, this.#params.clockMask, entry.patches)
      } catch (err) {
        // The helper reports a refusal only after putting back whatever it had written; a
        // helper that died has an unknown outcome, so its 'patching' entry stays for recovery.
        if (!(err instanceof TimeskewHelperError) || err.code === 'crashed') throw err
        this.state.processes.splice(this.state.processes.indexOf(entry), 1)
        this.#save()
        if (err.code === 'gone') return 'gone'
        if (err.code === 'vdso-moved' && attempt === 0) continue // it exec'd meanwhile: once more
        throw applyError(this.#procRoot, p, err)
      }
      entry.status = 'patched'
      entry.page = result.page
      result.patched.forEach((bytes, i) => {
        if (bytes) entry.patches[i]!.patched = bytes
      })
      this.#save()
      this.#log.info({ pid: p.pid, threads: result.threads, vdso: entry.vdso, page: result.page, pageReused: result.pageReused }, 'vDSO patched')
      return 'patched'
    }
  }

  /** Processes under the target now: the descendants of every patched process, or the container's cgroup. */
  #scope(): number[] {
    const scope = this.state.scope
    if (scope.type === 'container') return cgroupPids([scope.cgroupDir])
    const roots = this.state.processes
      .filter((p) => p.status !== 'patching' && readStat(this.#procRoot, p.pid)?.startTime === p.startTime)
      .map((p) => p.pid)
    return descendants(this.#procRoot, [...new Set(roots)])
  }

  /**
   * One re-scan while active: patches each process under the target that is not skewed yet.
   * A child forked without exec already carries its parent's patch: it is recorded, not patched.
   */
  async rescan(stopped: () => boolean): Promise<void> {
    for (const pid of this.#scope()) {
      if (stopped()) return
      const stat = readStat(this.#procRoot, pid)
      if (!skewable(stat, process.pid)) continue
      const view = readVdsoView(this.#procRoot, pid)
      if (!view) continue
      const id = `${key(stat)}:${view.vdso}`
      if (this.#skipped.has(id) || this.state.processes.some((p) => key(p) === key(stat) && p.vdso === view.vdso)) continue
      if (await this.#recordIfCarrier(stat, view)) continue
      try {
        await this.patch({ pid, startTime: stat.startTime, comm: stat.comm })
      } catch (err) {
        this.#skipped.add(id)
        this.#log.warn({ pid, err: (err as Error).message }, 'a process started under the target could not be skewed; it is left alone')
      }
    }
  }

  async #recordIfCarrier(stat: ProcStat, view: { vdso: string; execPages: Set<string> }): Promise<boolean> {
    const parent = this.state.processes.find((p) => p.status !== 'patching' && p.vdso === view.vdso && p.page && view.execPages.has(p.page))
    if (!parent) return false
    // Same addresses, but is the patch really there (and not a page left by an earlier injection)?
    const seen = await inspectVdso(stat.pid, { procRoot: this.#procRoot }).catch(() => undefined)
    const cgt = seen?.symbols.find((s) => s.symbol === 'clock_gettime')
    if (!cgt?.ours || cgt.page !== parent.page) return false
    this.state.processes.push({ ...parent, pid: stat.pid, startTime: stat.startTime, comm: stat.comm, status: 'inherited', patches: parent.patches.map((x) => ({ ...x })) })
    this.#save()
    this.#log.info({ pid: stat.pid, parent: parent.pid }, 'a forked child carries the skew; recorded for recovery')
    return true
  }
}

// ---- recovery ----------------------------------------------------------------------------------

type RestoreOutcome = 'restored' | 'clean' | 'foreign' | 'vdso-moved' | 'exited' | 'pid-reused'

async function restoreOne(procRoot: string, p: { pid: number; startTime: number; vdso: string; patches: PatchedProcess['patches'] }): Promise<RestoreOutcome> {
  const stat = readStat(procRoot, p.pid)
  if (!stat || stat.state === 'Z' || stat.state === 'X') return 'exited'
  if (stat.startTime !== p.startTime) return 'pid-reused'
  try {
    return (await restoreSkew({ procRoot }, p.pid, p.startTime, p.vdso, p.patches)).result
  } catch (err) {
    // 'gone' from the helper: exited, or the pid changed hands, while it attached.
    if (err instanceof TimeskewHelperError && err.code === 'gone' && readStat(procRoot, p.pid)?.startTime !== p.startTime) return 'exited'
    throw err
  }
}

/**
 * Takes every patch of the state back out: each journaled process (an exited one counts as
 * recovered, a reused pid is never touched), then every process that carries a patch through
 * fork — found by its mappings anywhere on the host, since an orphan is reparented — until a
 * pass finds none. Throws if a live patched process could not be restored (the injector retries).
 */
export async function restoreAll(procRoot: string, log: Logger, processes: readonly PatchedProcess[]): Promise<{ note?: string }> {
  const outcomes = new Map<RestoreOutcome, string[]>()
  const record = (o: RestoreOutcome, p: Exact) => outcomes.set(o, [...(outcomes.get(o) ?? []), `${p.pid} (${p.comm})`])
  const done = new Set<string>()
  for (const p of processes) {
    const id = `${key(p)}:${p.vdso}`
    if (done.has(id)) continue
    done.add(id)
    record(await restoreOne(procRoot, p), p)
  }
  const carriersRestored: string[] = []
  for (let pass = 0; pass < 10; pass++) {
    const fresh = findCarriers(procRoot, process.pid, processes).filter((c) => !done.has(`${key(c.stat)}:${processes[c.match]!.vdso}`))
    if (fresh.length === 0) break
    for (const c of fresh) {
      const source = processes[c.match]!
      done.add(`${key(c.stat)}:${source.vdso}`)
      const outcome = await restoreOne(procRoot, { pid: c.pid, startTime: c.stat.startTime, vdso: source.vdso, patches: source.patches })
      if (outcome === 'restored') carriersRestored.push(`${c.pid} (${c.stat.comm})`)
    }
  }
  const notes: string[] = []
  const exited = outcomes.get('exited')
  if (exited) notes.push(`exited before recovery, nothing to restore: ${exited.join(', ')}`)
  const reused = outcomes.get('pid-reused')
  if (reused) notes.push(`pid now belongs to another process, left alone: ${reused.join(', ')}`)
  const moved = outcomes.get('vdso-moved')
  if (moved) notes.push(`exec'd during the skew (a fresh, unskewed vDSO): ${moved.join(', ')}`)
  const foreign = outcomes.get('foreign')
  if (foreign) notes.push(`vDSO changed by someone else since, left alone: ${foreign.join(', ')}`)
  if (carriersRestored.length > 0) notes.push(`also restored children forked during the skew: ${carriersRestored.join(', ')}`)
  if (notes.length > 0) log.info({ notes }, 'time-skew recovery notes')
  return notes.length > 0 ? { note: notes.join('; ') } : {}
}
