import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

/**
 * Secrets on the wire: bearer tokens (agent API, server API tokens, enrolment) and agent
 * credentials. Compared in constant time, stored only as hashes, never logged.
 */

/** Constant-time comparison: both sides are hashed first so their lengths never leak either. */
export function tokensEqual(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest()
  const b = createHash('sha256').update(expected).digest()
  return timingSafeEqual(a, b)
}

/** How a secret is kept at rest: its sha256, hex. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex')
}

/** Whether `secret` is the one whose hashSecret() is `storedHash` (constant time). */
export function secretMatchesHash(secret: string, storedHash: string): boolean {
  const a = Buffer.from(hashSecret(secret), 'hex')
  const b = Buffer.from(storedHash, 'hex')
  return a.length === b.length && timingSafeEqual(a, b)
}

/** A new random secret: 256 bits, base64url, with an optional recognisable prefix ("flt_"). */
export function newSecret(prefix = ''): string {
  return `${prefix}${randomBytes(32).toString('base64url')}`
}
