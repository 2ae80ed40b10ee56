import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'
import { readSecretFile } from './config.js'

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

/**
 * The token in `path`, made at first use: 256 random bits written with O_EXCL and mode 0600 (its
 * directory made 0700 if missing), so only root (or the owner) can read it. `generated` tells the
 * caller to say where it is.
 */
export function ensureTokenFile(path: string, what: string, prefix = ''): { token: string; generated: boolean } {
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
    const token = newSecret(prefix)
    let fd: number | undefined
    try {
      fd = openSync(path, 'wx', 0o600)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      // made meanwhile by another process: read that one
    }
    if (fd !== undefined) {
      try {
        writeSync(fd, `${token}\n`)
      } finally {
        closeSync(fd)
      }
      return { token, generated: true }
    }
  }
  return { token: readSecretFile(path, what), generated: false }
}
