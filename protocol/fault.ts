import { Type, type Static } from 'typebox'
import { faultSpecs } from './faults/index.js'

type Specs = typeof faultSpecs
/** The list's tuple of spec schemas, kept as a tuple so the union's static type is exact. */
type SchemasOf<T extends readonly unknown[]> = { -readonly [I in keyof T]: T[I] extends { specSchema: infer S } ? S : never }

/**
 * Fault specs, one schema per kind, taken from the list of kinds (protocol/faults/index.ts).
 * The discriminator is `kind`.
 */
export const FaultSpecSchema = Type.Union(faultSpecs.map((k) => k.specSchema) as unknown as SchemasOf<Specs>, {
  title: 'FaultSpec',
  description: "The fault: `kind` plus that kind's parameters",
})
export type FaultSpec = Static<typeof FaultSpecSchema>
