// Throughput tools for the network-bandwidth tests. Runs inside a test namespace
// (nsenter --net=... node tool-bandwidth.mjs) and prints JSON lines. Plain JavaScript: starts in
// ~50 ms, no loader.
//
// Why a separate sink from tool.mjs's tcp-sink: that one counts from the first byte, so TCP slow
// start and the token bucket's initial burst land in the figure. This one measures on the
// receiver over a window that starts SKIP_MS after the first byte, which is what a shaped
// link's steady rate is.
import net from 'node:net'

const [cmd, ...args] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const now = () => Number(process.hrtime.bigint()) / 1e6

const commands = {
  // tcp-sink PORT SKIP_MS WINDOW_MS [TAIL_MS]: accepts one connection; prints {ready} once
  // listening, then the rate over the window [first byte + SKIP_MS, + WINDOW_MS]:
  //   rawBitsPerSecond: payload bytes the application read inside the window / its length;
  //   bitsPerSecond: the same from the upper concave hull of the cumulative byte curve.
  // Why the hull: TCP hands data to the application in order, so while a lost segment is being
  // retransmitted the application reads nothing although the link keeps delivering (into the
  // out-of-order queue), then reads it all at once. A window edge that falls into such a hole
  // shifts the raw figure by up to a window's worth of data. The in-order curve touches the
  // link's curve whenever no repair is pending; its upper hull joins those points, so holes at
  // the edges no longer count, while a link that really idles (a retransmission timeout) still
  // does. Recording continues TAIL_MS past the window so the end edge lies inside the hull.
  async 'tcp-sink'(port, skipMs, windowMs, tailMs = '500') {
    const server = net.createServer((s) => {
      server.close()
      let bytes = 0
      let first = 0
      const points = []
      const samples = []
      s.on('data', (chunk) => {
        bytes += chunk.length
        const t = now()
        points.push([t, bytes])
        if (first) return
        first = t
        let last = { at: first, bytes: 0 }
        const sampler = setInterval(() => {
          const at = now()
          samples.push(Math.round(((bytes - last.bytes) * 8 * 1000) / (at - last.at)))
          last = { at, bytes }
        }, 250)
        const t0 = first + Number(skipMs)
        const t1 = t0 + Number(windowMs)
        setTimeout(() => {
          clearInterval(sampler)
          const inRange = points.filter(([at]) => at >= t0 - 500)
          const raw = readAt(points, t1) - readAt(points, t0)
          const hull = upperHull(inRange)
          const hullBytes = hullAt(hull, t1) - hullAt(hull, t0)
          const ms = t1 - t0
          out({
            bytes: Math.round(hullBytes),
            ms,
            bitsPerSecond: Math.round((hullBytes * 8 * 1000) / ms),
            rawBitsPerSecond: Math.round((raw * 8 * 1000) / ms),
            totalBytes: bytes,
            samples: samples.slice(0, Math.ceil((Number(skipMs) + Number(windowMs)) / 250)),
          })
          s.destroy()
          process.exit(0)
        }, Number(skipMs) + Number(windowMs) + Number(tailMs))
      })
      s.on('error', () => {})
    })
    server.listen(Number(port), '0.0.0.0', () => out({ ready: true }))
    await new Promise(() => {})
  },
  // tcp-source HOST PORT SECONDS: writes as fast as the socket takes it for SECONDS (or until the
  // sink closes the connection); prints { bytes } written.
  async 'tcp-source'(host, port, seconds) {
    const socket = net.connect({ host, port: Number(port) })
    const chunk = Buffer.alloc(16 * 1024, 0x61)
    let bytes = 0
    const end = Date.now() + Number(seconds) * 1000
    const finish = () => { out({ bytes }); process.exit(0) }
    socket.on('error', finish)
    socket.on('close', finish)
    socket.on('connect', function pump() {
      while (Date.now() < end) {
        bytes += chunk.length
        if (!socket.write(chunk)) { socket.once('drain', pump); return }
      }
      socket.destroy()
    })
    setTimeout(() => socket.destroy(), Number(seconds) * 1000 + 100)
    await new Promise(() => {})
  },
}

/** Bytes the application had read by time t (the step curve of [time, cumulative bytes] points). */
function readAt(points, t) {
  let lo = 0
  let hi = points.length - 1
  if (hi < 0 || points[0][0] > t) return 0
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if (points[mid][0] <= t) lo = mid
    else hi = mid - 1
  }
  return points[lo][1]
}

/** Upper concave hull of points sorted by time (Andrew's monotone chain). */
function upperHull(points) {
  const hull = []
  for (const p of points) {
    while (hull.length >= 2) {
      const [o, a] = [hull[hull.length - 2], hull[hull.length - 1]]
      const cross = (a[0] - o[0]) * (p[1] - o[1]) - (a[1] - o[1]) * (p[0] - o[0])
      if (cross >= 0) hull.pop()
      else break
    }
    hull.push(p)
  }
  return hull
}

/** The hull's value at time t (linear between its vertices). */
function hullAt(hull, t) {
  if (hull.length === 0) return 0
  if (t <= hull[0][0]) return hull[0][1]
  for (let i = 1; i < hull.length; i++) {
    const [a, b] = [hull[i - 1], hull[i]]
    if (t <= b[0]) return a[1] + ((b[1] - a[1]) * (t - a[0])) / (b[0] - a[0])
  }
  return hull[hull.length - 1][1]
}

const run = commands[cmd]
if (!run) {
  process.stderr.write(`unknown command ${cmd}; known: ${Object.keys(commands).join(', ')}\n`)
  process.exit(2)
}
await run(...args)
