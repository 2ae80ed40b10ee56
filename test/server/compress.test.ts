// Response compression of the JSON API (@fastify/compress): large answers are gzip-compressed
// for clients that ask, and decompress to the same JSON; small answers and clients that do not
// ask stay plain. The event stream is never compressed: over a real listening server, a reader
// that accepts gzip still gets each event as it happens, while the stream stays open.
import { get, type IncomingMessage } from 'node:http'
import { gunzipSync } from 'node:zlib'
import t from 'tap'
import { buildServer } from '../../server/app.js'
import { tmpDir, waitFor, withBearer, type TestLike } from '../helpers.js'

const ADMIN = 'admin-token-for-compress-tests-0123456789'
const ENROL = 'enrol-token-for-compress-tests-0123456789'

async function server(t: TestLike) {
  const app = withBearer(await buildServer({ stateDir: tmpDir(t), adminToken: ADMIN, enrolToken: ENROL, leaseMs: 3_000 }), ADMIN)
  t.teardown(() => app.close())
  // Wrapped in an object: a Fastify instance is thenable, and awaiting it would unwrap the proxy.
  return { app }
}

const experiment = (name: string) => ({ name, hosts: { labels: { role: 'db' } }, target: { type: 'process', name: 'sleep' }, fault: { kind: 'process-stop' }, duration: '30s' })

t.test('the JSON API is gzip-compressed for clients that ask; small answers and clients that do not ask stay plain', async (t) => {
  const { app } = await server(t)
  for (let i = 0; i < 20; i++) {
    const put = await app.inject({ method: 'POST', url: '/v1/experiments', payload: experiment(`exp-${i}`) })
    t.equal(put.statusCode, 201, put.body)
  }

  const plain = await app.inject({ method: 'GET', url: '/v1/experiments' })
  t.equal(plain.statusCode, 200)
  t.equal(plain.headers['content-encoding'], undefined, 'no accept-encoding: not compressed')
  t.ok(plain.rawPayload.length > 1024, 'large enough to be compressed')

  const gzipped = await app.inject({ method: 'GET', url: '/v1/experiments', headers: { 'accept-encoding': 'gzip' } })
  t.equal(gzipped.statusCode, 200)
  t.equal(gzipped.headers['content-encoding'], 'gzip')
  t.match(gzipped.headers['content-type'], /^application\/json/)
  t.ok(gzipped.rawPayload.length < plain.rawPayload.length, `${gzipped.rawPayload.length} bytes compressed, ${plain.rawPayload.length} plain`)
  t.same(JSON.parse(gunzipSync(gzipped.rawPayload).toString()), plain.json())

  const small = await app.inject({ method: 'GET', url: '/v1/experiments/exp-0', headers: { 'accept-encoding': 'gzip' } })
  t.equal(small.statusCode, 200)
  t.equal(small.headers['content-encoding'], undefined, 'below the threshold: plain')
})

t.test('the event stream is not compressed for a client that takes gzip, and each event arrives while it stays open', async (t) => {
  const { app } = await server(t)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (!address || typeof address === 'string') throw new Error('no TCP address')

  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = get(
      { host: '127.0.0.1', port: address.port, path: '/v1/events/stream', headers: { authorization: `Bearer ${ADMIN}`, 'accept-encoding': 'gzip, deflate, br' } },
      resolve,
    )
    req.on('error', reject)
    t.teardown(() => req.destroy())
  })
  let text = ''
  let ended = false
  res.setEncoding('utf8')
  res.on('data', (chunk: string) => (text += chunk))
  res.on('end', () => (ended = true))
  res.on('error', () => (ended = true))

  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/event-stream/)
  t.equal(res.headers['content-encoding'], undefined, 'the stream is sent as it is written')
  await waitFor('the hello message', () => text.includes('event: hello'))
  // An event written after the stream opened reaches the reader without the stream ending: a
  // compressed stream would hold it in the compressor's buffer.
  t.equal((await app.inject({ method: 'POST', url: '/v1/experiments', payload: experiment('live') })).statusCode < 300, true)
  await waitFor('the experiment.applied event', () => text.includes('experiment.applied'))
  t.equal(ended, false, 'the stream is still open')
})
