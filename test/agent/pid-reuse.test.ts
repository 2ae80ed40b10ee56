// Pid reuse: the recorded pid now belongs to another process, which must not be signalled.
// The end-to-end case makes the kernel really hand the same pid to a new process by writing
// /proc/sys/kernel/ns_last_pid, which needs root (CI runs as root).
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import t from 'tap'
import { signalExactProcess } from '../../agent/targets/signal.js'
import type { Injection } from '../../protocol/injection.js'
import { http, procState, sleeper, startAgentProcess, startTimeOf, tmpDir, waitFor } from '../helpers.js'

t.test('signalExactProcess refuses a pid whose start time differs', async (t) => {
  const s = sleeper(t)
  const real = startTimeOf(s.pid)!
  t.equal(signalExactProcess('/proc', s.pid, real + 1, 'SIGSTOP'), 'pid-reused')
  t.equal(procState(s.pid), 'S', 'not stopped')
  t.equal(signalExactProcess('/proc', s.pid, real, 'SIGSTOP'), 'delivered')
  await waitFor('stopped', () => procState(s.pid) === 'T')
  t.equal(signalExactProcess('/proc', s.pid, real, 'SIGCONT'), 'delivered')
  s.child.kill('SIGKILL')
  await new Promise((r) => s.child.once('exit', r))
  t.equal(signalExactProcess('/proc', s.pid, real, 'SIGCONT'), 'exited')
})

/** Spawns `sleep` until the kernel gives it exactly `pid` (ns_last_pid = pid - 1 before each try). */
async function spawnWithPid(pid: number): Promise<ChildProcess | undefined> {
  for (let attempt = 0; attempt < 50; attempt++) {
    writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1))
    const child = spawn('sleep', ['600'], { stdio: 'ignore' })
    if (child.pid === pid) return child
    child.kill('SIGKILL')
    await new Promise((r) => child.once('exit', r))
  }
  return undefined
}

t.test('after a crash, a reused pid is not resumed by recovery', { skip: process.getuid?.() !== 0 ? 'needs root to write ns_last_pid' : false }, async (t) => {
  const stateDir = tmpDir(t)
  const original = sleeper(t)
  const pid = original.pid
  const agent = await startAgentProcess(t, stateDir)
  const created = await http<Injection>(`${agent.url}/v1/injections`, {
    method: 'POST',
    body: { fault: { kind: 'process-stop' }, target: { type: 'process', pid }, duration: '60s' },
  })
  t.equal(created.status, 201)
  agent.child.kill('SIGKILL')
  await agent.exited

  // The original process ends; the kernel hands its pid to a new process, which we stop ourselves.
  process.kill(pid, 'SIGCONT')
  original.child.kill('SIGKILL')
  await new Promise((r) => original.child.once('exit', r))
  const impostor = await spawnWithPid(pid)
  if (!impostor) {
    t.fail(`could not get pid ${pid} reused within 50 attempts`)
    return
  }
  t.teardown(() => {
    try {
      process.kill(pid, 'SIGCONT')
      impostor.kill('SIGKILL')
    } catch {
      /* gone */
    }
  })
  t.equal(impostor.pid, pid, 'the pid really was reused')
  t.not(startTimeOf(pid), created.body.resolved.type === 'process' ? created.body.resolved.startTime : -1, 'by a process with another start time')
  await waitFor('the impostor to sleep', () => procState(pid) === 'S')
  process.kill(pid, 'SIGSTOP')
  await waitFor('the impostor to stop', () => procState(pid) === 'T')

  const restarted = await startAgentProcess(t, stateDir)
  const inj = await http<Injection>(`${restarted.url}/v1/injections/${created.body.id}`)
  t.equal(inj.body.status, 'recovered')
  t.match(inj.body.notes.join('\n'), /pid now belongs to another process; nothing to resume/)
  t.equal(procState(pid), 'T', 'the new owner of the pid was not signalled (still stopped by us)')
})
