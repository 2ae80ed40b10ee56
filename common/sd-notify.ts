import { createRequire } from 'node:module'

/**
 * systemd's readiness protocol (sd_notify(3)) for `Type=notify` units: one datagram of
 * "KEY=VALUE" lines to the Unix socket named by $NOTIFY_SOCKET. It has to come from the main
 * process itself: systemd attributes a message by the sender's pid, and a helper such as
 * systemd-notify(1) may exit before systemd reads its cgroup, so its READY=1 can be dropped.
 * Node has no Unix datagram sockets, so the three libc calls go through koffi (already our FFI).
 *
 * Without $NOTIFY_SOCKET (not under systemd, or not Type=notify) every call does nothing.
 */

const AF_UNIX = 1
const SOCK_DGRAM = 2
const SOCK_CLOEXEC = 0o2000000
const MSG_NOSIGNAL = 0x4000
/** sizeof(struct sockaddr_un): sa_family_t (2 bytes) and sun_path[108]. */
const SOCKADDR_UN_SIZE = 110

interface SocketCalls {
  socket: (domain: number, type: number, protocol: number) => number
  sendto: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number) => number
  close: (fd: number) => number
  errno: () => number
}

let calls: SocketCalls | undefined

function load(): SocketCalls {
  if (calls) return calls
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi')
  const lib = koffi.load('libc.so.6')
  calls = {
    socket: lib.func('int socket(int domain, int type, int protocol)') as SocketCalls['socket'],
    sendto: lib.func('long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)') as SocketCalls['sendto'],
    close: lib.func('int close(int fd)') as SocketCalls['close'],
    errno: () => koffi.errno(),
  }
  return calls
}

/** struct sockaddr_un for a path, or for an abstract name ("@name": a leading NUL, no terminator). */
export function socketAddress(name: string): { addr: Buffer; length: number } {
  const abstract = name.startsWith('@')
  const path = Buffer.from(abstract ? `\0${name.slice(1)}` : name)
  // A path needs room for its terminating NUL; an abstract name is exactly its bytes.
  if (path.length + (abstract ? 0 : 1) > SOCKADDR_UN_SIZE - 2) throw new Error(`NOTIFY_SOCKET is too long: ${name}`)
  const addr = Buffer.alloc(SOCKADDR_UN_SIZE)
  addr.writeUInt16LE(AF_UNIX, 0)
  path.copy(addr, 2)
  return { addr, length: 2 + path.length + (abstract ? 0 : 1) }
}

/**
 * Sends `state` ("READY=1\nSTATUS=…") to systemd. Returns false when there is nobody to tell;
 * throws when $NOTIFY_SOCKET is set but the message cannot be sent (systemd would then time
 * the start out with no reason given: better to say it in the log).
 */
export function sdNotify(state: Record<string, string | number>, env: NodeJS.ProcessEnv = process.env): boolean {
  const target = env.NOTIFY_SOCKET
  if (!target) return false
  if (!target.startsWith('/') && !target.startsWith('@')) throw new Error(`NOTIFY_SOCKET is neither a path nor an abstract name: ${target}`)
  const { addr, length } = socketAddress(target)
  const message = Buffer.from(Object.entries(state).map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}`).join('\n'))
  const libc = load()
  const fd = libc.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)
  if (fd < 0) throw new Error(`sd_notify: socket: errno ${libc.errno()}`)
  try {
    const sent = Number(libc.sendto(fd, message, message.length, MSG_NOSIGNAL, addr, length))
    if (sent < 0) throw new Error(`sd_notify: sendto ${target}: errno ${libc.errno()}`)
  } finally {
    libc.close(fd)
  }
  return true
}

/** Logs instead of throwing: a failed notification must not stop a running agent from stopping. */
type Warn = (err: unknown, message: string) => void

/** The unit is up: systemctl start returns, After= units start. */
export function notifyReady(status: string, warn: Warn, env?: NodeJS.ProcessEnv): boolean {
  return tell({ READY: 1, STATUS: status, MAINPID: process.pid }, warn, env)
}

/** Stopping (recovering injections may take a while): systemctl status shows why. */
export function notifyStopping(status: string, warn: Warn, env?: NodeJS.ProcessEnv): boolean {
  return tell({ STOPPING: 1, STATUS: status }, warn, env)
}

function tell(state: Record<string, string | number>, warn: Warn, env?: NodeJS.ProcessEnv): boolean {
  try {
    return sdNotify(state, env)
  } catch (err) {
    warn(err, 'could not tell systemd (sd_notify)')
    return false
  }
}
