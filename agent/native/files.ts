import { closeSync } from 'node:fs'
import { errnoError, load } from './libc.js'
import { ownFdPath } from '../host-paths.js'

/**
 * The three libc entry points the file faults need and Node does not expose:
 *
 *  - openat2(2) with RESOLVE_IN_ROOT: a path inside a container (or any process's root) is
 *    looked up as that container sees it — absolute symlinks and ".." stay inside its root —
 *    so no symlink a container plants can make the agent touch a host file;
 *  - linkat(2) with AT_SYMLINK_FOLLOW on /proc/self/fd/N: gives an O_TMPFILE inode its name
 *    only once it is complete, so a crash never leaves a half-made file behind;
 *  - futimens(2): puts atime and mtime back to the nanosecond (fs.futimes takes a double of
 *    seconds and loses the last digits).
 *
 * Bound through libc.ts (loaded lazily, called synchronously: each call is one
 * short syscall on a file descriptor). openat2 is syscall 437 on every architecture (added after the tables were
 * unified in 5.1); it needs Linux 5.6.
 */
const SYS_openat2 = 437

export const O_PATH = 0o10000000
export const O_DIRECTORY = 0o200000
export const O_NOFOLLOW = 0o400000
export const O_NOATIME = 0o1000000
export const O_CLOEXEC = 0o2000000
export const O_TMPFILE = 0o20000000 | O_DIRECTORY
export const O_NONBLOCK = 0o4000

/** Absolute symlinks and ".." are resolved as if the directory fd were "/". */
export const RESOLVE_IN_ROOT = 0x10
/** /proc/<pid>/fd/N-style "magic links" are refused (they jump anywhere). */
export const RESOLVE_NO_MAGICLINKS = 0x02

const AT_FDCWD = -100
const AT_SYMLINK_FOLLOW = 0x400


/** openat2(2): opens `path` relative to `dirfd` with the given resolve flags; throws a Node-style error. */
export function openat2(dirfd: number, path: string, flags: number, resolve: number, mode = 0): number {
  const c = load()
  const how = Buffer.alloc(24) // struct open_how { u64 flags; u64 mode; u64 resolve; }
  how.writeBigUInt64LE(BigInt(flags), 0)
  how.writeBigUInt64LE(BigInt(mode), 8)
  how.writeBigUInt64LE(BigInt(resolve), 16)
  for (let attempt = 0; ; attempt++) {
    const fd = Number(c.syscall(SYS_openat2, 'int', dirfd, 'str', path, 'void *', how, 'size_t', how.length))
    if (fd >= 0) return fd
    const errno = c.errno()
    // EAGAIN: a rename elsewhere raced the ".." checks of RESOLVE_IN_ROOT; the kernel asks to retry.
    if (errno === 11 && attempt < 8) continue
    throw errnoError('openat2', errno, path)
  }
}

/** Names the (O_TMPFILE) inode open as `fd` as `name` in the directory `dirfd`; EEXIST if taken. */
export function linkFd(fd: number, dirfd: number, name: string): void {
  const c = load()
  if (c.linkat(AT_FDCWD, ownFdPath(fd), dirfd, name, AT_SYMLINK_FOLLOW) !== 0) throw errnoError('linkat', c.errno(), name)
}

/** Sets atime and mtime, in nanoseconds since the epoch, on an open file. */
export function futimens(fd: number, atimeNs: bigint, mtimeNs: bigint): void {
  const c = load()
  const times = Buffer.alloc(32) // struct timespec[2]
  for (const [i, ns] of [atimeNs, mtimeNs].entries()) {
    // tv_nsec must be in [0, 1e9), also for times before 1970
    let sec = ns / 1_000_000_000n
    let nsec = ns % 1_000_000_000n
    if (nsec < 0n) {
      sec -= 1n
      nsec += 1_000_000_000n
    }
    times.writeBigInt64LE(sec, i * 16)
    times.writeBigInt64LE(nsec, i * 16 + 8)
  }
  if (c.futimens(fd, times) !== 0) throw errnoError('futimens', c.errno())
}

/**
 * For the capability probe: whether this kernel has openat2(2) with RESOLVE_IN_ROOT (Linux
 * 5.6), which every disk and file fault resolves its paths with.
 */
export function openat2Supported(): { available: boolean; detail: string } {
  try {
    const fd = openat2(AT_FDCWD, '/', O_DIRECTORY | O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    closeSync(fd)
    return { available: true, detail: 'openat2(2) with RESOLVE_IN_ROOT works' }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    return { available: false, detail: `openat2(2) failed (${code ?? (err as Error).message}): disk and file faults need Linux 5.6 or later` }
  }
}
