import { createRequire } from 'node:module'
import { constants as osConstants } from 'node:os'

/**
 * Bindings to the few libc entry points Node does not expose: pidfd_open(2) and
 * pidfd_send_signal(2), so a signal reaches exactly the process we resolved even if its pid
 * is reused meanwhile. Loaded lazily (koffi is only needed once a signal is sent) and bound
 * synchronously: these calls are short and never enter another namespace.
 *
 * The syscall numbers of pidfd_open (434) and pidfd_send_signal (424) are the same on every
 * architecture that has them (they were added after the syscall tables were unified in 5.1).
 */
const SYS_pidfd_send_signal = 424
const SYS_pidfd_open = 434

type SyscallFn = (...args: unknown[]) => number | bigint
export interface Libc {
  syscall: SyscallFn
  close: (fd: number) => number
  linkat: (olddirfd: number, oldpath: string, newdirfd: number, newpath: string, flags: number) => number
  futimens: (fd: number, times: Buffer) => number
  getsockopt: (fd: number, level: number, optname: number, optval: Buffer, optlen: Buffer) => number
  flock: (fd: number, operation: number) => number
  errno: () => number
}

let libc: Libc | undefined

/** libc through koffi, loaded on first use (agent/native/files.ts binds the file syscalls with it). */
export function load(): Libc {
  if (libc) return libc
  const require = createRequire(import.meta.url)
  const koffi = require('koffi') as typeof import('koffi')
  const lib = koffi.load('libc.so.6')
  libc = {
    syscall: lib.func('long syscall(long number, ...)') as SyscallFn,
    close: lib.func('int close(int fd)') as (fd: number) => number,
    linkat: lib.func('int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)') as Libc['linkat'],
    futimens: lib.func('int futimens(int fd, void *times)') as Libc['futimens'],
    getsockopt: lib.func('int getsockopt(int sockfd, int level, int optname, void *optval, void *optlen)') as Libc['getsockopt'],
    flock: lib.func('int flock(int fd, int operation)') as Libc['flock'],
    errno: () => koffi.errno(),
  }
  return libc
}

const errnoNames = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, value]) => [value, name]),
)

/** A Node-style error (code, errno, syscall) for a failed libc call. */
export function errnoError(syscall: string, errno: number, detail?: string): NodeJS.ErrnoException {
  const code = errnoNames.get(errno) ?? `E${errno}`
  const err: NodeJS.ErrnoException = new Error(`${syscall}${detail ? ` ${detail}` : ''}: ${code}`)
  err.code = code
  err.errno = -errno
  err.syscall = syscall
  return err
}

/** Opens a pidfd for pid; throws ESRCH when there is no such process, ENOSYS on kernels < 5.3. */
export function pidfdOpen(pid: number): number {
  const c = load()
  const fd = Number(c.syscall(SYS_pidfd_open, 'int', pid, 'uint', 0))
  if (fd < 0) throw errnoError('pidfd_open', c.errno(), String(pid))
  return fd
}

export function pidfdSendSignal(fd: number, signal: number): void {
  const c = load()
  const rc = Number(c.syscall(SYS_pidfd_send_signal, 'int', fd, 'int', signal, 'void *', null, 'uint', 0))
  if (rc < 0) throw errnoError('pidfd_send_signal', c.errno(), `signal ${signal}`)
}

export function closeFd(fd: number): void {
  load().close(fd)
}

/** True when this kernel and libc let us open pidfds (probed once, on our own pid). */
export function pidfdSupported(): { available: boolean; detail: string } {
  try {
    const fd = pidfdOpen(process.pid)
    closeFd(fd)
    return { available: true, detail: 'pidfd_open(2) and pidfd_send_signal(2) work' }
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    return { available: false, detail: `pidfd_open(2) failed (${e.code ?? e.message}); signals fall back to kill(2) after a start-time check` }
  }
}

const SOL_SOCKET = 1
/** SO_PEERCRED on x86-64 and arm64 (asm-generic/socket.h). */
const SO_PEERCRED = 17

/**
 * Who is at the other end of a Unix socket, as the kernel recorded it at connect(2)
 * (SO_PEERCRED: struct ucred { pid, uid, gid }); undefined when the kernel says nothing.
 */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } | undefined {
  const c = load()
  const cred = Buffer.alloc(12)
  const len = Buffer.alloc(4)
  len.writeUInt32LE(cred.length)
  if (c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, len) !== 0) return undefined
  return { pid: cred.readInt32LE(0), uid: cred.readUInt32LE(4), gid: cred.readUInt32LE(8) }
}

const LOCK_EX = 2
const LOCK_NB = 4

/**
 * flock(2) LOCK_EX | LOCK_NB on an open file: true when this process now holds it, false when
 * another open file description does (EWOULDBLOCK). The lock goes with the descriptor: closing
 * it, or the process ending in any way, releases it.
 */
export function tryLockExclusive(fd: number): boolean {
  const c = load()
  if (c.flock(fd, LOCK_EX | LOCK_NB) === 0) return true
  const errno = c.errno()
  if (errno === 11 /* EWOULDBLOCK */) return false
  throw errnoError('flock', errno)
}
