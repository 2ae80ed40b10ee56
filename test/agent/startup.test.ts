// Startup, as a newcomer meets it: a second agent on a state dir in use stops at once (naming the
// running one) and touches none of its faults; a busy port is one line and a non-zero exit for
// the agent and the server, with nothing left running; a state dir made by hand under a loose
// umask is made private. Needs root for the process-stop it holds.
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { cliEntry, procState, runCli, sleeper, spawnLogged, startAgentProcess, tmpDir, waitFor, type TestLike } from '../helpers.js'

const root = process.getuid?.() === 0

/** A loopback TCP port something else holds, for as long as the test runs. */
async function busyPort(t: TestLike): Promise<number> {
  const holder: Server = createServer()
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => holder.close(() => resolve())))
  return (holder.address() as { port: number }).port
}

/** Processes whose command line names this state dir (what a failed start must not leave). */
function processesUsing(stateDir: string): number[] {
  const pids: number[] = []
  for (const pid of readdirSync('/proc').filter((n) => /^[0-9]+$/.test(n))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(stateDir)) pids.push(Number(pid))
    } catch {
      /* gone */
    }
  }
  return pids
}

t.test('a second agent on a state dir in use exits non-zero at once and leaves the first one\'s faults in', { skip: root ? false : 'needs root' }, async (t) => {
  const stateDir = tmpDir(t)
  const first = await startAgentProcess(t, stateDir)
  const on = ['--agent', first.url, '--token-file', join(stateDir, 'agent.token')]
  const s = sleeper(t)
  const stop = await runCli(['inject', 'process-stop', '--target', `process:${s.pid}`, '--duration', '5m', '--detach', '--id', 'held', ...on])
  t.equal(stop.code, 0, stop.stderr)
  t.equal(procState(s.pid), 'T')

  // As reported: the same state dir, on a port that is free and on one that is taken.
  for (const listen of ['127.0.0.1:0', new URL(first.url).host]) {
    const second = await runCli(['agent', '--listen', listen, '--state-dir', stateDir])
    t.not(second.code, 0, `a second agent (--listen ${listen}) exits non-zero`)
    t.match(second.stderr, new RegExp(`another agent \\(pid ${first.pid}\\) is running with the state dir`), 'and names the running one')
    t.match(second.stderr, /FAULTLINE_ERR_STATE_DIR_BUSY/)
    t.equal(second.stderr.trim().split('\n').length, 1, 'in one line')
    t.equal(procState(s.pid), 'T', "the first agent's fault is still in")
    const shown = JSON.parse((await runCli(['show', 'held', '--json', ...on])).stdout) as { status: string; notes?: string[] }
    t.equal(shown.status, 'active', 'and its injection is still active')
    t.notMatch(JSON.stringify(shown), /previous agent stopped/, 'with no note that it was recovered')
  }

  first.child.kill('SIGTERM')
  t.equal((await first.exited).code, 0)
  t.equal(procState(s.pid), 'S', 'the first agent recovers at its own stop')
  // The lock goes with the process: the next agent starts on the same dir.
  const next = await startAgentProcess(t, stateDir)
  next.child.kill('SIGTERM')
  await next.exited
})

t.test('a busy port: the agent says so in one line, exits non-zero, and leaves nothing running', async (t) => {
  const port = await busyPort(t)
  const stateDir = tmpDir(t)
  const res = await runCli(['agent', '--listen', `127.0.0.1:${port}`, '--state-dir', stateDir])
  t.not(res.code, 0, 'non-zero, so systemd sees it')
  t.match(res.stderr, new RegExp(`^faultline: cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use`))
  t.equal(res.stderr.trim().split('\n').length, 1, 'one line, no stack trace')
  t.same(processesUsing(stateDir), [], 'no process left')
  // It released its state dir: an agent starts there at once.
  const next = await startAgentProcess(t, stateDir)
  next.child.kill('SIGTERM')
  await next.exited
})

t.test('a busy port: the server too', async (t) => {
  const port = await busyPort(t)
  const stateDir = tmpDir(t)
  const res = await runCli(['server', '--listen', `127.0.0.1:${port}`, '--state-dir', stateDir])
  t.not(res.code, 0)
  // (its first start also says where it put the tokens it made)
  const errors = res.stderr.trim().split('\n').filter((l) => !l.startsWith('faultline server: the '))
  t.match(errors, [new RegExp(`^faultline: cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use`)])
  t.equal(errors.length, 1, 'one line, no stack trace')
  t.same(processesUsing(stateDir), [], 'no server left running without a port')
})

t.test('a second server on a state dir in use exits non-zero, naming the first', async (t) => {
  const stateDir = tmpDir(t)
  const first = spawnLogged(t, [process.execPath, '--import', 'tsx', cliEntry, 'server', '--listen', '127.0.0.1:0', '--state-dir', stateDir])
  await waitFor('the server to be ready', () => {
    if (!first.running()) throw new Error(first.stderr())
    return first.logs.find((l) => l.msg === 'faultline server ready')
  }, 60_000)
  const second = await runCli(['server', '--listen', '127.0.0.1:0', '--state-dir', stateDir])
  t.not(second.code, 0)
  t.match(second.stderr, new RegExp(`another server \\(pid ${first.child.pid}\\) is running with the state dir`))
  t.equal(second.stderr.trim().split('\n').length, 1)
  t.ok(first.running(), 'the first server keeps running')
  first.child.kill('SIGTERM')
  await first.exited
})

t.test('a state dir left open by hand is made private, with its journal', { skip: root ? false : 'needs root (a dir it owns)' }, async (t) => {
  const stateDir = join(tmpDir(t), 'state')
  mkdirSync(stateDir, { mode: 0o755 })
  chmodSync(stateDir, 0o755)
  const first = await startAgentProcess(t, stateDir)
  first.child.kill('SIGTERM')
  await first.exited
  chmodSync(stateDir, 0o755)
  chmodSync(join(stateDir, 'journal.sqlite'), 0o644)
  const again = await startAgentProcess(t, stateDir)
  t.equal(statSync(stateDir).mode & 0o777, 0o700, 'the dir is 0700 again')
  t.equal(statSync(join(stateDir, 'journal.sqlite')).mode & 0o777, 0o600, 'the journal 0600')
  again.child.kill('SIGTERM')
  await again.exited

  // A shared dir with other things in it is refused, never chmod-ed.
  const shared = join(tmpDir(t), 'shared')
  mkdirSync(shared, { mode: 0o755 })
  chmodSync(shared, 0o755)
  writeFileSync(join(shared, 'notes.txt'), 'mine\n')
  const res = await runCli(['agent', '--listen', '127.0.0.1:0', '--state-dir', shared])
  t.equal(res.code, 2)
  t.match(res.stderr, /is open to others and holds other files \(notes\.txt\)/)
  t.equal(statSync(shared).mode & 0o777, 0o755, 'left as it was')
  t.notOk(existsSync(join(shared, 'journal.sqlite')), 'no journal opened')
})
