// RTT probe for the network-delay tests. Runs inside a test namespace (nsenter --net=... node
// tool-delay.mjs) and prints one JSON line. Unlike tool.mjs's udp-rtt it waits only TAIL_MS for
// the last answers, so a delay test measures many times without waiting 1.5 s each.
import dgram from 'node:dgram'

const [cmd, ...args] = process.argv.slice(2)
const now = () => Number(process.hrtime.bigint()) / 1e6

// rtt HOST PORT COUNT GAP_MS TAIL_MS -> { rtts: (ms | null)[] } (null: no answer within TAIL_MS)
async function rtt(host, port, count, gapMs, tailMs) {
  const socket = dgram.createSocket('udp4')
  const sentAt = new Map()
  const rtts = new Array(Number(count)).fill(null)
  socket.on('message', (msg) => {
    const i = msg.readUInt32BE(0)
    if (sentAt.has(i) && rtts[i] === null) rtts[i] = now() - sentAt.get(i)
  })
  await new Promise((r) => socket.bind(0, r))
  for (let i = 0; i < Number(count); i++) {
    const buf = Buffer.alloc(32)
    buf.writeUInt32BE(i, 0)
    sentAt.set(i, now())
    socket.send(buf, Number(port), host)
    await new Promise((r) => setTimeout(r, Number(gapMs)))
  }
  await new Promise((r) => setTimeout(r, Number(tailMs)))
  process.stdout.write(JSON.stringify({ rtts }) + '\n')
  socket.close()
}

if (cmd !== 'rtt') {
  process.stderr.write(`unknown command ${cmd}; known: rtt\n`)
  process.exit(2)
}
await rtt(...args)
