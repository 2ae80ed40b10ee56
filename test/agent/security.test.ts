// Security defaults: loopback unless TLS + credentials, bearer tokens compared in constant
// time, client certificates, and a log line with who/what for every mutating request.
import { writeFileSync } from 'node:fs'
import { Writable } from 'node:stream'
import pino from 'pino'
import t from 'tap'
import { Agent, request } from 'undici'
import { checkExposure } from '../../agent/config.js'
import { ConfigError, isLoopback, parseListen } from '../../common/config.js'
import { startAgent } from '../../agent/main.js'
import { tokensEqual } from '../../common/tokens.js'
import { AgentClient } from '../../cli/client.js'
import { makePki, sleeper, testAgent, tmpDir } from '../helpers.js'

const TOKEN = 'a'.repeat(20) + 'secret-token-value'

function capture(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>)
      done()
    },
  })
  return { logger: pino({ level: 'info' }, stream), lines }
}

t.test('a bearer token guards every route but /healthz', async (t) => {
  const app = await testAgent(t, { token: TOKEN })
  const none = await app.inject({ method: 'GET', url: '/v1/injections' })
  t.equal(none.statusCode, 401)
  t.equal(none.json<{ code: string }>().code, 'FAULTLINE_ERR_UNAUTHORIZED')
  const wrong = await app.inject({ method: 'GET', url: '/v1/injections', headers: { authorization: `Bearer ${TOKEN}x` } })
  t.equal(wrong.statusCode, 401)
  const basic = await app.inject({ method: 'GET', url: '/v1/injections', headers: { authorization: `Basic ${TOKEN}` } })
  t.equal(basic.statusCode, 401)
  const right = await app.inject({ method: 'GET', url: '/v1/injections', headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(right.statusCode, 200)
  for (const url of ['/metrics', '/v1/capabilities', '/v1/targets', '/docs/json']) {
    t.equal((await app.inject({ method: 'GET', url })).statusCode, 401, `${url} needs the token`)
  }
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, '/healthz stays open for supervisors')
  const s = sleeper(t)
  const post = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault: { kind: 'process-stop' }, target: { type: 'process', pid: s.pid }, duration: '5s' } })
  t.equal(post.statusCode, 401, 'an unauthenticated injection is refused before anything happens')
})

t.test('tokens are compared in constant time, whatever their lengths', async (t) => {
  t.ok(tokensEqual(TOKEN, TOKEN))
  t.notOk(tokensEqual(TOKEN, TOKEN + 'x'))
  t.notOk(tokensEqual('', TOKEN))
  t.notOk(tokensEqual('x'.repeat(10_000), TOKEN), 'a long guess neither throws nor matches')
})

t.test('every mutating request is logged with who, what and from where; tokens never', async (t) => {
  const { logger, lines } = capture()
  const app = await testAgent(t, { token: TOKEN, logger })
  const s = sleeper(t)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    headers: { authorization: `Bearer ${TOKEN}` },
    payload: { fault: { kind: 'process-stop' }, target: { type: 'process', pid: s.pid }, duration: '5s' },
  })
  t.equal(res.statusCode, 201)
  await app.inject({ method: 'DELETE', url: '/v1/injections', headers: { authorization: `Bearer ${TOKEN}` } })
  const mutations = lines.filter((l) => l.msg === 'mutating request')
  t.same(mutations.map((l) => [l.who, l.method, l.url, l.status]), [
    ['token', 'POST', '/v1/injections', 201],
    ['token', 'DELETE', '/v1/injections', 200],
  ])
  t.ok(mutations.every((l) => typeof l.from === 'string'), 'with the source address')
  t.ok(lines.some((l) => l.msg === 'injection journaled' && l.who === 'token'), 'the journal entry names who asked')
  t.notOk(JSON.stringify(lines).includes(TOKEN), 'the token never reaches the log')
})

t.test('listen addresses: loopback by default, anything else needs TLS and authentication', async (t) => {
  t.same(parseListen('127.0.0.1:7070'), { host: '127.0.0.1', port: 7070 })
  t.same(parseListen('[::1]:7070'), { host: '::1', port: 7070 })
  t.throws(() => parseListen('7070'), ConfigError)
  t.throws(() => parseListen('host:99999'), ConfigError)
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost']) t.ok(isLoopback(h), h)
  for (const h of ['0.0.0.0', '10.200.0.1', '::', 'example.com']) t.notOk(isLoopback(h), h)
  const base = { stateDir: '/nonexistent', maxDuration: '1h', logLevel: 'info' }
  t.throws(() => checkExposure({ ...base, listen: '0.0.0.0:7070' }, parseListen('0.0.0.0:7070')), /without TLS and authentication/)
  t.throws(() => checkExposure({ ...base, listen: '0.0.0.0:7070', tokenFile: 'f' }, parseListen('0.0.0.0:7070')), /without TLS/, 'token without TLS is refused')
  t.throws(() => checkExposure({ ...base, listen: '0.0.0.0:7070', tlsCert: 'c', tlsKey: 'k' }, parseListen('0.0.0.0:7070')), /authentication/, 'TLS without credentials is refused')
  t.doesNotThrow(() => checkExposure({ ...base, listen: '0.0.0.0:7070', tlsCert: 'c', tlsKey: 'k', tokenFile: 'f' }, parseListen('0.0.0.0:7070')))
  t.doesNotThrow(() => checkExposure({ ...base, listen: '0.0.0.0:7070', tlsCert: 'c', tlsKey: 'k', tlsCa: 'ca' }, parseListen('0.0.0.0:7070')))
  // startAgent refuses before it opens the journal or a socket
  const dir = tmpDir(t)
  await t.rejects(startAgent({ ...base, stateDir: dir, listen: '0.0.0.0:0' }), /not loopback, without TLS/)
})

t.test('secret files must be long and private', async (t) => {
  const dir = tmpDir(t)
  const short = `${dir}/short`
  writeFileSync(short, 'abc', { mode: 0o600 })
  const open = `${dir}/open`
  writeFileSync(open, TOKEN, { mode: 0o644 })
  const base = { stateDir: dir, maxDuration: '1h', logLevel: 'info', listen: '127.0.0.1:0' }
  await t.rejects(startAgent({ ...base, tokenFile: short }), /fewer than 16 characters/)
  await t.rejects(startAgent({ ...base, tokenFile: open }), /readable by every user; chmod 600/)
  await t.rejects(startAgent({ ...base, tokenFile: `${dir}/missing` }), /cannot read token file/)
})

t.test('TLS with client certificates and a token, end to end over a real socket', async (t) => {
  const dir = tmpDir(t)
  const file = makePki(dir)
  const { readFileSync } = await import('node:fs')
  const { logger, lines } = capture()
  const app = await testAgent(t, {
    token: TOKEN,
    logger,
    tls: { cert: readFileSync(file('server.crt')), key: readFileSync(file('server.key')), ca: readFileSync(file('ca.crt')) },
  })
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  t.match(url, /^https:/)
  writeFileSync(file('token'), TOKEN, { mode: 0o600 })

  const client = new AgentClient({ url, tokenFile: file('token'), tlsCa: file('ca.crt'), tlsCert: file('client.crt'), tlsKey: file('client.key') })
  t.teardown(() => client.close())
  const ok = await client.call<{ injections: unknown[] }>('DELETE', '/v1/injections')
  t.equal(ok.status, 200)
  const entry = lines.find((l) => l.msg === 'mutating request')
  t.equal(entry?.who, 'cert:sre-alice+token', 'the certificate subject names the caller')

  const noCert = new Agent({ connect: { ca: readFileSync(file('ca.crt')) } })
  t.teardown(() => noCert.close())
  await t.rejects(request(`${url}/healthz`, { dispatcher: noCert }), 'without a client certificate the TLS handshake fails')

  const plain = url.replace('https:', 'http:')
  await t.rejects(request(`${plain}/healthz`, { headersTimeout: 2000 }), 'plain HTTP is not served')
})
