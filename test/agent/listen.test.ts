// The agent's Unix socket over its lifetime: a second agent refuses a socket a running agent
// holds (and touches nothing), a socket left by an agent killed with SIGKILL is taken over, a
// graceful stop removes it, and --listen refuses what it cannot use. Needs root (it stops a
// process).
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { procState, runCli, sleeper, startAgentProcess, tmpDir, waitFor } from '../helpers.js'

const root = process.getuid?.() === 0

t.test('one agent per socket; a dead agent\'s socket is taken over', { skip: root ? false : 'needs root' }, async (t) => {
  const dir = join(tmpDir(t), 'run')
  mkdirSync(dir, { mode: 0o755 })
  const socket = join(dir, 'agent.sock')
  const stateDir = tmpDir(t)
  const first = await startAgentProcess(t, stateDir, { listen: `unix:${socket}` })
  const s = sleeper(t)
  const on = ['--agent', `unix:${socket}`]
  const stop = await runCli(['inject', 'process-stop', '--target', `process:${s.pid}`, '--duration', '5m', '--detach', '--id', 'held', ...on])
  t.equal(stop.code, 0, stop.stderr)
  t.equal(procState(s.pid), 'T')

  const second = await runCli(['agent', '--listen', `unix:${socket}`, '--state-dir', tmpDir(t)])
  t.equal(second.code, 2, 'a second agent on the same socket exits 2')
  t.match(second.stderr, /another agent is listening on .*agent\.sock/)
  t.equal(procState(s.pid), 'T', "the first agent's fault is untouched")
  t.equal((await runCli(['ls', '--json', ...on])).code, 0, 'and the first agent still answers')

  first.child.kill('SIGKILL')
  await first.exited
  t.ok(existsSync(socket), 'SIGKILL leaves the socket file behind')
  const next = await startAgentProcess(t, stateDir, { listen: `unix:${socket}` })
  await waitFor('the restarted agent to recover the fault', () => procState(s.pid) === 'S', 20_000)
  const shown = JSON.parse((await runCli(['show', 'held', '--json', ...on])).stdout) as { status: string }
  t.equal(shown.status, 'recovered', 'the stale socket was taken over, and the journal reconciled')

  next.child.kill('SIGTERM')
  await next.exited
  t.notOk(existsSync(socket), 'a graceful stop removes the socket')
})

t.test('--listen refuses a socket path it cannot use, before it touches anything', async (t) => {
  const dir = tmpDir(t)
  const notSocket = join(dir, 'file.sock')
  writeFileSync(notSocket, '')
  const bad = await runCli(['agent', '--listen', `unix:${notSocket}`, '--state-dir', join(dir, 'state')])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /exists and is not a socket/)
  t.notOk(existsSync(join(dir, 'state', 'journal.sqlite')), 'no journal was opened')
  const relative = await runCli(['agent', '--listen', 'unix:agent.sock', '--state-dir', join(dir, 'state')])
  t.equal(relative.code, 2)
  t.match(relative.stderr, /needs an absolute path/)
  if (root) {
    const open = join(dir, 'open')
    mkdirSync(open)
    chmodSync(open, 0o777)
    const shared = await runCli(['agent', '--listen', `unix:${join(open, 'agent.sock')}`, '--state-dir', join(dir, 'state')])
    t.equal(shared.code, 2)
    t.match(shared.stderr, /writable by every user/)
  }
  const tls = await runCli(['agent', '--listen', `unix:${join(dir, 'a.sock')}`, '--token-file', notSocket, '--state-dir', join(dir, 'state')])
  t.equal(tls.code, 2)
  t.match(tls.stderr, /for a TCP --listen/)
})
