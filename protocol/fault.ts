import { Type, type Static } from 'typebox'
import { faultKinds } from '../agent/faults/registry.js'

type Kinds = typeof faultKinds
/** The registry's tuple of spec schemas, kept as a tuple so the union's static type is exact. */
type SpecsOf<T extends readonly unknown[]> = { -readonly [I in keyof T]: T[I] extends { specSchema: infer S } ? S : never }
type SpecSchemas = SpecsOf<Kinds>

/**
 * Fault specs, one schema per kind, taken from the fault registry (the only list of kinds).
 * The discriminator is `kind`.
 */
export const FaultSpecSchema = Type.Union(faultKinds.map((k) => k.specSchema) as unknown as SpecSchemas, {
  title: 'FaultSpec',
  description: "The fault: `kind` plus that kind's parameters",
})
export type FaultSpec = Static<typeof FaultSpecSchema>
