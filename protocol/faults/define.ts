import type { Static, TLiteral, TObject, TProperties } from 'typebox'
import type { TargetType } from '../target.js'

/**
 * The contract of one fault kind, as every party sees it: its name, what it does, the targets it
 * acts on, whether it can be taken back, and the schema of its parameters. Side-effect free:
 * the server, the CLI and the dashboard load it without any of the agent's host code. The agent
 * pairs each spec with its implementation (agent/faults/<kind>/), and the compiler checks that
 * every spec has one (agent/faults/registry.ts).
 */
export interface FaultSpecDefinition<Kind extends string = string, Schema extends TObject = TObject> {
  kind: Kind
  /** One line for `faultline inject --help`, the dashboard and the catalog. */
  summary: string
  /** Target types the kind acts on; anything else is refused with FAULTLINE_ERR_TARGET_UNSUPPORTED. */
  targets: readonly TargetType[]
  /** false: the fault cannot be taken back (a killed process stays dead); recovery only records that. */
  recoverable: boolean
  /** `kind` plus the kind's parameters, additionalProperties false. */
  specSchema: Schema
  /**
   * Parameters of a request that works as written (without `kind`): the CLI's help examples
   * come from it, and a test posts every one to the agent's schema.
   */
  example: Omit<Static<Schema>, 'kind'>
}

/** The schema every spec has: `kind` as a literal, the parameters, nothing else. */
export type KindSchema<Kind extends string, Props extends TProperties = TProperties> = TObject<{ kind: TLiteral<Kind> } & Props>

/** Checks a spec against the contract and keeps its precise types. */
export function defineFaultSpec<Kind extends string, Schema extends TObject<{ kind: TLiteral<Kind> }>>(
  def: FaultSpecDefinition<Kind, Schema>,
): FaultSpecDefinition<Kind, Schema> {
  return def
}
