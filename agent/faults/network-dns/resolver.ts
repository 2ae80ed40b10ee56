// The fake resolver of one network-dns injection: a small standalone process the agent starts
// inside the target network namespace (nsenter --net=... node resolver.js '<config json>').
//
// - It runs as the injection's own group id (set before any socket exists): the injection's nft
//   table exempts exactly the sockets of that group, so its upstream queries are neither
//   redirected back to itself nor moved into the fault's conntrack zone.
// - It listens on 127.0.0.1 and ::1, port `config.port`, UDP and TCP: where the nat table's
//   `redirect` sends the namespace's own DNS traffic (redirect rewrites the destination of locally
//   generated packets to the loopback address, see net/netfilter/nf_nat_redirect.c).
// - Names the fault covers are answered per mode (answer.ts); everything else is forwarded to the
//   upstream and relayed unchanged (only the 16-bit id is swapped for the trip and restored).
// - fd 3 is a socket pair to the agent. It carries one line, {"ready":true,...} or {"error":...};
//   then the agent just holds its end open. When it closes — the agent died, even by SIGKILL — or
//   on SIGTERM/SIGINT/SIGHUP, the resolver deletes its own nft table (by name, in its own
//   namespace) and exits, so DNS is normal again without waiting for the agent's next start.
//   The agent's own recovery deletes the table and then SIGKILLs exactly this process.
// stdin/stdout are /dev/null; stderr is read by the agent only until ready.
import { execFileSync } from 'node:child_process'
import dgram from 'node:dgram'
import net from 'node:net'
import { decide } from './answer.js'
import type { ResolverConfig } from './config.js'

const UPSTREAM_PORT = 53
const PENDING_TTL_MS = 10_000
const TCP_IDLE_MS = 30_000

const config = JSON.parse(process.argv[2] ?? '{}') as ResolverConfig
const upstreamFamily = net.isIP(config.upstream)
if (!Number.isInteger(config.port) || !Number.isInteger(config.gid) || upstreamFamily === 0 || !config.table || !config.nft) {
  process.stderr.write('usage: resolver.js <config json> (started by the faultline agent)\n')
  process.exit(2)
}

// Group first: every socket created from here on carries it (nft `meta skgid` reads the
// credentials the socket was created with).
if (!process.setgroups || !process.setgid) throw new Error('the resolver needs POSIX credentials (Linux)')
process.setgroups([config.gid])
process.setgid(config.gid)

let stopping = false
const closers: (() => void)[] = []

function removeOwnTable(): void {
  try {
    execFileSync(config.nft, ['delete', 'table', 'inet', config.table], { stdio: 'ignore', timeout: 5_000 })
  } catch {
    /* already gone (the agent recovered it), or not created yet */
  }
}

function shutdown(code: number): void {
  if (stopping) return
  stopping = true
  for (const close of closers) {
    try {
      close()
    } catch {
      /* closing anyway */
    }
  }
  removeOwnTable()
  process.exit(code)
}

const control = new net.Socket({ fd: 3, readable: true, writable: true })
control.on('error', () => shutdown(0))
control.on('close', () => shutdown(0))
control.resume()
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => shutdown(0))
process.stderr.on('error', () => undefined)
process.on('uncaughtException', (err) => {
  process.stderr.write(`faultline dns resolver: ${err.stack ?? String(err)}\n`)
  shutdown(1)
})

// ---- upstream ---------------------------------------------------------------------------------

interface Pending {
  originalId: number
  reply: (message: Buffer) => void
  timer: NodeJS.Timeout
}

const upstreamUdp = dgram.createSocket(upstreamFamily === 6 ? 'udp6' : 'udp4')
closers.push(() => upstreamUdp.close())
const pending = new Map<number, Pending>()

upstreamUdp.on('message', (message, from) => {
  if (from.port !== UPSTREAM_PORT || from.address !== config.upstream || message.length < 12) return
  const entry = pending.get(message.readUInt16BE(0))
  if (!entry) return
  pending.delete(message.readUInt16BE(0))
  clearTimeout(entry.timer)
  message.writeUInt16BE(entry.originalId, 0)
  entry.reply(message)
})
upstreamUdp.on('error', () => undefined)

/** A fresh random id for the upstream trip, so queries of different clients never collide. */
function freeId(): number | undefined {
  for (let i = 0; i < 16; i++) {
    const id = Math.floor(Math.random() * 0x10000)
    if (!pending.has(id)) return id
  }
  return undefined
}

function forwardUdp(query: Buffer, reply: (message: Buffer) => void): void {
  const id = freeId()
  if (id === undefined) return
  const copy = Buffer.from(query)
  const originalId = copy.readUInt16BE(0)
  copy.writeUInt16BE(id, 0)
  const timer = setTimeout(() => pending.delete(id), PENDING_TTL_MS)
  pending.set(id, { originalId, reply, timer })
  upstreamUdp.send(copy, UPSTREAM_PORT, config.upstream)
}

/** One TCP connection to the upstream per forwarded TCP query; the answer is relayed as is. */
function forwardTcp(query: Buffer, reply: (message: Buffer) => void, fail: () => void): void {
  const upstream = net.connect({ host: config.upstream, port: UPSTREAM_PORT })
  upstream.setTimeout(PENDING_TTL_MS, () => upstream.destroy())
  let buffered = Buffer.alloc(0)
  let answered = false
  upstream.on('connect', () => upstream.write(frame(query)))
  upstream.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk])
    if (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
      answered = true
      reply(buffered.subarray(2, 2 + buffered.readUInt16BE(0)))
      upstream.destroy()
    }
  })
  upstream.on('error', () => undefined)
  upstream.on('close', () => {
    if (!answered) fail()
  })
}

function frame(message: Buffer): Buffer {
  const length = Buffer.alloc(2)
  length.writeUInt16BE(message.length, 0)
  return Buffer.concat([length, message])
}

// ---- listeners ----------------------------------------------------------------------------------

function onUdpQuery(query: Buffer, reply: (message: Buffer) => void): void {
  const decision = decide(query, config)
  if (decision.action === 'reply') reply(decision.message)
  else if (decision.action === 'forward') forwardUdp(query, reply)
  // drop: timeout mode (or not a query): no answer at all
}

function onTcpConnection(socket: net.Socket): void {
  socket.on('error', () => undefined)
  socket.setTimeout(TCP_IDLE_MS, () => socket.destroy())
  let buffered = Buffer.alloc(0)
  const reply = (message: Buffer) => {
    if (!socket.destroyed) socket.write(frame(message))
  }
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk])
    while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
      const query = buffered.subarray(2, 2 + buffered.readUInt16BE(0))
      buffered = buffered.subarray(2 + query.length)
      const decision = decide(query, config)
      if (decision.action === 'reply') reply(decision.message)
      else if (decision.action === 'forward') forwardTcp(query, reply, () => socket.destroy())
      // drop: the connection stays open and silent until the client gives up
    }
  })
}

function bindUdp(type: 'udp4' | 'udp6', address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket({ type, ipv6Only: type === 'udp6' })
    socket.once('error', reject)
    socket.on('message', (query, from) => onUdpQuery(query, (message) => socket.send(message, from.port, from.address)))
    socket.bind({ port: config.port, address, exclusive: true }, () => {
      socket.off('error', reject)
      socket.on('error', () => undefined)
      closers.push(() => socket.close())
      resolve()
    })
  })
}

function listenTcp(address: string, ipv6Only: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = net.createServer(onTcpConnection)
    server.once('error', reject)
    server.listen({ port: config.port, host: address, exclusive: true, ipv6Only }, () => {
      server.off('error', reject)
      closers.push(() => server.close())
      resolve()
    })
  })
}

function report(line: object): Promise<void> {
  return new Promise((resolve) => control.write(JSON.stringify(line) + '\n', () => resolve()))
}

const listening: string[] = []
try {
  await bindUdp('udp4', '127.0.0.1')
  await listenTcp('127.0.0.1', false)
  listening.push(`127.0.0.1:${config.port}`)
} catch (err) {
  const code = (err as NodeJS.ErrnoException).code
  await report({ error: `cannot listen on 127.0.0.1:${config.port} inside the namespace: ${code === 'EADDRINUSE' ? 'the port was taken after planning; retry' : code === 'EADDRNOTAVAIL' ? 'the loopback interface is down' : (err as Error).message}` })
  shutdown(1)
}
try {
  await bindUdp('udp6', '::1')
  await listenTcp('::1', true)
  listening.push(`[::1]:${config.port}`)
} catch (err) {
  const code = (err as NodeJS.ErrnoException).code
  // No ::1 (IPv6 disabled in the namespace): then there is no IPv6 DNS traffic to catch either.
  if (code !== 'EADDRNOTAVAIL' && code !== 'EAFNOSUPPORT') {
    await report({ error: `cannot listen on [::1]:${config.port} inside the namespace: ${(err as Error).message}` })
    shutdown(1)
  }
}
await report({ ready: true, pid: process.pid, port: config.port, listening })
