import t from 'tap'
import { DeadlineScheduler } from '../../../agent/lifecycle/deadlines.js'

t.test('fires each deadline once, in order, including ones already past', async (t) => {
  const fired: string[] = []
  const s = new DeadlineScheduler((id) => fired.push(id), 50)
  t.teardown(() => s.stop())
  const now = Date.now()
  s.set('late', now + 120)
  s.set('soon', now + 40)
  s.set('past', now - 1000)
  s.set('dropped', now + 60)
  s.delete('dropped')
  await new Promise((r) => setTimeout(r, 250))
  t.same(fired, ['past', 'soon', 'late'])
  t.notOk(s.has('late'))
})

t.test('stop cancels everything', async (t) => {
  const fired: string[] = []
  const s = new DeadlineScheduler((id) => fired.push(id))
  s.set('x', Date.now() + 20)
  s.stop()
  s.set('y', Date.now() + 20)
  await new Promise((r) => setTimeout(r, 80))
  t.same(fired, [])
})
