import { chmodSync, existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * The agent's own credential for the server, received in `welcome` at enrolment and kept in the
 * state dir (0600). It is bound to the server URL it came from: pointing the agent at another
 * server enrols it again.
 */
export interface LinkCredential {
  server: string
  agentId: string
  secret: string
}

export const CREDENTIAL_FILE = 'server-credential.json'

export function credentialPath(stateDir: string): string {
  return join(stateDir, CREDENTIAL_FILE)
}

export function loadCredential(stateDir: string, server: string): LinkCredential | undefined {
  const path = credentialPath(stateDir)
  if (!existsSync(path)) return undefined
  // Someone loosened the mode by hand: tighten it again rather than refuse to start.
  if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600)
  try {
    const value = JSON.parse(readFileSync(path, 'utf8')) as Partial<LinkCredential>
    if (typeof value.agentId !== 'string' || typeof value.secret !== 'string' || typeof value.server !== 'string') return undefined
    return value.server === server ? (value as LinkCredential) : undefined
  } catch {
    return undefined
  }
}

/** Written to a temporary file and renamed, so a crash never leaves half a credential. */
export function saveCredential(stateDir: string, credential: LinkCredential): void {
  const path = credentialPath(stateDir)
  const tmp = `${path}.tmp`
  writeFileSync(tmp, JSON.stringify(credential) + '\n', { mode: 0o600 })
  chmodSync(tmp, 0o600)
  renameSync(tmp, path)
}

/** The server no longer knows this credential (the agent was removed): forget it. */
export function forgetCredential(stateDir: string): void {
  rmSync(credentialPath(stateDir), { force: true })
}
