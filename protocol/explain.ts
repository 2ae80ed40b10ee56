import { FaultlineError } from './errors.js'
import { faultKindNames, isFaultKindName } from './faults/index.js'
import { targetTypes } from './target.js'

/**
 * Names an unknown fault kind or target type plainly, instead of a union's "must match a schema
 * in anyOf" listing every kind's fields. Runs before schema validation on any body that carries
 * `fault` and `target` (an injection request, an experiment); throws FAULTLINE_ERR_VALIDATION.
 */
export function explainUnknownNames(body: unknown, speaker: 'agent' | 'server'): void {
  if (!body || typeof body !== 'object') return
  const { fault, target } = body as { fault?: unknown; target?: unknown }
  const kind = fault && typeof fault === 'object' ? (fault as { kind?: unknown }).kind : undefined
  if (typeof kind === 'string' && !isFaultKindName(kind)) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `unknown fault kind ${JSON.stringify(kind.slice(0, 40))}; this ${speaker} knows: ${faultKindNames.join(', ')}`)
  }
  const type = target && typeof target === 'object' ? (target as { type?: unknown }).type : undefined
  if (typeof type === 'string' && !(targetTypes as readonly string[]).includes(type)) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `unknown target type ${JSON.stringify(type.slice(0, 40))}; this ${speaker} knows: ${targetTypes.join(', ')}`)
  }
}
