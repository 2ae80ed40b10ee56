// kill -9 of the agent with several network injections active on one namespace; after a
// restart the namespace's nft ruleset, iptables rules (both backends), qdiscs, filters and
// links are identical to before the injections. Needs root.
import t from 'tap'
import type { Injection } from '../../../../protocol/injection.js'
import { http, startAgentProcess, tmpDir } from '../../../helpers.js'
import { netSnapshot, netnsPair } from '../../../net.js'

const root = process.getuid?.() === 0

t.test('kill -9 with network injections active, restart: the namespace reads exactly as before', { skip: root ? false : 'needs root' }, async (t) => {
  const { a, b } = netnsPair(t)
  const stateDir = tmpDir(t)
  const before = netSnapshot(a)
  const agent = await startAgentProcess(t, stateDir)
  // nft tables (partition, loss, reject), iptables rules + a helper process (delay through
  // NFQUEUE), and an IFB link + ingress qdisc + tc filter (bandwidth ingress)
  const faults = [
    { kind: 'network-partition', peers: ['10.200.9.9'], direction: 'both' },
    { kind: 'network-loss', percent: 20, peers: [b.ip] },
    { kind: 'network-reject', ports: [9999], direction: 'egress' },
    { kind: 'network-delay', latency: '50ms', peers: [b.ip] },
    { kind: 'network-bandwidth', rate: '5mbit', direction: 'ingress', device: a.dev },
  ]
  const ids: string[] = []
  for (const fault of faults) {
    const res = await http<Injection>(`${agent.url}/v1/injections`, {
      method: 'POST',
      body: { fault, target: { type: 'netns', name: a.name }, duration: '10m' },
    })
    t.equal(res.status, 201, `${fault.kind}: ${JSON.stringify(res.body).slice(0, 200)}`)
    ids.push(res.body.id)
  }
  const during = netSnapshot(a)
  t.not(during.nft, before.nft, 'nft tables are in the namespace')
  t.not(during['iptables-legacy mangle'], before['iptables-legacy mangle'], 'iptables rules are in the namespace')
  t.not(during.links, before.links, 'the IFB link is in the namespace')
  agent.child.kill('SIGKILL')
  await agent.exited
  t.not(netSnapshot(a).nft, before.nft, 'and stay there while the agent is dead')

  const restarted = await startAgentProcess(t, stateDir)
  t.same(netSnapshot(a), before, 'identical to before, by the time the API answers')
  for (const id of ids) {
    const inj = await http<Injection>(`${restarted.url}/v1/injections/${id}`)
    t.equal(inj.body.status, 'recovered', `${inj.body.kind} recovered`)
  }
})
