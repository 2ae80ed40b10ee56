// Traffic tools for network tests. Runs inside a test namespace (nsenter --net=... node tool.mjs)
// and prints one JSON line with its measurement. Plain JavaScript: starts in ~50 ms, no loader.
import dgram from 'node:dgram'
import net from 'node:net'
import { Resolver } from 'node:dns/promises'
import { readFileSync } from 'node:fs'
import https from 'node:https'
import { createRequire } from 'node:module'

const dnsPacket = createRequire(import.meta.url)('dns-packet')

const [cmd, ...args] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const now = () => Number(process.hrtime.bigint()) / 1e6

const commands = {
  // tcp-connect HOST PORT TIMEOUT_MS -> { ok, code, ms }
  async 'tcp-connect'(host, port, timeoutMs) {
    const started = now()
    await new Promise((resolve) => {
      const socket = net.connect({ host, port: Number(port) })
      const timer = setTimeout(() => { socket.destroy(); out({ ok: false, code: 'TIMEOUT', ms: now() - started }); resolve() }, Number(timeoutMs))
      socket.on('connect', () => { clearTimeout(timer); out({ ok: true, ms: now() - started }); socket.end(); resolve() })
      socket.on('error', (err) => { clearTimeout(timer); out({ ok: false, code: err.code, ms: now() - started }); resolve() })
    })
  },
  // tcp-listen PORT: accepts and closes connections until killed; prints {ready} once listening
  async 'tcp-listen'(port) {
    const server = net.createServer((s) => { s.on('error', () => {}); s.end() })
    server.listen(Number(port), '0.0.0.0', () => out({ ready: true }))
    await new Promise(() => {})
  },
  // tcp-sink PORT SECONDS: accepts one connection, counts bytes for SECONDS after the first byte
  async 'tcp-sink'(port, seconds) {
    const server = net.createServer((s) => {
      let bytes = 0
      let first = 0
      s.on('data', (chunk) => {
        if (!first) { first = now(); setTimeout(() => { out({ bytes, ms: now() - first }); process.exit(0) }, Number(seconds) * 1000) }
        bytes += chunk.length
      })
      s.on('error', () => {})
    })
    server.listen(Number(port), '0.0.0.0', () => out({ ready: true }))
    await new Promise(() => {})
  },
  // tcp-source HOST PORT SECONDS: writes as fast as the socket takes it
  async 'tcp-source'(host, port, seconds) {
    const socket = net.connect({ host, port: Number(port) })
    const chunk = Buffer.alloc(16 * 1024, 0x61)
    let bytes = 0
    const end = Date.now() + Number(seconds) * 1000
    socket.on('error', (err) => { out({ error: err.code }); process.exit(1) })
    socket.on('connect', function pump() {
      while (Date.now() < end) {
        bytes += chunk.length
        if (!socket.write(chunk)) { socket.once('drain', pump); return }
      }
      socket.destroy()
      out({ bytes })
      process.exit(0)
    })
    await new Promise(() => {})
  },
  // udp-sink PORT IDLE_MS: counts distinct sequence numbers; prints after IDLE_MS of silence
  async 'udp-sink'(port, idleMs) {
    const seen = new Set()
    const socket = dgram.createSocket('udp4')
    let timer
    socket.on('message', (msg) => {
      seen.add(msg.readUInt32BE(0))
      clearTimeout(timer)
      timer = setTimeout(() => { out({ received: seen.size }); process.exit(0) }, Number(idleMs))
    })
    socket.bind(Number(port), '0.0.0.0', () => out({ ready: true }))
    await new Promise(() => {})
  },
  // udp-blast HOST PORT COUNT GAP_US: sends COUNT numbered datagrams, GAP_US apart
  async 'udp-blast'(host, port, count, gapUs) {
    const socket = dgram.createSocket('udp4')
    const n = Number(count)
    for (let i = 0; i < n; i++) {
      const buf = Buffer.alloc(64)
      buf.writeUInt32BE(i, 0)
      await new Promise((resolve) => socket.send(buf, Number(port), host, resolve))
      const until = now() + Number(gapUs) / 1000
      while (now() < until) await new Promise((r) => setImmediate(r))
    }
    out({ sent: n })
    socket.close()
  },
  // udp-echo PORT: echoes every datagram back
  async 'udp-echo'(port) {
    const socket = dgram.createSocket('udp4')
    socket.on('message', (msg, rinfo) => socket.send(msg, rinfo.port, rinfo.address))
    socket.bind(Number(port), '0.0.0.0', () => out({ ready: true }))
    await new Promise(() => {})
  },
  // udp-rtt HOST PORT COUNT GAP_MS: round-trip times of COUNT probes in ms; lost probes are null
  async 'udp-rtt'(host, port, count, gapMs) {
    const socket = dgram.createSocket('udp4')
    const sentAt = new Map()
    const rtts = new Array(Number(count)).fill(null)
    socket.on('message', (msg) => {
      const i = msg.readUInt32BE(0)
      if (sentAt.has(i)) rtts[i] = now() - sentAt.get(i)
    })
    await new Promise((r) => socket.bind(0, r))
    for (let i = 0; i < Number(count); i++) {
      const buf = Buffer.alloc(32)
      buf.writeUInt32BE(i, 0)
      sentAt.set(i, now())
      socket.send(buf, Number(port), host)
      await new Promise((r) => setTimeout(r, Number(gapMs)))
    }
    await new Promise((r) => setTimeout(r, 1500))
    out({ rtts })
    socket.close()
  },
  // resolve NAME SERVER [TIMEOUT_MS]: A records through SERVER:53 -> { addresses } or { error }
  async resolve(name, server, timeoutMs = '2000') {
    const resolver = new Resolver({ timeout: Number(timeoutMs), tries: 1 })
    resolver.setServers([server])
    const started = now()
    try {
      out({ addresses: await resolver.resolve4(name), ms: now() - started })
    } catch (err) {
      out({ error: err.code, ms: now() - started })
    }
  },
  // https METHOD URL BODY_JSON|- TOKEN_FILE CA_FILE TIMEOUT_MS -> { status, body } or { error }
  async https(method, url, body, tokenFile, caFile, timeoutMs) {
    const started = now()
    await new Promise((resolve) => {
      const req = https.request(url, {
        method,
        ca: readFileSync(caFile),
        agent: false,
        timeout: Number(timeoutMs),
        headers: { authorization: `Bearer ${readFileSync(tokenFile, 'utf8').trim()}`, ...(body !== '-' ? { 'content-type': 'application/json' } : {}) },
      }, (res) => {
        let text = ''
        res.on('data', (c) => (text += c))
        res.on('end', () => { out({ status: res.statusCode, body: text ? JSON.parse(text) : null, ms: now() - started }); resolve() })
      })
      req.on('timeout', () => { req.destroy(new Error('TIMEOUT')) })
      req.on('error', (err) => { out({ error: err.code ?? err.message, ms: now() - started }); resolve() })
      if (body !== '-') req.write(body)
      req.end()
    })
  },
  // dns-server PORT RECORDS_JSON: a tiny authoritative server, {"name": "1.2.3.4"}; NXDOMAIN otherwise
  async 'dns-server'(port, recordsJson) {
    const records = JSON.parse(recordsJson)
    const socket = dgram.createSocket('udp4')
    socket.on('message', (msg, rinfo) => {
      let query
      try { query = dnsPacket.decode(msg) } catch { return }
      const q = query.questions?.[0]
      const ip = q && records[q.name.toLowerCase()]
      const reply = dnsPacket.encode({
        type: 'response', id: query.id, flags: dnsPacket.AUTHORITATIVE_ANSWER | (ip ? 0 : 3),
        questions: query.questions,
        answers: ip && q.type === 'A' ? [{ type: 'A', name: q.name, ttl: 5, data: ip }] : [],
      })
      socket.send(reply, rinfo.port, rinfo.address)
    })
    socket.bind(Number(port), '0.0.0.0', () => out({ ready: true }))
    await new Promise(() => {})
  },
}

const run = commands[cmd]
if (!run) {
  process.stderr.write(`unknown command ${cmd}; known: ${Object.keys(commands).join(', ')}\n`)
  process.exit(2)
}
await run(...args)
