// The chaosd listeners of a real agent process: kill -9 with a chaosd-started fault active is
// recovered at the next start (and DELETE then answers 404); mutual TLS as Chaos Mesh's
// security mode connects (ServerName chaosd.chaos-mesh.org, a client certificate from the CA);
// the plain listener refuses attacks once TLS is on. Needs root and openssl.
import { execFileSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import t from 'tap'
import { procState, runCli, sleeper, startAgentProcess, tmpDir, waitFor, type AgentProcess } from '../helpers.js'

const root = process.getuid?.() === 0
const opts = { skip: root ? false : 'needs root' }

/** The URL the agent logged for a chaosd listener (the port is chosen by the kernel: :0). */
async function chaosdUrls(agent: AgentProcess, count: number): Promise<string[]> {
  const lines = await waitFor('the chaosd listeners', () => {
    const ready = agent.logs.filter((l) => l.msg === 'chaosd-compatible API ready')
    return ready.length >= count && ready
  }, 60_000)
  return lines.map((l) => String(l.url))
}

async function call(url: string, method: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { method, ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}) })
  const text = await res.text()
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} }
}

t.test('kill -9 with a chaosd attack active: recovered at restart; DELETE then answers 404', opts, async (t) => {
  const stateDir = tmpDir(t)
  const s = sleeper(t)
  const agent = await startAgentProcess(t, stateDir, { args: ['--chaosd-listen', '127.0.0.1:0'] })
  const [url] = await chaosdUrls(agent, 1)
  t.ok(agent.logs.some((l) => l.level === 40 && /plain HTTP without authentication/.test(String(l.msg))), 'a warning about the unauthenticated listener')
  const uid = randomUUID()
  t.same(await call(`${url}/api/attack/process`, 'POST', { uid, process: String(s.pid), signal: 19 }), { status: 200, body: { status: 200, message: 'attack successfully', uid } })
  await waitFor('stopped', () => procState(s.pid) === 'T')
  await waitFor('the audit line', () => agent.logs.some((l) => l.msg === 'mutating request' && String(l.who).startsWith('chaosd:127.0.0.1')))
  t.pass('the attack is in the audit log with who')

  agent.child.kill('SIGKILL')
  await agent.exited
  t.equal(procState(s.pid), 'T', 'still stopped while no agent runs')

  const again = await startAgentProcess(t, stateDir, { args: ['--chaosd-listen', '127.0.0.1:0'] })
  t.not(procState(s.pid), 'T', 'resumed by the reconcile at start, before the API answered')
  const [url2] = await chaosdUrls(again, 1)
  const del = await call(`${url2}/api/attack/${uid}`, 'DELETE')
  t.equal(del.status, 404, 'already recovered: 404, which Chaos Mesh reads as recovered')
  t.match(del.body, { error: true, code: 'error.api.resource_not_found' })
  const list = await call(`${url2}/api/experiments/`, 'GET')
  t.match(list.body, [{ uid, status: 'destroyed', kind: 'process' }], 'the experiment is still listed, from the journal')
  again.child.kill('SIGTERM')
  await again.exited
})

/** A throwaway CA, a server certificate for chaosd.chaos-mesh.org and a client certificate, with openssl. */
function chaosdPki(dir: string): (f: string) => string {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=chaos-mesh-test-ca')
  writeFileSync(`${dir}/server.ext`, 'subjectAltName=DNS:chaosd.chaos-mesh.org\nextendedKeyUsage=serverAuth\n')
  writeFileSync(`${dir}/client.ext`, 'extendedKeyUsage=clientAuth\n')
  for (const [name, cn] of [['server', 'chaosd.chaos-mesh.org'], ['client', 'chaos-controller-manager'], ['stranger', 'stranger']] as const) {
    ssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`)
    if (name === 'stranger') ssl('x509', '-req', '-in', `${name}.csr`, '-signkey', `${name}.key`, '-out', `${name}.crt`, '-days', '1')
    else ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', '-extfile', `${name}.ext`)
  }
  return (f: string) => `${dir}/${f}`
}

/** An HTTPS request the way Chaos Mesh's controller makes it (securityHTTPClient): its CA, a client certificate, ServerName chaosd.chaos-mesh.org. */
function tlsCall(url: string, method: string, tls: { ca: Buffer; cert?: Buffer; key?: Buffer }, body?: unknown): Promise<{ status: number; body: Record<string, unknown> } | { error: string }> {
  return new Promise((resolve) => {
    const req = request(url, { method, servername: 'chaosd.chaos-mesh.org', ...tls, headers: body !== undefined ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = ''
      res.on('data', (c: Buffer) => (text += c.toString()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} }))
    })
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }))
    if (body !== undefined) req.write(JSON.stringify(body))
    req.end()
  })
}

t.test('mutual TLS: no client certificate refused, a certificate from the CA accepted; the plain port serves only /api/system', opts, async (t) => {
  const pki = chaosdPki(tmpDir(t))
  const s = sleeper(t)
  const agent = await startAgentProcess(t, tmpDir(t), {
    args: ['--chaosd-tls-listen', '127.0.0.1:0', '--chaosd-tls-cert', pki('server.crt'), '--chaosd-tls-key', pki('server.key'), '--chaosd-tls-ca', pki('ca.crt'), '--chaosd-listen', '127.0.0.1:0'],
  })
  const urls = await chaosdUrls(agent, 2)
  const tlsUrl = urls.find((u) => u.startsWith('https:'))!
  const plainUrl = urls.find((u) => u.startsWith('http:'))!
  const ca = readFileSync(pki('ca.crt'))
  const uid = randomUUID()
  const body = { uid, process: String(s.pid), signal: 19 }

  const anonymous = await tlsCall(`${tlsUrl}/api/attack/process`, 'POST', { ca }, body)
  t.ok('error' in anonymous, `no client certificate: refused in the handshake (${JSON.stringify(anonymous)})`)
  const stranger = await tlsCall(`${tlsUrl}/api/attack/process`, 'POST', { ca, cert: readFileSync(pki('stranger.crt')), key: readFileSync(pki('stranger.key')) }, body)
  t.ok('error' in stranger, `a certificate from another CA: refused (${JSON.stringify(stranger)})`)
  t.equal(procState(s.pid), 'S', 'nothing happened')

  const plain = await call(`${plainUrl}/api/attack/process`, 'POST', body)
  t.equal(plain.status, 403, 'the plain port refuses attacks while TLS is on (not 404: Chaos Mesh would read that as recovered)')
  t.match(plain.body, { error: true, code: 'error.api.auth', message: /TLS listener/ })
  t.equal((await call(`${plainUrl}/api/attack/${uid}`, 'DELETE')).status, 403)
  t.match(await call(`${plainUrl}/api/system/health`, 'GET'), { status: 200, body: { status: 0 } }, 'but answers /api/system/health')
  t.equal(procState(s.pid), 'S', 'still nothing happened')

  const client = { ca, cert: readFileSync(pki('client.crt')), key: readFileSync(pki('client.key')) }
  const ok = await tlsCall(`${tlsUrl}/api/attack/process`, 'POST', client, body)
  t.same(ok, { status: 200, body: { status: 200, message: 'attack successfully', uid } }, 'a certificate from the CA, ServerName chaosd.chaos-mesh.org: accepted')
  await waitFor('stopped', () => procState(s.pid) === 'T')
  await waitFor('the audit line', () => agent.logs.some((l) => l.msg === 'mutating request' && l.who === 'chaosd:cert:chaos-controller-manager'))
  t.pass("the caller is logged by its certificate's CN")
  t.match(await tlsCall(`${tlsUrl}/api/attack/${uid}`, 'DELETE', client), { status: 200, body: { message: 'attack recover successfully', uid } })
  t.not(procState(s.pid), 'T', 'resumed')
  agent.child.kill('SIGTERM')
  await agent.exited
})

t.test('the chaosd flags are checked before the agent starts', opts, async (t) => {
  const dir = tmpDir(t)
  for (const [args, message] of [
    [['--chaosd-tls-listen', '127.0.0.1:0'], /--chaosd-tls-listen needs --chaosd-tls-cert and --chaosd-tls-key/],
    [['--chaosd-tls-ca', '/nonexistent'], /need --chaosd-listen or --chaosd-tls-listen/],
    [['--chaosd-listen', 'nowhere'], /is not HOST:PORT/],
    [['--chaosd-listen', '127.0.0.1:0', '--chaosd-default-duration', '2h'], /between 1s and --max-duration/],
  ] as const) {
    const res = await runCli(['agent', '--state-dir', dir, '--listen', `unix:${dir}/agent.sock`, ...args])
    t.equal(res.code, 2, args.join(' '))
    t.match(res.stderr, message)
  }
})
