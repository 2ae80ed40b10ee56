import type { TObject } from 'typebox'
import { Value } from 'typebox/value'
import { FaultlineError } from '../../protocol/errors.js'
import type { FaultSpec } from '../../protocol/fault.js'
import type { FaultKindName } from '../../protocol/faults/index.js'
import type { Plan } from '../../protocol/plan.js'
import type { ResolvedTarget, TargetType } from '../../protocol/target.js'
import { faultImplementations, type AnyFaultKind } from './registry.js'
import type { ApplyContext, FaultKind, GatherContext, RecoverContext, RecoverOutcome, SweepContext } from './types.js'

/** One target of a request, planned: the plan and undo state to journal, and the apply of exactly that plan. */
export interface PlannedTarget {
  /** The plan as the journal keeps it and dryRun shows it. */
  plan: Plan
  /** What recovery undoes if the agent dies before apply returns (undoFromPlan). */
  undo: unknown
  /** Applies this plan; resolves with the undo state to journal. */
  apply(ctx: ApplyContext): Promise<unknown>
}

/**
 * A kind behind the one face the injector needs. Inputs from outside the kind's own code (the
 * request's spec, a journal row's state) are checked against the kind's own schemas before its
 * methods see them, so each method gets its precise types: no cast anywhere between the route
 * and the kernel.
 */
export interface KindRunner {
  readonly kind: FaultKindName
  readonly targets: readonly TargetType[]
  readonly recoverable: boolean
  readonly exclusive: boolean
  /** gather, then plan: everything up to (not including) touching the host. */
  plan(spec: FaultSpec, target: ResolvedTarget, ctx: GatherContext & { injectionId: string }): Promise<PlannedTarget>
  /** Undoes a journaled state (refused when it does not match the kind's state schema). */
  recover(state: unknown, ctx: RecoverContext): Promise<RecoverOutcome>
}

function runnerOf<Kind extends FaultKindName, Spec extends TObject, P extends TObject, S extends TObject, Facts>(
  k: FaultKind<Kind, Spec, P, S, Facts>,
): KindRunner {
  return {
    kind: k.kind,
    targets: k.targets,
    recoverable: k.recoverable,
    exclusive: k.exclusive,
    async plan(spec, target, ctx) {
      if (!Value.Check(k.specSchema, spec)) {
        const first = Value.Errors(k.specSchema, spec)[0]
        throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `fault${first?.instancePath ?? ''} ${first?.message ?? `is not a ${k.kind} spec`}`)
      }
      const facts = await k.gather(spec, target, ctx)
      const plan = k.plan(spec, target, { paths: ctx.paths, features: ctx.features, control: ctx.control, injectionId: ctx.injectionId, facts })
      return { plan: asJournalPlan(plan), undo: k.undoFromPlan(plan), apply: (applyCtx) => k.apply(plan, applyCtx) }
    },
    async recover(state, ctx) {
      if (!Value.Check(k.stateSchema, state)) throw new Error(`the journaled state does not match the ${k.kind} state schema`)
      return k.recover(state, ctx)
    },
  }
}

/** A plan is JSON with steps (and claims): the journal keeps it as the record it is. */
function asJournalPlan<T extends { steps: Plan['steps'] }>(plan: T): Plan {
  return { ...plan }
}

const runners = new Map<string, KindRunner>(
  Object.values(faultImplementations).map((k: AnyFaultKind) => [k.kind, runnerOf<FaultKindName, TObject, TObject, TObject, unknown>(k)]),
)

/** The runner of a kind a validated request names (every name of protocol/faults has one: agent/faults/registry.ts). */
export function runnerFor(kind: FaultKindName): KindRunner {
  const runner = runners.get(kind)
  if (!runner) throw new Error(`no implementation of ${kind}`)
  return runner
}

/** The runner of a kind a journal row names; undefined when this agent does not know it (a newer agent wrote it). */
export function runnerNamed(kind: string): KindRunner | undefined {
  return runners.get(kind)
}

/** The start-up sweeps of every kind that has one, each function once (kinds sharing a mechanism share it). */
export function sweeps(): ((ctx: SweepContext) => Promise<string[]>)[] {
  return [...new Set(Object.values(faultImplementations).flatMap((k: AnyFaultKind) => ('sweep' in k && k.sweep ? [k.sweep] : [])))]
}
