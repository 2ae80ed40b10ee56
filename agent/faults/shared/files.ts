import { createHash } from 'node:crypto'
import {
  closeSync,
  constants as fsConstants,
  fchmodSync,
  fchownSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  read,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  statfsSync,
  unlinkSync,
  write,
  type BigIntStats,
} from 'node:fs'
import { join, posix } from 'node:path'
import { promisify } from 'node:util'
import { Type, type Static } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import { pathProblem } from '../../../protocol/paths.js'
import { describeTarget, type ResolvedTarget } from '../../../protocol/target.js'
import { readCgroupMounts } from '../../targets/cgroupfs.js'
import { readStat } from '../../targets/procfs.js'
import type { GatherContext } from '../types.js'
import {
  O_CLOEXEC,
  O_DIRECTORY,
  O_NOATIME,
  O_NOFOLLOW,
  O_PATH,
  O_TMPFILE,
  RESOLVE_IN_ROOT,
  RESOLVE_NO_MAGICLINKS,
  futimens,
  linkFd,
  openat2,
} from '../../native/files.js'
import { ownFdPath } from '../../host-paths.js'

/*
 * What the disk and file faults share: how a target's files are reached (its root), how a path
 * is resolved inside that root without ever leaving it, which paths are refused, and how a
 * file is backed up and put back byte-identical (content, owner, mode, atime and mtime).
 *
 * Every lookup is relative to an O_PATH descriptor of the target's root and goes through
 * openat2(RESOLVE_IN_ROOT): for a container, "/etc/x" and any symlink in it resolve exactly as
 * they do for the container's own processes, and neither "/.." nor an absolute symlink can reach
 * a host file. The final component is never followed (O_NOFOLLOW). Operations that need a name
 * (rename, unlink, link) go through /proc/self/fd/<parent dir fd>/<name>, so the directory they
 * act in is the one that was resolved, whatever is renamed meanwhile.
 */

const strict = { additionalProperties: false } as const

// ---- roots -----------------------------------------------------------------------------------

export const FileRootSchema = Type.Union([
  Type.Object({ type: Type.Literal('host') }, strict),
  Type.Object(
    {
      type: Type.Literal('proc'),
      pid: Type.Integer({ minimum: 1 }),
      startTime: Type.Integer({ minimum: 0 }),
      /** For messages: "container web (docker)". */
      what: Type.String(),
      /**
       * A container's cgroup.procs: if its init is gone by recovery (the container restarted),
       * any process still in that cgroup leads to the same filesystem.
       */
      cgroupProcs: Type.Optional(Type.String()),
    },
    strict,
  ),
])
export type FileRoot = Static<typeof FileRootSchema>

/** Where a target's files are: the host's "/", or /proc/<pid>/root of its (init) process. */
export function fileRootOf(target: ResolvedTarget, procRoot: string, kind: string): FileRoot {
  switch (target.type) {
    case 'host':
      return { type: 'host' }
    case 'container': {
      const cgroupProcs = cgroupProcsOf(target.cgroupPaths, procRoot)
      return { type: 'proc', pid: target.initPid, startTime: target.initStartTime, what: describeTarget(target), ...(cgroupProcs ? { cgroupProcs } : {}) }
    }
    case 'process':
      // A process that sees the agent's own filesystem is just the host; one in another mount
      // namespace or chroot is reached through its root, like a container.
      return sharesAgentRoot(procRoot, target.pid) ? { type: 'host' } : { type: 'proc', pid: target.pid, startTime: target.startTime, what: describeTarget(target) }
    default:
      throw new FaultlineError('FAULTLINE_ERR_TARGET_UNSUPPORTED', `${kind} acts on the host, a process or a container, not on a ${target.type}`)
  }
}

function sharesAgentRoot(procRoot: string, pid: number): boolean {
  try {
    const same = (a: string, b: string) => {
      const x = statSync(a)
      const y = statSync(b)
      return x.dev === y.dev && x.ino === y.ino
    }
    return same(`${procRoot}/${pid}/ns/mnt`, `${procRoot}/self/ns/mnt`) && same(`${procRoot}/${pid}/root`, `${procRoot}/self/root`)
  } catch {
    return false
  }
}

function cgroupProcsOf(cgroupPaths: Record<string, string>, procRoot: string): string | undefined {
  const mounts = readCgroupMounts(procRoot)
  for (const [hierarchy, path] of Object.entries(cgroupPaths)) {
    if (!path || path === '/') continue
    const mount = hierarchy === 'unified' ? mounts.v2 : hierarchy.split(',').map((c) => mounts.v1.get(c)).find(Boolean)
    if (mount) return join(mount, path, 'cgroup.procs')
  }
  return undefined
}

/** " in container web (docker)" or "" for the host: appended to paths in messages. */
export function rootText(root: FileRoot): string {
  return root.type === 'host' ? '' : ` in ${root.what}`
}

interface OpenedRoot {
  fd: number
  /** Set when a container's files were reached through another of its processes. */
  note?: string
}

/**
 * Opens the root as an O_PATH directory. For a process root the start time is checked after the
 * open, so the descriptor is the root of exactly the recorded process. With `successor` (at
 * recovery), a container whose init is gone is reached through a process still in its cgroup.
 */
function openRoot(root: FileRoot, procRoot: string, successor: boolean): OpenedRoot {
  if (root.type === 'host') return { fd: openSync('/', O_PATH | O_DIRECTORY | O_CLOEXEC) }
  const direct = openProcRoot(procRoot, root.pid, root.startTime)
  if (direct !== undefined) return { fd: direct }
  if (successor && root.cgroupProcs) {
    let pids: number[] = []
    try {
      pids = readFileSync(root.cgroupProcs, 'utf8').split('\n').filter(Boolean).map(Number).sort((a, b) => a - b)
    } catch {
      /* the cgroup is gone with the container */
    }
    for (const pid of pids) {
      const stat = readStat(procRoot, pid)
      if (!stat) continue
      const fd = openProcRoot(procRoot, pid, stat.startTime)
      if (fd !== undefined) return { fd, note: `${root.what}: its init (pid ${root.pid}) had gone; its files were reached through pid ${pid} of the same cgroup` }
    }
  }
  throw new FaultlineError('FAULTLINE_ERR_TARGET_GONE', `${root.what} is gone (pid ${root.pid} has exited), so its files cannot be reached`)
}

function openProcRoot(procRoot: string, pid: number, startTime: number): number | undefined {
  let fd: number
  try {
    fd = openSync(`${procRoot}/${pid}/root`, O_PATH | O_DIRECTORY | O_CLOEXEC)
  } catch {
    return undefined
  }
  if (readStat(procRoot, pid)?.startTime === startTime) return fd
  closeSync(fd)
  return undefined
}

// ---- paths -------------------------------------------------------------------------------------

/** The path as given must be absolute and already normal (protocol/paths.ts), so what the plan shows is what is used. */
export function checkPathText(path: string): void {
  const problem = pathProblem(path)
  if (problem) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', problem)
}

const PROTECTED_PREFIXES = ['/proc', '/sys', '/dev']

export function underProtectedPrefix(path: string): string | undefined {
  return PROTECTED_PREFIXES.find((p) => path === p || path.startsWith(`${p}/`))
}

/** statfs f_type of filesystems whose files are kernel interfaces, not data. */
const PSEUDO_FILESYSTEMS = new Map<number, string>([
  [0x9fa0, 'procfs'],
  [0x62656572, 'sysfs'],
  [0x27e0eb, 'cgroupfs'],
  [0x63677270, 'cgroup2'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x73636673, 'securityfs'],
  [0xcafe4a11, 'bpffs'],
  [0x62656570, 'configfs'],
  [0xde5e81e4, 'efivarfs'],
  [0x6165676c, 'pstore'],
  [0x1cd1, 'devpts'],
  [0x19800202, 'mqueue'],
  [0x42494e4d, 'binfmt_misc'],
  [0x65735543, 'fusectl'],
  [0xf97cff8c, 'selinuxfs'],
  [0x6e736673, 'nsfs'],
])

/** Facts about the state dir, taken once per request. */
export interface StateDirFacts {
  path: string
  dev: string
  ino: string
}

export function stateDirFacts(ctx: GatherContext): StateDirFacts {
  if (!ctx.stateDir) throw new FaultlineError('FAULTLINE_ERR_INTERNAL', 'disk and file faults need the agent state dir in the gather context')
  mkdirSync(ctx.stateDir, { recursive: true, mode: 0o700 })
  const path = realpathSync(ctx.stateDir)
  const st = statSync(path, { bigint: true })
  return { path, dev: String(st.dev), ino: String(st.ino) }
}

export function backupDirOf(stateDir: string, injectionId: string): string {
  return join(stateDir, 'backups', injectionId)
}

/**
 * Refuses what must never be touched: anything inside the agent's state dir (found by walking up
 * from the directory by device and inode, so a bind mount of it inside a container is caught
 * too); anything on a kernel pseudo filesystem (procfs, sysfs, cgroupfs, ...), even with
 * `force`: writing there is an action, not data, and no backup can take an action back (a write
 * to /sys/kernel/profiling, say, turns kernel profiling on until the next boot); and — unless
 * `force` — on the host, anything whose real path is under /proc, /sys or /dev (/dev/shm).
 */
function checkNotProtected(dirFd: number, file: { fd?: number; path: string }, root: FileRoot, stateDir: StateDirFacts, force: boolean): void {
  let dir = ownFdPath(dirFd)
  let previous = ''
  for (let depth = 0; depth < 256; depth++) {
    const st = statSync(dir, { bigint: true })
    const id = `${st.dev}:${st.ino}`
    if (id === `${stateDir.dev}:${stateDir.ino}`) {
      throw new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${file.path}${rootText(root)} is inside the agent's state dir ${stateDir.path}; Faultline never faults its own journal and backups`)
    }
    if (id === previous) break
    previous = id
    dir += '/..'
  }
  const probe = ownFdPath(file.fd ?? dirFd)
  const fsName = PSEUDO_FILESYSTEMS.get(Number(statfsSync(probe).type))
  if (fsName) {
    throw new FaultlineError(
      'FAULTLINE_ERR_PATH_FORBIDDEN',
      `${file.path}${rootText(root)} is on ${fsName}: a kernel interface, where a write is an action that no backup can take back; Faultline never writes there, even with force`,
    )
  }
  if (root.type === 'host' && !force) {
    const real = readlinkSync(probe)
    const prefix = underProtectedPrefix(real)
    if (prefix) throw new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${file.path} is ${real}, under ${prefix}; add force: true if you really mean it`)
  }
}

/** A path resolved inside a root: its directory (O_PATH) and, if it exists, the entry (O_PATH, not followed). */
export interface Resolved {
  rootFd: number
  dirFd: number
  name: string
  /** O_PATH descriptor of the entry itself (a symlink is not followed); undefined if there is none. */
  fd?: number
  stat?: BigIntStats
  /** /proc/self/fd/<dir>/<name>: the entry's name in exactly the resolved directory. */
  entryPath: string
  note?: string
}

function lookupError(err: unknown, path: string, root: FileRoot, what: string): unknown {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOENT') return new FaultlineError('FAULTLINE_ERR_PATH_NOT_FOUND', `${what} ${path} does not exist${rootText(root)}`)
  if (code === 'ENOTDIR') return new FaultlineError('FAULTLINE_ERR_PATH_NOT_FOUND', `a component of ${path} is not a directory${rootText(root)}`)
  if (code === 'ELOOP') return new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${path}${rootText(root)}: too many symbolic links, or a /proc "magic link", on the way`)
  if (code === 'ENOSYS') return new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', 'disk and file faults need openat2(2) (Linux 5.6 or later) to resolve paths safely inside a target')
  return err
}

/** The directory `dirPath` resolved inside the root (O_PATH), and how the root was reached. */
export interface ResolvedDir {
  rootFd: number
  dirFd: number
  note?: string
}

/** Resolves the directory `dirPath` inside the root and calls `fn`; every descriptor is closed afterwards. */
export async function withDirectory<T>(
  root: FileRoot,
  procRoot: string,
  dirPath: string,
  opts: { successor?: boolean },
  fn: (d: ResolvedDir, close: (fd: number) => number) => T | Promise<T>,
): Promise<T> {
  const opened = openRoot(root, procRoot, opts.successor ?? false)
  const fds = [opened.fd]
  try {
    let dirFd: number
    try {
      dirFd = openat2(opened.fd, dirPath, O_PATH | O_DIRECTORY | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    } catch (err) {
      throw lookupError(err, dirPath, root, 'directory')
    }
    fds.push(dirFd)
    const track = (fd: number) => (fds.push(fd), fd)
    return await fn({ rootFd: opened.fd, dirFd, ...(opened.note ? { note: opened.note } : {}) }, track)
  } finally {
    for (const fd of fds.reverse()) closeSync(fd)
  }
}

/**
 * Resolves `path` inside the root and calls `fn` with it; every descriptor is closed afterwards.
 * The directory must exist; the entry may be missing (fn sees fd undefined).
 */
export function withResolved<T>(root: FileRoot, procRoot: string, path: string, opts: { successor?: boolean }, fn: (r: Resolved) => T | Promise<T>): Promise<T> {
  const name = posix.basename(path)
  return withDirectory(root, procRoot, posix.dirname(path), opts, (d, track) => {
    const entryPath = ownFdPath(d.dirFd, name)
    const resolved: Resolved = { ...d, name, entryPath }
    if (name !== '') {
      try {
        // One plain name in an already resolved directory: nothing on the way to follow.
        resolved.fd = track(openat2(d.dirFd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC, RESOLVE_NO_MAGICLINKS))
        resolved.stat = fstatSync(resolved.fd, { bigint: true })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw lookupError(err, path, root, 'file')
      }
    }
    return fn(resolved)
  })
}

/** Checks for a file fault: the entry exists, is a regular file, and is not protected. */
export function requireRegularFile(r: Resolved, path: string, root: FileRoot, stateDir: StateDirFacts, force: boolean): BigIntStats {
  if (r.fd === undefined || !r.stat) throw new FaultlineError('FAULTLINE_ERR_PATH_NOT_FOUND', `file ${path} does not exist${rootText(root)}`)
  checkNotProtected(r.dirFd, { fd: r.fd, path }, root, stateDir, force)
  if (r.stat.isSymbolicLink()) {
    throw new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${path}${rootText(root)} is a symbolic link; Faultline does not follow a final symlink: name the file it points to`)
  }
  if (!r.stat.isFile()) throw new FaultlineError('FAULTLINE_ERR_PATH_FORBIDDEN', `${path}${rootText(root)} is a ${fileType(r.stat)}, not a regular file`)
  return r.stat
}

/** Checks for disk-fill: the resolved directory (an O_PATH dir fd) is not protected. */
export function checkDirectory(dirFd: number, path: string, root: FileRoot, stateDir: StateDirFacts, force: boolean): void {
  checkNotProtected(dirFd, { fd: dirFd, path }, root, stateDir, force)
}

function fileType(st: BigIntStats): string {
  if (st.isDirectory()) return 'directory'
  if (st.isSymbolicLink()) return 'symbolic link'
  if (st.isCharacterDevice()) return 'character device'
  if (st.isBlockDevice()) return 'block device'
  if (st.isFIFO()) return 'FIFO'
  if (st.isSocket()) return 'socket'
  return 'special file'
}

// ---- metadata ---------------------------------------------------------------------------------

/** What "byte-identical" covers: content (sha256 + size), owner, mode, atime and mtime (ns). */
export const FileMetaSchema = Type.Object(
  {
    dev: Type.String({ description: 'st_dev, decimal' }),
    ino: Type.String({ description: 'st_ino, decimal (may exceed 2^53)' }),
    size: Type.Integer({ minimum: 0 }),
    mode: Type.Integer({ description: 'Permission bits (07777)' }),
    uid: Type.Integer(),
    gid: Type.Integer(),
    atimeNs: Type.String(),
    mtimeNs: Type.String(),
    sha256: Type.Optional(Type.String()),
  },
  strict,
)
export type FileMeta = Static<typeof FileMetaSchema>

export function metaOf(st: BigIntStats, sha256?: string): FileMeta {
  return {
    dev: String(st.dev),
    ino: String(st.ino),
    size: Number(st.size),
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    atimeNs: String(st.atimeNs),
    mtimeNs: String(st.mtimeNs),
    ...(sha256 ? { sha256 } : {}),
  }
}

export const sameInode = (st: BigIntStats, meta: { dev: string; ino: string }) => String(st.dev) === meta.dev && String(st.ino) === meta.ino

export const octal = (mode: number) => mode.toString(8).padStart(4, '0')

export function describeMeta(m: FileMeta): string {
  return `${m.size} bytes, mode ${octal(m.mode)}, owner ${m.uid}:${m.gid}, mtime ${new Date(Number(BigInt(m.mtimeNs) / 1_000_000n)).toISOString()}`
}

/** The claim that keeps two file faults off one inode at the same time. */
export const fileClaim = (meta: { dev: string; ino: string }) => `file:${meta.dev}:${meta.ino}`

// ---- reading and writing ----------------------------------------------------------------------

const readAsync = promisify(read)
const writeAsync = promisify(write)
const CHUNK = 1 << 20

/** Re-opens an O_PATH descriptor for real I/O (through /proc/self/fd: exactly the same inode). */
export function reopen(pathFd: number, flags: number): number {
  const path = ownFdPath(pathFd)
  try {
    // O_NOATIME: the backup read must not move the atime it is about to record.
    return openSync(path, flags | O_NOATIME | O_CLOEXEC)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err
    return openSync(path, flags | O_CLOEXEC)
  }
}

/** Writes all of `buf` at `position` (null: at the file position, i.e. the end with O_APPEND). */
async function writeAll(fd: number, buf: Buffer, position: number | null): Promise<void> {
  let done = 0
  while (done < buf.length) {
    const { bytesWritten } = await writeAsync(fd, buf, done, buf.length - done, position === null ? null : position + done)
    done += bytesWritten
  }
}

/** Streams [0, length) of `src` (or all of it) through sha256, optionally copying it to `dst` at the same offsets. */
export async function hashFd(src: number, opts: { length?: number; copyTo?: number } = {}): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256')
  const buf = Buffer.allocUnsafe(CHUNK)
  let pos = 0
  for (;;) {
    const want = opts.length === undefined ? CHUNK : Math.min(CHUNK, opts.length - pos)
    if (want <= 0) break
    const { bytesRead } = await readAsync(src, buf, 0, want, pos)
    if (bytesRead === 0) break
    const chunk = buf.subarray(0, bytesRead)
    hash.update(chunk)
    if (opts.copyTo !== undefined) await writeAll(opts.copyTo, chunk, pos)
    pos += bytesRead
  }
  return { sha256: hash.digest('hex'), size: pos }
}

export async function readAll(fd: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let pos = 0
  for (;;) {
    const buf = Buffer.allocUnsafe(CHUNK)
    const { bytesRead } = await readAsync(fd, buf, 0, CHUNK, pos)
    if (bytesRead === 0) break
    chunks.push(buf.subarray(0, bytesRead))
    pos += bytesRead
  }
  return Buffer.concat(chunks)
}

export async function readAt(fd: number, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length)
  let done = 0
  while (done < length) {
    const { bytesRead } = await readAsync(fd, buf, done, length - done, position + done)
    if (bytesRead === 0) break
    done += bytesRead
  }
  return buf.subarray(0, done)
}

export { writeAll }

export const sha256Of = (data: Buffer) => createHash('sha256').update(data).digest('hex')

/** Writes `content` over the file from offset 0 and cuts it to that length: same inode, same links. */
export async function overwrite(fd: number, content: Buffer): Promise<void> {
  await writeAll(fd, content, 0)
  ftruncateSync(fd, content.length)
  fsyncSync(fd)
}

/** Copies the backup over the open file in place (same inode), then cuts it to the backup's length. */
export async function overwriteFromBackup(fd: number, backupPath: string): Promise<void> {
  const src = openSync(backupPath, fsConstants.O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
  try {
    const { size } = await hashFd(src, { copyTo: fd })
    ftruncateSync(fd, size)
    fsyncSync(fd)
  } finally {
    closeSync(src)
  }
}

/** Owner, then mode (chown clears set-id bits), then times last (writes move mtime). */
export function restoreMeta(fd: number, meta: FileMeta, opts: { times: boolean }): void {
  const st = fstatSync(fd)
  if (st.uid !== meta.uid || st.gid !== meta.gid) fchownSync(fd, meta.uid, meta.gid)
  fchmodSync(fd, meta.mode)
  if (opts.times) futimens(fd, BigInt(meta.atimeNs), BigInt(meta.mtimeNs))
  fsyncSync(fd)
}

// ---- backups ----------------------------------------------------------------------------------

export const BACKUP_FILE = 'original'

/** Creates <stateDir>/backups/<id>/ afresh (a leftover of an attempt that died is discarded). */
export function freshBackupDir(backupDir: string): void {
  rmSync(backupDir, { recursive: true, force: true })
  mkdirSync(backupDir, { recursive: true, mode: 0o700 })
}

export function removeBackupDir(backupDir: string): void {
  rmSync(backupDir, { recursive: true, force: true })
}

export function exists(path: string): boolean {
  try {
    lstatSync(path)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  }
}

/** Copies the open file into the backup dir, hashing it; refuses if the file changed meanwhile. */
export async function backUpContent(fd: number, backupDir: string, path: string): Promise<FileMeta> {
  const before = fstatSync(fd, { bigint: true })
  const dst = openSync(join(backupDir, BACKUP_FILE), fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
  let sha256: string
  try {
    sha256 = (await hashFd(fd, { copyTo: dst })).sha256
    fsyncSync(dst)
  } finally {
    closeSync(dst)
  }
  syncDir(backupDir)
  const after = fstatSync(fd, { bigint: true })
  if (after.size !== before.size || after.mtimeNs !== before.mtimeNs) {
    throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `${path} changed while it was being backed up (someone is writing it); nothing was changed, try again`)
  }
  return metaOf(before, sha256)
}

export function syncDir(dir: string): void {
  const fd = openSync(dir, fsConstants.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** Room for a backup of `bytes` in the state dir, keeping 64 MiB free for the journal. */
export function checkBackupRoom(stateDir: string, bytes: number, path: string): void {
  const fs = statfsSync(stateDir)
  const avail = fs.bavail * fs.bsize
  const keep = 64 * 1024 * 1024
  if (bytes + keep > avail) {
    throw new FaultlineError(
      'FAULTLINE_ERR_DISK_RESERVE',
      `the backup of ${path} (${bytes} bytes) does not fit in the state dir ${stateDir} (${avail} bytes available, 64 MiB kept free for the journal)`,
    )
  }
}

/** A file being made in a directory, invisible (or under a temporary name) until it is published. */
export interface NewFile {
  fd: number
  /** The temporary name it has meanwhile, when the filesystem lacks O_TMPFILE. */
  tempName?: string
  /** Gives it `name`; EEXIST if the name is taken, unless `replace` (then atomically replaced). */
  publish(name: string, replace: boolean): void
}

/** The temporary name a new file of an injection has while it is made (and, without O_TMPFILE, visible). */
export const tempNameOf = (injectionId: string) => `.faultline-tmp-${injectionId}`

/**
 * Makes a new file in the directory as an O_TMPFILE inode: it has no name until it is complete,
 * so a crash never leaves a half-made file behind. Filesystems without O_TMPFILE get the
 * temporary name (tempNameOf: it carries the injection id) instead, which recovery removes.
 */
export function newFileIn(dirFd: number, tempName: string, mode = 0o600): NewFile {
  const dir = ownFdPath(dirFd)
  try {
    const fd = openSync(dir, O_TMPFILE | fsConstants.O_RDWR | O_CLOEXEC, mode)
    return {
      fd,
      publish(name, replace) {
        try {
          linkFd(fd, dirFd, name)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !replace) throw err
          rmSync(`${dir}/${tempName}`, { force: true })
          linkFd(fd, dirFd, tempName)
          renameSync(`${dir}/${tempName}`, `${dir}/${name}`)
        }
        syncDir(dir)
      },
    }
  } catch (err) {
    // EOPNOTSUPP, or EISDIR from kernels that predate O_TMPFILE
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EOPNOTSUPP' && code !== 'EISDIR') throw err
  }
  const temp = tempName
  rmSync(`${dir}/${temp}`, { force: true })
  const fd = openSync(`${dir}/${temp}`, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
  return {
    fd,
    tempName: temp,
    publish(name, replace) {
      if (replace) renameSync(`${dir}/${temp}`, `${dir}/${name}`)
      else {
        linkSync(`${dir}/${temp}`, `${dir}/${name}`)
        unlinkSync(`${dir}/${temp}`)
      }
      syncDir(dir)
    },
  }
}

/**
 * Creates `name` in the directory from the backup, complete with owner, mode and times before it
 * gets its name. With `replace`, an entry that exists by then is replaced atomically.
 */
export async function createFromBackup(dirFd: number, name: string, backupPath: string, meta: FileMeta, opts: { replace: boolean; tempName: string }): Promise<void> {
  const file = newFileIn(dirFd, opts.tempName)
  try {
    await overwriteFromBackup(file.fd, backupPath)
    restoreMeta(file.fd, meta, { times: true })
    file.publish(name, opts.replace)
  } finally {
    closeSync(file.fd)
  }
}
