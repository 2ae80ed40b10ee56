import t from 'tap'
import { parseTargetShorthand, targetKey } from '../../protocol/target.js'

t.test('CLI target shorthand', async (t) => {
  t.same(parseTargetShorthand('host'), { type: 'host' })
  t.same(parseTargetShorthand('process:4242'), { type: 'process', pid: 4242 })
  t.same(parseTargetShorthand('process:pid=4242'), { type: 'process', pid: 4242 })
  t.same(parseTargetShorthand('process:name=nginx'), { type: 'process', name: 'nginx' })
  t.same(parseTargetShorthand('process:cmdline=^postgres: a=b,c'), { type: 'process', cmdline: '^postgres: a=b,c' }, 'value kept verbatim after the first =')
  for (const bad of ['', 'vm:1', 'host:x', 'process', 'process:', 'process:user=root', 'process:name=']) {
    t.throws(() => parseTargetShorthand(bad), { code: 'FAULTLINE_ERR_VALIDATION' }, bad)
  }
})

t.test('target keys name one concrete target', async (t) => {
  t.equal(targetKey({ type: 'host', hostname: 'h', netnsInode: 1 }), 'host')
  t.equal(targetKey({ type: 'process', pid: 7, startTime: 99, comm: 'x', cmdline: '', state: 'S' }), 'process:7:99')
})
