import t from 'tap'
import { faultKinds, getFaultKind } from '../../../agent/faults/registry.js'
import { processKill } from '../../../agent/faults/process-kill/index.js'
import { processStop } from '../../../agent/faults/process-stop/index.js'
import type { ResolvedProcess } from '../../../protocol/target.js'

const target: ResolvedProcess = { type: 'process', pid: 4242, startTime: 777, comm: 'sleep', cmdline: 'sleep 60', state: 'S' }
import { featureNames, type FeatureMap } from '../../../protocol/capabilities.js'

const features = Object.fromEntries(featureNames.map((f) => [f, { available: true, detail: '' }])) as FeatureMap
const ctx = {
  paths: { procRoot: '/nonexistent', netnsDir: '/nonexistent', containerdTaskDir: '/nonexistent' },
  features,
  control: { agentNetnsInode: 1, tcpPorts: [22] },
  injectionId: 'plan-test',
  facts: undefined,
}

t.test('plans are pure and say exactly what will happen', async (t) => {
  const stop = processStop.plan({ kind: 'process-stop' }, target, ctx)
  t.same(stop, processStop.plan({ kind: 'process-stop' }, target, ctx), 'same input, same plan')
  t.match(stop, { pid: 4242, startTime: 777 })
  t.same(stop.steps.map((s) => [s.phase, s.action]), [['apply', 'pidfd_send_signal'], ['recover', 'pidfd_send_signal']])
  t.match(stop.steps[0]!.detail, 'SIGSTOP to pid 4242 (sleep, start time 777)')
  t.same(processStop.undoFromPlan(stop), { mechanism: 'signal', pid: 4242, startTime: 777, comm: 'sleep' }, 'undo state derivable from the plan alone')

  const kill = processKill.plan({ kind: 'process-kill' }, target, ctx)
  t.equal(kill.signal, 'KILL', 'default signal')
  t.match(processKill.plan({ kind: 'process-kill', signal: 'TERM' }, target, ctx).steps[0]!.detail, /SIGTERM/)
  t.same(processKill.undoFromPlan(kill), { pid: 4242, startTime: 777, comm: 'sleep', signal: 'KILL', delivered: false })
})

t.test('plans refuse targets they cannot act on', async (t) => {
  t.throws(() => processStop.plan({ kind: 'process-stop' }, { ...target, state: 'T' }, ctx), { code: 'FAULTLINE_ERR_TARGET_STATE' })
  t.throws(() => processStop.plan({ kind: 'process-stop' }, { type: 'host', hostname: 'h', netnsInode: 1 }, ctx), { code: 'FAULTLINE_ERR_TARGET_UNSUPPORTED' })
  t.throws(() => processKill.plan({ kind: 'process-kill' }, { type: 'host', hostname: 'h', netnsInode: 1 }, ctx), { code: 'FAULTLINE_ERR_TARGET_UNSUPPORTED' })
})

t.test('recovery of a process that is gone counts as recovered', async (t) => {
  const outcome = await processStop.recover({ mechanism: 'signal', pid: 4_194_000, startTime: 1, comm: 'gone' }, { paths: { procRoot: '/proc', netnsDir: '/var/run/netns', containerdTaskDir: '/run/containerd/io.containerd.runtime.v2.task' }, log: (await import('pino')).pino({ level: 'silent' }) })
  t.match(outcome.note, /has exited; nothing to resume/)
})

t.test('the registry is the only list of kinds and every kind is complete', async (t) => {
  t.ok(faultKinds.some((k) => k.kind === 'process-kill') && faultKinds.some((k) => k.kind === 'process-stop'))
  t.equal(new Set(faultKinds.map((k) => k.kind)).size, faultKinds.length, 'kind names are unique')
  for (const k of faultKinds) {
    t.equal(getFaultKind(k.kind), k)
    t.equal((k.specSchema as unknown as { properties: { kind: { const: string } } }).properties.kind.const, k.kind, `${k.kind}: spec schema is discriminated by its kind`)
  }
})
