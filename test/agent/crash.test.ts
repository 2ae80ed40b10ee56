// Crash safety: the agent runs as a real child process and is killed with SIGKILL at each step
// of the lifecycle; after a restart the process must run again before /healthz answers.
// Needs: Linux /proc and pidfd (any root or non-root user that owns the sleeper).
import t, { type Test } from 'tap'
import type { Injection } from '../../protocol/injection.js'
import { http, procState, sleeper, startAgentProcess, tmpDir, waitFor  , type AgentProcess } from '../helpers.js'

async function postStop(agent: AgentProcess, pid: number, duration = '60s'): Promise<{ status: number; body: Injection }> {
  return http<Injection>(`${agent.url}/v1/injections`, {
    method: 'POST',
    body: { fault: { kind: 'process-stop' }, target: { type: 'process', pid }, duration, id: `crash-${pid}` },
  })
}

/**
 * Restarts the agent on the same state dir and checks the order of events: by the time the
 * first /healthz answers, the process is already running again.
 */
async function restartAndCheck(t: Test, stateDir: string, pid: number): Promise<AgentProcess> {
  const agent = await startAgentProcess(t, stateDir)
  const health = await http<{ status: string }>(`${agent.url}/healthz`)
  const stateAtFirstAnswer = procState(pid)
  t.equal(health.status, 200)
  t.equal(stateAtFirstAnswer, 'S', 'the process runs again before /healthz answers')
  const reconciled = agent.logs.findIndex((l) => l.msg === 'reconciled the journal at start')
  const ready = agent.logs.findIndex((l) => l.msg === 'faultline agent ready')
  t.ok(reconciled >= 0 && reconciled < ready, 'the journal was reconciled before the API listened')
  return agent
}

t.test('kill -9 while the injection is active', async (t) => {
  const stateDir = tmpDir(t)
  const s = sleeper(t)
  const first = await startAgentProcess(t, stateDir)
  const created = await postStop(first, s.pid)
  t.equal(created.status, 201)
  t.equal(procState(s.pid), 'T', 'stopped while active')
  first.child.kill('SIGKILL')
  await first.exited
  t.equal(procState(s.pid), 'T', 'still stopped: nobody resumed it while the agent was dead')

  const second = await restartAndCheck(t, stateDir, s.pid)
  const inj = await http<Injection>(`${second.url}/v1/injections/${created.body.id}`)
  t.equal(inj.body.status, 'recovered')
  t.match(inj.body.notes.join('\n'), /recovered at agent start: the previous agent stopped while this injection was active/)
})

t.test('kill -9 between the journal write and the apply', async (t) => {
  const stateDir = tmpDir(t)
  const s = sleeper(t)
  const first = await startAgentProcess(t, stateDir, { env: { FAULTLINE_CRASH_AT: 'after-journal' } })
  await t.rejects(postStop(first, s.pid), 'the agent dies mid-request')
  const exit = await first.exited
  t.equal(exit.signal, 'SIGKILL')
  t.equal(procState(s.pid), 'S', 'the signal was never sent')

  const second = await restartAndCheck(t, stateDir, s.pid)
  const inj = await http<Injection>(`${second.url}/v1/injections/crash-${s.pid}`)
  t.equal(inj.status, 200, 'the journal had the injection before anything touched the host')
  t.equal(inj.body.status, 'recovered')
  t.match(inj.body.notes.join('\n'), /while this injection was pending/)
})

t.test('kill -9 between the apply and the state write', async (t) => {
  const stateDir = tmpDir(t)
  const s = sleeper(t)
  const first = await startAgentProcess(t, stateDir, { env: { FAULTLINE_CRASH_AT: 'after-apply' } })
  await t.rejects(postStop(first, s.pid))
  const exit = await first.exited
  t.equal(exit.signal, 'SIGKILL')
  t.equal(procState(s.pid), 'T', 'the process was stopped and the agent died before recording it')

  const second = await restartAndCheck(t, stateDir, s.pid)
  const inj = await http<Injection>(`${second.url}/v1/injections/crash-${s.pid}`)
  t.equal(inj.body.status, 'recovered')
  t.match(inj.body.notes.join('\n'), /while this injection was applying/)
})

t.test('deadline across a restart: an injection that expired while the agent was down is recovered at start', async (t) => {
  const stateDir = tmpDir(t)
  const s = sleeper(t)
  const first = await startAgentProcess(t, stateDir)
  const created = await postStop(first, s.pid, '2s')
  t.equal(created.status, 201)
  first.child.kill('SIGKILL')
  await first.exited
  await new Promise((r) => setTimeout(r, 4_000))
  t.equal(procState(s.pid), 'T', 'nothing resumed it while the agent was down')
  const second = await restartAndCheck(t, stateDir, s.pid)
  const inj = await http<Injection>(`${second.url}/v1/injections/${created.body.id}`)
  t.equal(inj.body.status, 'recovered')
  t.ok(new Date(inj.body.recoveredAt!).getTime() > new Date(inj.body.expiresAt).getTime(), 'recovered after its deadline, at start')
})

t.test('graceful stop (SIGTERM) recovers every injection before exit', async (t) => {
  const stateDir = tmpDir(t)
  const s = sleeper(t)
  const agent = await startAgentProcess(t, stateDir)
  await postStop(agent, s.pid)
  t.equal(procState(s.pid), 'T')
  agent.child.kill('SIGTERM')
  const exit = await agent.exited
  t.equal(exit.code, 0)
  t.equal(procState(s.pid), 'S', 'resumed at shutdown')
  const again = await startAgentProcess(t, stateDir)
  t.notOk(again.logs.some((l) => l.msg === 'reconciled the journal at start'), 'nothing left to reconcile')
  const inj = await http<Injection>(`${again.url}/v1/injections/crash-${s.pid}`)
  t.equal(inj.body.status, 'recovered')
})

t.test('the deadline is enforced by the agent', async (t) => {
  const stateDir = tmpDir(t)
  const s = sleeper(t)
  const agent = await startAgentProcess(t, stateDir)
  const created = await postStop(agent, s.pid, '2s')
  t.equal(procState(s.pid), 'T')
  await waitFor('the deadline recovery', () => procState(s.pid) === 'S', 5_000)
  const inj = await http<Injection>(`${agent.url}/v1/injections/${created.body.id}`)
  t.equal(inj.body.status, 'recovered')
  const late = new Date(inj.body.recoveredAt!).getTime() - new Date(inj.body.expiresAt).getTime()
  t.ok(late >= 0, 'not before the deadline')
  t.comment(`recovered ${late} ms after the deadline`)
})
