import { chmodSync, chownSync, lstatSync, mkdirSync, statSync, unlinkSync } from 'node:fs'
import { connect } from 'node:net'
import { dirname } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { ConfigError } from '../common/config.js'
import { AGENT_GROUP } from '../common/locations.js'
import { run } from './exec.js'

/**
 * The agent's Unix socket, the way dockerd and containerd keep theirs: created 0600 (the umask
 * is tightened while it is bound, so it is never reachable by others, not even for an instant),
 * then opened to the `faultline` group (0660 root:faultline) when that group exists. Whoever can
 * connect is trusted as root would be: the filesystem decides, as it does for docker.sock.
 */

/** Refuses a socket directory anyone may write to (a stranger could swap the socket). */
function checkDirectory(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 })
  const st = statSync(dir)
  if ((st.mode & 0o002) !== 0 && (st.mode & 0o1000) === 0) {
    throw new ConfigError(`${dir} is writable by every user: the agent's socket cannot live there; use another --listen unix:PATH`)
  }
}

/** Whether something accepts connections on the socket at `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/**
 * Before anything else at start: the socket's directory is safe, and no running agent holds the
 * socket (one that answers refuses this start; one left by an agent that died is removed).
 */
export async function prepareSocket(path: string): Promise<void> {
  checkDirectory(dirname(path))
  let existing
  try {
    existing = lstatSync(path)
  } catch {
    existing = undefined
  }
  if (existing) {
    if (!existing.isSocket()) throw new ConfigError(`${path} exists and is not a socket; remove it or choose another --listen unix:PATH`)
    if (await answers(path)) throw new ConfigError(`another agent is listening on ${path}; stop it first, or give this one another --listen`)
    unlinkSync(path)
  }
}

/** Binds `app` to the socket at `path` (see prepareSocket), then opens it to the faultline group. */
export async function listenOnSocket(app: FastifyInstance, path: string): Promise<{ mode: string; group?: string }> {
  const umask = process.umask(0o177)
  try {
    await app.listen({ path })
  } finally {
    process.umask(umask)
  }
  return restrict(path)
}

async function restrict(path: string): Promise<{ mode: string; group?: string }> {
  const root = (process.getuid?.() ?? 0) === 0
  const entry = root ? await run(['getent', 'group', AGENT_GROUP]).catch(() => undefined) : undefined
  const gid = entry?.code === 0 ? Number(entry.stdout.split(':')[2]) : NaN
  if (Number.isInteger(gid)) {
    chownSync(path, 0, gid)
    chmodSync(path, 0o660)
    return { mode: '0660', group: AGENT_GROUP }
  }
  chmodSync(path, 0o600)
  return { mode: '0600' }
}
