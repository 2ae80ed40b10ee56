// Stacking faults on one device: loss (nft) + bandwidth (tbf) on the same veth both take effect,
// measured; recovering one leaves the other holding; recovering both leaves no trace. Needs root.
import t from 'tap'
import type { Injection } from '../../../../protocol/injection.js'
import { testAgent, type TestLike } from '../../../helpers.js'
import { background, measure, netSnapshot, netnsPair, tool, type TestNs } from '../../../net.js'

t.setTimeout(360_000)
const root = process.getuid?.() === 0

/** UDP loss from a to b:9100; 2 ms between datagrams keeps the rate far below the shaped 1 mbit. */
async function udpLoss(t: TestLike, a: TestNs, b: TestNs, count: number): Promise<number> {
  const sink = await background(t, b, 'udp-sink', 9100, 1500)
  await tool(a, 'udp-blast', b.ip, 9100, count, 2000)
  const { received } = (await sink.result) as { received: number }
  return 1 - received / count
}

t.test('loss + bandwidth on one device: both measured, recovered independently', { skip: root ? false : 'needs root' }, async (t) => {
  const app = await testAgent(t)
  const { a, b } = netnsPair(t)
  const before = netSnapshot(a)
  const post = async (fault: object) => {
    const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault, target: { type: 'netns', name: a.name }, duration: '10m' } })
    t.equal(res.statusCode, 201, res.body)
    return res.json<Injection>()
  }
  const loss = await post({ kind: 'network-loss', percent: 30, protocol: 'udp', ports: [9100], device: a.dev })
  const bandwidth = await post({ kind: 'network-bandwidth', rate: '1mbit', device: a.dev })

  const lossBoth = await udpLoss(t, a, b, 2000)
  const rateBoth = await measure(t, a, b, 9200)
  t.comment(`both active: UDP loss ${(lossBoth * 100).toFixed(1)} % (30 % requested), TCP ${(rateBoth.bitsPerSecond / 1e6).toFixed(3)} Mbit/s goodput (1 mbit requested)`)
  t.ok(lossBoth >= 0.26 && lossBoth <= 0.34, 'loss holds with bandwidth on the same device')
  t.ok(Math.abs(rateBoth.bitsPerSecond / 1e6 - 0.956) <= 0.15, 'bandwidth holds with loss on the same device')

  await app.inject({ method: 'DELETE', url: `/v1/injections/${loss.id}` })
  const lossAfter = await udpLoss(t, a, b, 1000)
  const rateAfter = await measure(t, a, b, 9201)
  t.comment(`loss recovered: UDP loss ${(lossAfter * 100).toFixed(1)} %, TCP ${(rateAfter.bitsPerSecond / 1e6).toFixed(3)} Mbit/s`)
  t.equal(lossAfter, 0, 'no more loss')
  t.ok(Math.abs(rateAfter.bitsPerSecond / 1e6 - 0.956) <= 0.15, 'the bandwidth limit still holds')

  await app.inject({ method: 'DELETE', url: `/v1/injections/${bandwidth.id}` })
  t.ok((await measure(t, a, b, 9202)).bitsPerSecond > 20e6, 'full speed again')
  t.same(netSnapshot(a), before, 'nothing left')
})
