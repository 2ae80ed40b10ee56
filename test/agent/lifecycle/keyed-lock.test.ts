import t from 'tap'
import { KeyedLock } from '../../../agent/lifecycle/keyed-lock.js'

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test('work on one key never interleaves; other keys run in parallel', async (t) => {
  const lock = new KeyedLock()
  const events: string[] = []
  const job = (key: string, name: string, ms: number) =>
    lock.run(key, async () => {
      events.push(`${name}:start`)
      await tick(ms)
      events.push(`${name}:end`)
      return name
    })
  const results = await Promise.all([job('a', 'a1', 30), job('a', 'a2', 5), job('b', 'b1', 5), job('a', 'a3', 1)])
  t.same(results, ['a1', 'a2', 'b1', 'a3'])
  const onA = events.filter((e) => e.startsWith('a'))
  t.same(onA, ['a1:start', 'a1:end', 'a2:start', 'a2:end', 'a3:start', 'a3:end'], 'a-jobs strictly one after another, in order')
  t.ok(events.indexOf('b1:end') < events.indexOf('a1:end'), 'b ran while a1 held its own key')
  t.equal(lock.size, 0, 'no keys left behind')
})

t.test('a failing job releases the key', async (t) => {
  const lock = new KeyedLock()
  await t.rejects(lock.run('k', async () => { throw new Error('boom') }), /boom/)
  t.equal(await lock.run('k', async () => 'next'), 'next')
  t.equal(lock.size, 0)
})
