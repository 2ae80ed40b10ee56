import type { Logger } from 'pino'
import type { Static, TObject } from 'typebox'
import type { FeatureMap, FeatureName } from '../../protocol/capabilities.js'
import type { PlanStep } from '../../protocol/plan.js'
import type { ResolvedTarget, TargetType } from '../../protocol/target.js'

/** Host paths come from configuration so tests can point them at fixture trees. */
export interface HostPaths {
  procRoot: string
  /** Where `ip netns add` leaves named network namespaces. */
  netnsDir: string
  /** containerd's task state (/run/containerd/io.containerd.runtime.v2.task): containerd containers are recognised by it. */
  containerdTaskDir: string
}

/** What network faults must never cut: the agent's own control links. */
export interface ControlChannel {
  /** The agent's API port, exempt when the target is the agent's own network namespace. */
  apiPort?: number
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
 * One fault kind. `gather` (optional, may do I/O) collects the host facts the plan needs;
 * `plan` is pure and explains exactly what will be done (it backs dryRun); `apply` returns the
 * JSON state needed to undo; `recover` needs only that state and is idempotent ("already gone"
 * counts as recovered). `undoFromPlan` gives the state to undo with when the agent died before
 * `apply` returned, so a crash between any two steps is recoverable.
 */
export interface FaultKind<
  Kind extends string = string,
  Spec extends TObject = TObject,
  Plan extends TObject = TObject,
  State extends TObject = TObject,
  Facts = undefined,
> {
  kind: Kind
  summary: string
  specSchema: Spec
  planSchema: Plan
  stateSchema: State
  /** false: the fault cannot be taken back (a killed process stays dead); recovery is a no-op. */
  recoverable: boolean
  targets: readonly TargetType[]
  /** Features that must all be available for the kind to be offered at all. */
  requires: readonly FeatureName[]
  /**
   * For kinds with alternative mechanisms: why this host cannot run the kind at all, or
   * undefined when it can (checked in addition to `requires`).
   */
  unavailableReason?(features: FeatureMap): string | undefined
  /** At most one active injection of this kind per concrete target. */
  exclusive: boolean
  gather?(spec: Static<Spec>, target: ResolvedTarget, ctx: GatherContext): Promise<Facts>
  plan(spec: Static<Spec>, target: ResolvedTarget, ctx: PlanContext<Facts>): Static<Plan> & PlanBase
  undoFromPlan(plan: Static<Plan>): Static<State>
  apply(plan: Static<Plan>, ctx: ApplyContext): Promise<Static<State>>
  recover(state: Static<State>, ctx: RecoverContext): Promise<RecoverOutcome>
}

/** Identity function that checks a kind against the contract and keeps its precise types. */
export function defineFault<
  Kind extends string,
  Spec extends TObject,
  Plan extends TObject,
  State extends TObject,
  Facts = undefined,
>(kind: FaultKind<Kind, Spec, Plan, State, Facts>): FaultKind<Kind, Spec, Plan, State, Facts> {
  return kind
}
