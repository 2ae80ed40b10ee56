// DNS client tools for the network-dns tests, beside tool.mjs: raw queries that show the rcode and
// every answer (which node:dns hides), over UDP or TCP, and a client that keeps one UDP socket.
// Runs inside a test namespace (nsenter --net=... node tool-dns.mjs) and prints JSON lines.
import dgram from 'node:dgram'
import net from 'node:net'
import { createRequire } from 'node:module'

const dnsPacket = createRequire(import.meta.url)('dns-packet')

const [cmd, ...args] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const now = () => Number(process.hrtime.bigint()) / 1e6

const encodeQuery = (name, type, id) =>
  dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] })
const summary = (msg) => {
  const p = dnsPacket.decode(msg)
  return { id: p.id, rcode: p.rcode, answers: p.answers.map((a) => ({ type: a.type, name: a.name, data: a.data, ttl: a.ttl })) }
}

/** One query over UDP or TCP -> { rcode, answers, ms } or { error: 'TIMEOUT' | code, ms }. */
function query(name, type, server, proto = 'udp', timeoutMs = 2000) {
  const started = now()
  const id = Math.floor(Math.random() * 0x10000)
  const message = encodeQuery(name, type, id)
  return new Promise((resolve) => {
    let done = false
    let close = () => {}
    const finish = (obj) => {
      if (done) return
      done = true
      clearTimeout(timer)
      close()
      resolve({ ...obj, ms: now() - started })
    }
    const timer = setTimeout(() => finish({ error: 'TIMEOUT' }), Number(timeoutMs))
    if (proto === 'tcp') {
      const socket = net.connect({ host: server, port: 53 })
      close = () => socket.destroy()
      let buf = Buffer.alloc(0)
      socket.on('connect', () => {
        const len = Buffer.alloc(2)
        len.writeUInt16BE(message.length)
        socket.write(Buffer.concat([len, message]))
      })
      socket.on('data', (chunk) => {
        buf = Buffer.concat([buf, chunk])
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) finish(summary(buf.subarray(2, 2 + buf.readUInt16BE(0))))
      })
      socket.on('error', (err) => finish({ error: err.code }))
      socket.on('close', () => finish({ error: 'CLOSED' }))
    } else {
      const socket = dgram.createSocket(net.isIPv6(server) ? 'udp6' : 'udp4')
      close = () => socket.close()
      socket.on('message', (msg) => {
        const s = summary(msg)
        if (s.id === id) finish(s)
      })
      socket.on('error', (err) => finish({ error: err.code }))
      socket.send(message, 53, server)
    }
  })
}

const commands = {
  // query NAME TYPE SERVER [udp|tcp] [TIMEOUT_MS]: one query -> { rcode, answers, ms } or { error, ms }
  async query(name, type, server, proto, timeoutMs) {
    out(await query(name, type, server, proto, timeoutMs))
  },
  // queries SERVER JSON: [[name, type, proto?], ...] one after the other (each a fresh socket)
  // -> { results: [{ rcode, answers } | { error }, ...] }
  async queries(server, listJson) {
    const results = []
    for (const [name, type, proto] of JSON.parse(listJson)) results.push(await query(name, type, server, proto))
    out({ results })
  },
  // query-loop NAME SERVER GAP_MS: A queries from ONE UDP socket (one source port, so one
  // conntrack entry), GAP_MS apart, until SIGTERM; prints {ready} first, then
  // { results: [{ at: epoch ms sent, result: first address | rcode | 'timeout' }] }
  async 'query-loop'(name, server, gapMs) {
    const socket = dgram.createSocket('udp4')
    await new Promise((r) => socket.bind(0, r))
    const results = []
    let stopping = false
    socket.on('message', (msg) => {
      const p = dnsPacket.decode(msg)
      if (results[p.id]) results[p.id].result = p.answers[0]?.data ?? p.rcode
    })
    process.on('SIGTERM', () => {
      stopping = true
      // the last answers may still be on their way
      setTimeout(() => {
        out({ results })
        process.exit(0)
      }, 300)
    })
    out({ ready: true, port: socket.address().port })
    for (let i = 0; !stopping && i < 0x10000; i++) {
      results.push({ at: Date.now(), result: 'timeout' })
      socket.send(encodeQuery(name, 'A', i), 53, server)
      await new Promise((r) => setTimeout(r, Number(gapMs)))
    }
    await new Promise(() => {})
  },
  // tcp-dns-server PORT RECORDS_JSON: tool.mjs's dns-server over TCP: {"name": "1.2.3.4"} answers
  // A queries, NXDOMAIN otherwise; prints {ready} once listening
  async 'tcp-dns-server'(port, recordsJson) {
    const records = JSON.parse(recordsJson)
    const server = net.createServer((socket) => {
      let buf = Buffer.alloc(0)
      socket.on('error', () => {})
      socket.on('data', (chunk) => {
        buf = Buffer.concat([buf, chunk])
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const query = dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0)))
          buf = buf.subarray(2 + buf.readUInt16BE(0))
          const q = query.questions?.[0]
          const ip = q && records[q.name.toLowerCase()]
          const reply = dnsPacket.streamEncode({
            type: 'response', id: query.id, flags: dnsPacket.AUTHORITATIVE_ANSWER | (ip ? 0 : 3),
            questions: query.questions,
            answers: ip && q.type === 'A' ? [{ type: 'A', name: q.name, ttl: 5, data: ip }] : [],
          })
          socket.write(reply)
        }
      })
    })
    server.listen(Number(port), '0.0.0.0', () => out({ ready: true }))
    await new Promise(() => {})
  },
}

const run = commands[cmd]
if (!run) {
  process.stderr.write(`unknown command ${cmd}; known: ${Object.keys(commands).join(', ')}\n`)
  process.exit(2)
}
await run(...args)
