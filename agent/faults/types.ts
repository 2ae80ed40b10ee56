import type { Logger } from 'pino'
import type { Static, TObject } from 'typebox'
import type { FeatureName } from '../../protocol/capabilities.js'
import type { PlanStep } from '../../protocol/plan.js'
import type { ResolvedTarget, TargetType } from '../../protocol/target.js'

/** Host paths come from configuration so tests can point them at fixture trees. */
export interface HostPaths {
  procRoot: string
}

export interface PlanContext {
  paths: HostPaths
}

export interface ApplyContext {
  log: Logger
  paths: HostPaths
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

/**
 * One fault kind. `plan` is pure and explains exactly what will be done (it backs dryRun);
 * `apply` returns the JSON state needed to undo; `recover` needs only that state and is
 * idempotent ("already gone" counts as recovered). `undoFromPlan` gives the state to undo with
 * when the agent died before `apply` returned, so a crash between any two steps is recoverable.
 */
export interface FaultKind<
  Kind extends string = string,
  Spec extends TObject = TObject,
  Plan extends TObject = TObject,
  State extends TObject = TObject,
> {
  kind: Kind
  summary: string
  specSchema: Spec
  planSchema: Plan
  stateSchema: State
  /** false: the fault cannot be taken back (a killed process stays dead); recovery is a no-op. */
  recoverable: boolean
  targets: readonly TargetType[]
  requires: readonly FeatureName[]
  /** At most one active injection of this kind per concrete target. */
  exclusive: boolean
  plan(spec: Static<Spec>, target: ResolvedTarget, ctx: PlanContext): Static<Plan> & { steps: PlanStep[] }
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
>(kind: FaultKind<Kind, Spec, Plan, State>): FaultKind<Kind, Spec, Plan, State> {
  return kind
}
