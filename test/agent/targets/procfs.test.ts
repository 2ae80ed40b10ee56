import { fileURLToPath } from 'node:url'
import t from 'tap'
import { isKernelThread, listPids, parseStat, readCmdline, readStat } from '../../../agent/targets/procfs.js'
import { processResolver } from '../../../agent/targets/process.js'

const procRoot = fileURLToPath(new URL('../../fixtures/proc', import.meta.url))
const ctx = { paths: { procRoot, netnsDir: '/nonexistent', containerdTaskDir: '/nonexistent' }, selfPid: 99999, hostname: 'fixture', runtimeSockets: { docker: [], containerd: [], podman: [], crio: [] } }

t.test('stat parsing survives spaces and parentheses in comm', async (t) => {
  const stat = readStat(procRoot, 4242)!
  t.same(stat, { pid: 4242, comm: 'my (weird) name', state: 'S', ppid: 17, flags: 4194304, startTime: 123456 })
  t.equal(readStat(procRoot, 5), undefined, 'missing process is undefined')
  t.throws(() => parseStat('garbage'))
})

t.test('cmdline is NUL-separated arguments joined by spaces', async (t) => {
  t.equal(readCmdline(procRoot, 4242), 'sleep --flag value with space')
  t.equal(readCmdline(procRoot, 5), '')
})

t.test('kernel threads are recognised by PF_KTHREAD', async (t) => {
  t.ok(isKernelThread(readStat(procRoot, 2)!))
  t.notOk(isKernelThread(readStat(procRoot, 4242)!))
  t.same(listPids(procRoot), [2, 17, 4242])
})

t.test('the process resolver works on a fixture tree', async (t) => {
  const byName = await processResolver.resolve({ type: 'process', name: 'my (weird) name' }, ctx)
  t.same(byName.map((p) => p.type === 'process' && p.pid), [4242])
  const byCmdline = await processResolver.resolve({ type: 'process', cmdline: 'value with' }, ctx)
  t.same(byCmdline.map((p) => p.type === 'process' && p.startTime), [123456])
  await t.rejects(processResolver.resolve({ type: 'process', name: 'kthreadd' }, ctx), { code: 'FAULTLINE_ERR_TARGET_FORBIDDEN', message: /kernel thread/ })
  await t.rejects(processResolver.resolve({ type: 'process', pid: 2 }, ctx), { code: 'FAULTLINE_ERR_TARGET_FORBIDDEN' })
  await t.rejects(processResolver.resolve({ type: 'process', pid: 5 }, ctx), { code: 'FAULTLINE_ERR_TARGET_NOT_FOUND' })
  const discovered = await processResolver.discover(ctx)
  t.same(discovered.map((p) => p.type === 'process' && p.pid), [17, 4242], 'kernel threads are not offered')
})
