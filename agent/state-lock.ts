import { chmodSync, closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, readdirSync, statSync, writeSync } from 'node:fs'
import { ConfigError } from '../common/config.js'
import { join } from 'node:path'
import { FaultlineError } from '../protocol/errors.js'
import { tryLockExclusive } from './native/libc.js'

/**
 * One agent per state dir. The journal is the truth about what is on the host; a second agent on
 * the same journal would "recover at start" the faults the first one holds. So the state dir is
 * locked (flock on <state-dir>/agent.lock, which names the holder's pid) before the journal is
 * read, and a second agent stops at once, naming the first.
 */
export class StateDirLock {
  readonly #fd: number
  readonly path: string

  private constructor(fd: number, path: string) {
    this.#fd = fd
    this.path = path
  }

  static acquire(stateDir: string): StateDirLock {
    privateDir(stateDir)
    const path = join(stateDir, 'agent.lock')
    const fd = openSync(path, 'a+', 0o600)
    let held: boolean
    try {
      held = tryLockExclusive(fd)
    } catch (err) {
      closeSync(fd)
      throw err
    }
    if (!held) {
      closeSync(fd)
      const pid = readHolder(path)
      throw new FaultlineError(
        'FAULTLINE_ERR_STATE_DIR_BUSY',
        `another agent${pid ? ` (pid ${pid})` : ''} is running with the state dir ${stateDir}; stop it first (systemctl stop faultline-agent), or give this one another --state-dir`,
        { stateDir, ...(pid ? { pid } : {}) },
      )
    }
    ftruncateSync(fd, 0)
    writeSync(fd, `${process.pid}\n`)
    return new StateDirLock(fd, path)
  }

  release(): void {
    try {
      ftruncateSync(this.#fd, 0)
    } catch {
      /* nothing to clear */
    }
    closeSync(this.#fd)
  }
}

/** What the agent keeps in its state dir (journal, lock, token, socket, backups, link credential). */
const OURS = /^(journal\.sqlite(-wal|-shm|-journal)?|agent\.(lock|token|sock)|backups|server-credential\.json(\.tmp)?)$/

/**
 * The state dir is private (0700): the journal says what is on the host, the backups hold copies
 * of files the faults changed. A dir of ours that is not (made by an older agent, or by hand
 * under a loose umask) is tightened; a dir that holds other things is refused, never chmod-ed.
 */
function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const st = statSync(dir)
  if ((st.mode & 0o077) === 0) return
  const foreign = readdirSync(dir).filter((name) => !OURS.test(name))
  if ((st.mode & 0o002) !== 0 || st.uid !== (process.getuid?.() ?? 0) || foreign.length > 0) {
    throw new ConfigError(
      `the state dir ${dir} (mode ${(st.mode & 0o7777).toString(8)}) is open to others${foreign.length > 0 ? ` and holds other files (${foreign.slice(0, 3).join(', ')})` : ''}: the agent keeps its journal and backups private; give it a directory of its own, or chmod 700 ${dir}`,
    )
  }
  chmodSync(dir, 0o700)
}

function readHolder(path: string): number | undefined {
  try {
    const pid = Number(readFileSync(path, 'utf8').trim())
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}
