// network-partition and network-reject on the real kernel, inside namespace pairs the test
// creates (10.200.0.0/16). Needs root.
import t from 'tap'
import type { Injection } from '../../../../protocol/injection.js'
import { testAgent } from '../../../helpers.js'
import { background, enter, inNs, netSnapshot, netnsPair, tool } from '../../../net.js'

const root = process.getuid?.() === 0
const opts = { skip: root ? false : 'needs root (ip netns add)' }

t.test('partition: TCP connect times out while active, works after recovery; nothing left behind', opts, async (t) => {
  const app = await testAgent(t)
  const { a, b } = netnsPair(t)
  await background(t, b, 'tcp-listen', 9000)
  t.match(await tool(a, 'tcp-connect', b.ip, 9000, 1000), { ok: true }, 'connects before')
  const before = netSnapshot(a)

  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'network-partition', peers: [`${b.ip}/32`] }, target: { type: 'netns', name: a.name }, duration: '60s' },
  })
  t.equal(res.statusCode, 201, res.body)
  const inj = res.json<Injection>()
  t.match(inj.resolved, { type: 'netns', name: a.name })
  t.match(await tool(a, 'tcp-connect', b.ip, 9000, 1000), { ok: false, code: 'TIMEOUT' }, 'times out while partitioned')
  t.not(netSnapshot(a).nft, before.nft, 'our table is in the ruleset while active')

  const rec = await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })
  t.equal(rec.json<Injection>().status, 'recovered')
  t.match(await tool(a, 'tcp-connect', b.ip, 9000, 1000), { ok: true }, 'connects after recovery')
  t.same(netSnapshot(a), before, 'nft ruleset, iptables (both backends), qdiscs, filters and links as before')
})

t.test("a table that existed before is left alone: recovery deletes only the injection's own", opts, async (t) => {
  const app = await testAgent(t)
  const { a, b } = netnsPair(t)
  // the host's own firewall in the namespace, with a rule and a counter of its own
  inNs(a, ['nft', '-f', '-'], 'table inet site_fw {\n  chain input { type filter hook input priority 10; policy accept; tcp dport 8080 counter accept; }\n}\n')
  const before = netSnapshot(a)
  t.match(before.nft, /table inet site_fw/)
  const post = (fault: object) =>
    app.inject({ method: 'POST', url: '/v1/injections', payload: { fault, target: { type: 'netns', name: a.name }, duration: '60s' } })
  const first = await post({ kind: 'network-partition', peers: [b.ip] })
  const second = await post({ kind: 'network-reject', ports: [9000], direction: 'egress' })
  t.equal(first.statusCode, 201)
  t.equal(second.statusCode, 201)
  await app.inject({ method: 'DELETE', url: `/v1/injections/${first.json<Injection>().id}` })
  const mid = netSnapshot(a).nft
  t.match(mid, /table inet site_fw/, 'the site firewall is still there')
  t.match(mid, new RegExp((second.json<Injection>().plan as { table?: string }).table!), 'the other injection is still there')
  t.notMatch(mid, new RegExp((first.json<Injection>().plan as { table?: string }).table!), 'the recovered one is gone')
  await app.inject({ method: 'DELETE', url: `/v1/injections/${second.json<Injection>().id}` })
  t.same(netSnapshot(a), before, 'exactly as before, site firewall included')
})

t.test('partition only the peer asked for, in one direction', opts, async (t) => {
  const app = await testAgent(t)
  const { a, b } = netnsPair(t)
  await background(t, b, 'tcp-listen', 9000)
  await background(t, a, 'tcp-listen', 9001)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'network-partition', direction: 'ingress', ports: [9000] }, target: { type: 'netns', name: a.name }, duration: '60s' },
  })
  t.equal(res.statusCode, 201, res.body)
  // A's connections to B:9000 send SYNs fine but B's answers (source port 9000) are dropped on ingress
  t.match(await tool(a, 'tcp-connect', b.ip, 9000, 800), { ok: false, code: 'TIMEOUT' })
  // B connecting to A:9001 is untouched (other port)
  t.match(await tool(b, 'tcp-connect', a.ip, 9001, 800), { ok: true })
})

t.test('reject: ECONNREFUSED within 100 ms while active', opts, async (t) => {
  const app = await testAgent(t)
  const { a, b } = netnsPair(t)
  await background(t, b, 'tcp-listen', 9000)
  const before = netSnapshot(a)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'network-reject', ports: [9000], direction: 'egress' }, target: { type: 'netns', name: a.name }, duration: '60s' },
  })
  t.equal(res.statusCode, 201, res.body)
  const refused = await tool<{ ok: boolean; code: string; ms: number }>(a, 'tcp-connect', b.ip, 9000, 2000)
  t.equal(refused.code, 'ECONNREFUSED')
  t.ok(refused.ms < 100, `refused after ${refused.ms.toFixed(1)} ms`)
  await app.inject({ method: 'DELETE', url: '/v1/injections' })
  t.match(await tool(a, 'tcp-connect', b.ip, 9000, 1000), { ok: true })
  t.same(netSnapshot(a), before)
})

t.test('reject on ingress answers the peer with a reset; icmp-unreachable works for UDP too', opts, async (t) => {
  const app = await testAgent(t)
  const { a, b } = netnsPair(t)
  await background(t, a, 'tcp-listen', 9000)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'network-reject', localPorts: [9000], direction: 'ingress' }, target: { type: 'netns', name: a.name }, duration: '60s' },
  })
  t.equal(res.statusCode, 201, res.body)
  const refused = await tool<{ code: string; ms: number }>(b, 'tcp-connect', a.ip, 9000, 2000)
  t.equal(refused.code, 'ECONNREFUSED', 'B, connecting into A, is refused')
  const bad = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'network-reject', with: 'tcp-reset', protocol: 'udp' }, target: { type: 'netns', name: a.name }, duration: '60s' },
  })
  t.equal(bad.statusCode, 400)
  t.match(bad.json<{ message: string }>().message, /tcp-reset rejects TCP only/)
  const icmp = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'network-reject', with: 'icmp-unreachable', protocol: 'udp', ports: [53] }, target: { type: 'netns', name: a.name }, duration: '60s', dryRun: true },
  })
  t.equal(icmp.statusCode, 200)
  t.match((icmp.json<Injection>().plan as { script?: string }).script, /udp dport 53 reject with icmpx type port-unreachable/)
})

t.test('SSH is exempt by default; a spec can opt out', opts, async (t) => {
  const app = await testAgent(t)
  const { a, b } = netnsPair(t)
  await background(t, b, 'tcp-listen', 22)
  const post = (extra: object) =>
    app.inject({
      method: 'POST',
      url: '/v1/injections',
      payload: { fault: { kind: 'network-partition', ...extra }, target: { type: 'netns', name: a.name }, duration: '60s' },
    })
  const protectedRes = await post({})
  t.equal(protectedRes.statusCode, 201)
  t.match(await tool(a, 'tcp-connect', b.ip, 22, 1000), { ok: true }, 'SSH still connects through a full partition')
  await app.inject({ method: 'DELETE', url: `/v1/injections/${protectedRes.json<Injection>().id}` })
  const optOut = await post({ protectControlChannel: false })
  t.equal(optOut.statusCode, 201)
  t.match(await tool(a, 'tcp-connect', b.ip, 22, 800), { ok: false, code: 'TIMEOUT' }, 'with protectControlChannel: false, SSH is cut too')
})

t.test('dry run shows the exact nft script and argv, and changes nothing', opts, async (t) => {
  const app = await testAgent(t)
  const { a, b } = netnsPair(t)
  const before = netSnapshot(a)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: {
      fault: { kind: 'network-partition', direction: 'egress', peers: [b.ip, '10.200.9.0/24'], ports: [5432], protocol: 'tcp', device: a.dev },
      target: { type: 'netns', name: a.name },
      duration: '60s',
      id: 'pg.cut-1',
      dryRun: true,
    },
  })
  t.equal(res.statusCode, 200)
  const plan = res.json<Injection>().plan as unknown as { script: string; table: string; steps: { argv: string[] }[] }
  t.match(plan.table, /^faultline_pg_cut_1_[0-9a-f]{8}$/)
  t.equal(
    plan.script,
    [
      `create table inet ${plan.table}`,
      `table inet ${plan.table} {`,
      '  comment "faultline network-partition pg.cut-1"',
      '  chain egress {',
      '    type filter hook output priority filter; policy accept;',
      '    tcp sport 22 accept',
      '    tcp dport 22 accept',
      `    oifname "${a.dev}" ip daddr { ${b.ip}/32, 10.200.9.0/24 } tcp dport 5432 drop`,
      '  }',
      '}',
      '',
    ].join('\n'),
  )
  t.match(plan.steps[0]!.argv, [...enter(a.path), /\/nft$/, '-f', '-'])
  t.match(plan.steps[1]!.argv, [...enter(a.path), /\/nft$/, 'delete', 'table', 'inet', plan.table])
  t.same(netSnapshot(a), before)
})

t.test('a namespace that is gone by recovery counts as recovered', opts, async (t) => {
  const app = await testAgent(t)
  const { a } = netnsPair(t)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'network-partition' }, target: { type: 'netns', name: a.name }, duration: '60s' },
  })
  t.equal(res.statusCode, 201)
  const { spawnSync } = await import('node:child_process')
  spawnSync('ip', ['netns', 'del', a.name])
  const rec = (await app.inject({ method: 'DELETE', url: `/v1/injections/${res.json<Injection>().id}` })).json<Injection>()
  t.equal(rec.status, 'recovered')
  t.match(rec.notes.join('\n'), /is gone; nothing to remove/)
  const missing = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'network-partition' }, target: { type: 'netns', name: a.name }, duration: '60s' },
  })
  t.equal(missing.statusCode, 422)
  t.equal(missing.json<{ code: string }>().code, 'FAULTLINE_ERR_TARGET_NOT_FOUND')
})
