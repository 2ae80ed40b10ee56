/**
 * API roles, each including the ones before it:
 *   viewer   - every GET (agents, experiments, runs, events, audit)
 *   operator - experiments (apply, delete), runs (start, abort), halt
 *   admin    - API tokens, agent removal
 */
export const roles = ['viewer', 'operator', 'admin'] as const
export type Role = (typeof roles)[number]

export function roleAllows(have: Role, need: Role): boolean {
  return roles.indexOf(have) >= roles.indexOf(need)
}
