import type { Logger } from 'pino'
import type { Static, TObject } from 'typebox'
import type { FeatureMap, FeatureName } from '../../protocol/capabilities.js'
import type { FaultSpecDefinition } from '../../protocol/faults/define.js'
import type { PlanStep } from '../../protocol/plan.js'
import type { ResolvedTarget } from '../../protocol/target.js'
import type { HostPaths } from '../host-paths.js'

export type { HostPaths } from '../host-paths.js'

/** What network faults must never cut: the agent's own control links. */
export interface ControlChannel {
  /** The agent's API port, exempt when the target is the agent's own network namespace; undefined before it listens (or on a Unix socket). */
  apiPort?: () => number | undefined
  /** Inode of the agent's own network namespace. */
  agentNetnsInode: number
  /** Always-exempt TCP ports (22 for SSH by default). */
  tcpPorts: number[]
}

export interface GatherContext {
  paths: HostPaths
  features: FeatureMap
  control: ControlChannel
  /** Plans of this kind's injections that may still be on the host (to allocate free resources). */
  openPlans(): unknown[]
  /**
   * The agent's state dir (journal, file backups under backups/<injection id>/). Disk and file
   * faults refuse paths inside it and record their backup paths in the plan, so recovery needs
   * nothing but the state. Optional only so unit tests of other kinds need not invent one.
   */
  stateDir?: string
}

export interface PlanContext<Facts = undefined> {
  paths: HostPaths
  features: FeatureMap
  control: ControlChannel
  /** The id the injection will have: resources it creates are named from it. */
  injectionId: string
  /** What `gather` found out about the host for this spec and target. */
  facts: Facts
}

export interface ApplyContext {
  log: Logger
  paths: HostPaths
  /** The injection's deadline (ms since the epoch): helpers that outlive the agent stop by then. */
  expiresAt: number
  /**
   * Commits a refined undo state to the journal before the next host change. Kinds whose undo
   * needs facts only known while applying (a backup path, original bytes) call it before they
   * make the change that needs those facts to be undone.
   */
  checkpoint(state: unknown): void
}

export interface RecoverContext {
  log: Logger
  paths: HostPaths
}

/** What a start-up sweep gets: which injections the journal still holds open (their resources are not stray). */
export interface SweepContext {
  log: Logger
  paths: HostPaths
  /** The agent's state dir (real path): resources a helper of this agent holds point into it. */
  stateDir: string
  openIds: ReadonlySet<string>
}

export interface RecoverOutcome {
  /** Shown on the injection: e.g. "process had exited; nothing to resume". */
  note?: string
}

/** The fields every plan has: steps for people; claims for resources only one injection may hold. */
export interface PlanBase {
  steps: PlanStep[]
  /**
   * Host resources this injection holds exclusively while it is on the host, e.g.
   * "tc-root:<netns inode>:eth0" or "nfqueue:<netns inode>:4000". The injector refuses (409) a
   * new injection whose claims overlap those of an open one.
   */
  claims?: string[]
}

/**
 * How the agent does one kind on a host; its contract (name, parameters, targets) is the spec in
 * protocol/faults/. `gather` (may do I/O) collects the host facts the plan needs; `plan` is pure
 * and explains exactly what will be done (it backs dryRun); `apply` returns the JSON state needed
 * to undo; `recover` needs only that state and is idempotent ("already gone" counts as
 * recovered). `undoFromPlan` gives the state to undo with when the agent died before `apply`
 * returned, so a crash between any two steps is recoverable.
 */
export interface FaultImplementation<Spec extends TObject, Plan extends TObject, State extends TObject, Facts> {
  planSchema: Plan
  stateSchema: State
  /** Features that must all be available for the kind to be offered at all. */
  requires: readonly FeatureName[]
  /**
   * For kinds with alternative mechanisms: why this host cannot run the kind at all, or
   * undefined when it can (checked in addition to `requires`).
   */
  unavailableReason?(features: FeatureMap): string | undefined
  /** At most one active injection of this kind per concrete target. */
  exclusive: boolean
  gather(spec: Static<Spec>, target: ResolvedTarget, ctx: GatherContext): Promise<Facts>
  plan(spec: Static<Spec>, target: ResolvedTarget, ctx: PlanContext<Facts>): Static<Plan> & PlanBase
  undoFromPlan(plan: Static<Plan>): Static<State>
  apply(plan: Static<Plan>, ctx: ApplyContext): Promise<Static<State>>
  recover(state: Static<State>, ctx: RecoverContext): Promise<RecoverOutcome>
  /**
   * Optional, run at every start after the journal was reconciled: removes this mechanism's
   * resources that no open injection owns (left by an agent whose journal is gone), found by
   * their names alone. Kinds sharing a mechanism share one function: it runs once. Returns
   * what it removed, for the log.
   */
  sweep?(ctx: SweepContext): Promise<string[]>
}

/** One fault kind: its spec (protocol/faults/<kind>.ts) and its implementation (agent/faults/<kind>/). */
export interface FaultKind<
  Kind extends string = string,
  Spec extends TObject = TObject,
  Plan extends TObject = TObject,
  State extends TObject = TObject,
  Facts = unknown,
> extends FaultSpecDefinition<Kind, Spec>,
    FaultImplementation<Spec, Plan, State, Facts> {}

/** Pairs a kind's spec with its implementation, checking both against the contract and keeping their precise types. */
export function defineFault<Kind extends string, Spec extends TObject, Plan extends TObject, State extends TObject, Facts = undefined>(
  spec: FaultSpecDefinition<Kind, Spec>,
  implementation: FaultImplementation<Spec, Plan, State, Facts>,
): FaultKind<Kind, Spec, Plan, State, Facts> {
  return { ...spec, ...implementation }
}

/** gather for kinds whose plan needs nothing from the host beyond the resolved target. */
export async function noFacts(): Promise<undefined> {
  return undefined
}
