// The control link is never cut: an agent listening inside namespace A (TLS + token, as any
// non-loopback agent must) is driven from namespace B while a partition with direction "both"
// cuts everything else between A and B. Needs root.
import { writeFileSync } from 'node:fs'
import t from 'tap'
import type { Injection } from '../../../../protocol/injection.js'
import { makePki, startAgentProcess, tmpDir } from '../../../helpers.js'
import { background, netSnapshot, netnsPair, tool } from '../../../net.js'

const root = process.getuid?.() === 0

t.test("a full partition of the agent's own namespace keeps its API reachable", { skip: root ? false : 'needs root' }, async (t) => {
  const { a, b } = netnsPair(t)
  const dir = tmpDir(t)
  const pki = makePki(dir, a.ip)
  writeFileSync(pki('token'), 'control-channel-test-token-0123456789', { mode: 0o600 })
  const port = 7443
  await startAgentProcess(t, tmpDir(t), {
    netnsPath: a.path,
    listen: `${a.ip}:${port}`,
    args: ['--tls-cert', pki('server.crt'), '--tls-key', pki('server.key'), '--token-file', pki('token')],
  })
  const api = (method: string, path: string, body?: unknown) =>
    tool<{ status?: number; body?: Injection & { injections?: Injection[] }; error?: string }>(
      b, 'https', method, `https://${a.ip}:${port}${path}`, body === undefined ? '-' : JSON.stringify(body), pki('token'), pki('ca.crt'), 3000,
    )
  await background(t, a, 'tcp-listen', 9000)
  t.match(await tool(b, 'tcp-connect', a.ip, 9000, 1000), { ok: true }, 'B reaches a service in A before')
  t.equal((await api('GET', '/v1/injections')).status, 200, 'B reaches the agent API over TLS with the token')
  const before = netSnapshot(a)

  const created = await api('POST', '/v1/injections', { fault: { kind: 'network-partition', direction: 'both' }, target: { type: 'host' }, duration: '2m' })
  t.equal(created.status, 201, JSON.stringify(created))
  const inj = created.body!
  t.match(inj.resolved, { type: 'host' }, "the agent's own network namespace")
  t.match((inj.plan as { script?: string }).script, new RegExp(`tcp dport ${port} accept`), 'the API port is exempt in the plan')

  t.match(await tool(b, 'tcp-connect', a.ip, 9000, 800), { ok: false, code: 'TIMEOUT' }, 'everything else between A and B is cut')
  const during = await api('GET', `/v1/injections/${inj.id}`)
  t.equal(during.status, 200, 'a new TLS connection to the API still works through the partition')
  t.equal(during.body?.status, 'active')

  const recovered = await api('DELETE', `/v1/injections/${inj.id}`)
  t.equal(recovered.status, 200)
  t.equal(recovered.body?.status, 'recovered')
  t.match(await tool(b, 'tcp-connect', a.ip, 9000, 1000), { ok: true }, 'B reaches the service again')
  t.same(netSnapshot(a), before)
})
