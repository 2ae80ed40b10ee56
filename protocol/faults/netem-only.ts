import { Type, type TLiteral, type TObject, type TProperties } from 'typebox'
import { NetworkFilterFields, networkKindTargets } from './fields.js'

/**
 * The schema of a kind only netem can do (corrupt, duplicate, reorder): its own fields plus the
 * network filters; netem acts on egress, so there is no direction.
 */
export function netemOnlySchema<Kind extends string, Extra extends TProperties>(kind: Kind, extra: Extra) {
  return Type.Object(
    { kind: Type.Literal(kind), ...extra, ...NetworkFilterFields },
    { additionalProperties: false, title: kind, description: 'netem acts on egress (packets leaving the device)' },
  ) as unknown as TObject<{ kind: TLiteral<Kind> } & Extra & typeof NetworkFilterFields>
}

export const netemOnlyTargets = networkKindTargets
