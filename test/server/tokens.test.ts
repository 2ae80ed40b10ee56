// The server has no unauthenticated mode, on loopback either: without token files it makes an
// admin and an enrolment token at its first start (0600, in its state dir), says where they
// are, keeps them across restarts, and the CLI on the same host finds the admin token.
import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import WebSocket from 'ws'
import { cliEntry, http, runCli, spawnLogged, tmpDir, waitFor, type TestLike } from '../helpers.js'

async function startServer(t: TestLike, stateDir: string) {
  const proc = spawnLogged(t, [process.execPath, '--import', 'tsx', cliEntry, 'server', '--listen', '127.0.0.1:0', '--state-dir', stateDir, '--log-level', 'info'])
  const ready = await waitFor('the server to be ready', () => {
    if (!proc.running()) throw new Error(`server exited: ${proc.stderr()}`)
    return proc.logs.find((l) => l.msg === 'faultline server ready')
  }, 60_000)
  return { proc, url: String(ready.url) }
}

t.test('tokens made at the first start, kept at the next; nothing answers without one', async (t) => {
  const stateDir = tmpDir(t)
  const { proc, url } = await startServer(t, stateDir)
  const admin = join(stateDir, 'admin.token')
  const enrol = join(stateDir, 'enrol.token')
  for (const file of [admin, enrol]) t.equal(statSync(file).mode & 0o777, 0o600, `${file} is 0600`)
  t.match(proc.stderr(), new RegExp(`the admin token is in ${admin.replace(/[.]/g, '\\.')}`), 'its path is printed')
  const token = readFileSync(admin, 'utf8').trim()
  t.ok(token.length >= 40, 'a long random token')

  t.equal((await http(`${url}/v1/agents`)).status, 401, 'no token, no answer (also on loopback)')
  t.equal((await http(`${url}/v1/agents`, { headers: { authorization: `Bearer ${token}` } })).status, 200)
  t.equal((await http(`${url}/healthz`)).status, 200, '/healthz stays open')

  // An agent may enrol only with the enrolment token.
  const refused = await new Promise<number>((resolve) => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}/v1/agents/connect`)
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
    ws.on('open', () => resolve(101))
    ws.on('error', () => undefined)
  })
  t.equal(refused, 401, 'an agent without the enrolment token is refused at the upgrade')

  const cli = await runCli(['agents', 'ls', '--json', '--server', url, '--server-state-dir', stateDir])
  t.equal(cli.code, 0, `the CLI finds the admin token in the server's state dir: ${cli.stderr}`)

  proc.child.kill('SIGTERM')
  await proc.exited
  const again = await startServer(t, stateDir)
  t.equal(readFileSync(admin, 'utf8').trim(), token, 'the same token after a restart')
  t.notMatch(again.proc.stderr(), /the admin token is in/, 'and nothing new to say')
  t.equal((await http(`${again.url}/v1/agents`, { headers: { authorization: `Bearer ${token}` } })).status, 200)
})
