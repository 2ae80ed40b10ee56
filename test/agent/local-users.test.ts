// What an unprivileged local user can do with a running agent (root): nothing. The agent's Unix
// socket refuses them, its TCP port wants a token they cannot read, and a fault they try (a
// file-replace of a root-owned 0600 file, the attack that started this) changes nothing. A member
// of the faultline group, and only such a member, may use the socket. Runs requests as `nobody`
// (uid 65534) through `node` and the built CLI. Needs root.
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { repoRoot, startAgentProcess, tmpDir, waitFor, type TestLike } from '../helpers.js'

const root = process.getuid?.() === 0
const NOBODY = 65534
const builtCli = join(repoRoot, 'dist', 'cli', 'main.js')
const opts = { skip: root ? false : 'needs root (it runs requests as nobody)' }

/** A directory anyone may enter (but not write): where a socket's own mode decides. */
function openDir(t: TestLike): string {
  const dir = join(tmpDir(t, 'fl-users-'), 'run')
  mkdirSync(dir, { mode: 0o755 })
  chmodSync(dir, 0o755)
  chmodSync(join(dir, '..'), 0o755)
  return dir
}

/** Runs a small Node script as another user; it prints one JSON line. */
function asUser(script: string, uid = NOBODY, gid = NOBODY): Record<string, unknown> {
  const res = spawnSync(process.execPath, ['-e', script], { uid, gid, encoding: 'utf8', timeout: 20_000, cwd: '/' })
  const line = res.stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as Record<string, unknown>
  } catch {
    return { raw: line, stderr: res.stderr, status: res.status }
  }
}

/** One HTTP request as another user, over a Unix socket or TCP: { status, code } or { error }. */
function requestAs(target: { socketPath: string } | { port: number }, method: string, path: string, opts: { body?: unknown; token?: string; uid?: number; gid?: number } = {}) {
  const options = { ...target, ...('port' in target ? { host: '127.0.0.1' } : {}), method, path, headers: { ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }), ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}) } }
  const script = `
    const r = require('http').request(${JSON.stringify(options)}, (res) => {
      let text = ''
      res.on('data', (c) => (text += c))
      res.on('end', () => { let code; try { code = JSON.parse(text).code } catch {} console.log(JSON.stringify({ status: res.statusCode, code })) })
    })
    r.on('error', (e) => console.log(JSON.stringify({ error: e.code })))
    r.end(${JSON.stringify(opts.body === undefined ? '' : JSON.stringify(opts.body))})`
  return asUser(script, opts.uid, opts.gid)
}

/** A root-owned 0600 file: what the attack rewrote. */
function secretFile(t: TestLike): { path: string; content: string } {
  const dir = tmpDir(t, 'fl-secret-')
  const path = join(dir, 'shadow')
  const content = 'root:$6$not-a-real-hash:19000:0:99999:7:::\n'
  writeFileSync(path, content, { mode: 0o600 })
  return { path, content }
}

const replaceBody = (path: string) => ({ fault: { kind: 'file-replace', path, pattern: 'root', replacement: 'toor' }, target: { type: 'host' }, duration: '1m' })

t.test("the agent's Unix socket refuses an unprivileged user; root uses it", opts, async (t) => {
  const dir = openDir(t)
  const socketPath = join(dir, 'agent.sock')
  const stateDir = tmpDir(t)
  await startAgentProcess(t, stateDir, { listen: `unix:${socketPath}` })
  t.equal(statSync(socketPath).mode & 0o777, 0o600, 'the socket is 0600 root (no faultline group here)')
  const secret = secretFile(t)

  for (const [method, path, body] of [['GET', '/v1/injections'], ['POST', '/v1/injections', replaceBody(secret.path)], ['DELETE', '/v1/injections']] as const) {
    t.same(requestAs({ socketPath }, method, path, { body }), { error: 'EACCES' }, `nobody: ${method} ${path} cannot even connect`)
  }
  const cli = spawnSync(process.execPath, [builtCli, 'ls', '--agent', `unix:${socketPath}`], { uid: NOBODY, gid: NOBODY, encoding: 'utf8', cwd: '/' })
  t.not(cli.status, 0, 'the CLI as nobody fails')
  t.match(cli.stderr, /permission denied on the agent's socket .* faultline group/, 'and says how to get access')

  t.same(requestAs({ socketPath }, 'GET', '/v1/injections', { uid: 0, gid: 0 }), { status: 200 }, 'root connects')
  t.equal(readFileSync(secret.path, 'utf8'), secret.content, 'the root-owned file is untouched')
  t.equal(statSync(secret.path).mode & 0o777, 0o600)
})

t.test('on loopback TCP: 401 without the token, and the token is root-only', opts, async (t) => {
  const stateDir = tmpDir(t)
  const agent = await startAgentProcess(t, stateDir)
  const port = Number(new URL(agent.url).port)
  const tokenFile = join(stateDir, 'agent.token')
  t.equal(statSync(tokenFile).mode & 0o777, 0o600, 'the token the agent made is 0600')
  t.equal(statSync(stateDir).mode & 0o077, 0, 'in a state dir only root may enter')
  const secret = secretFile(t)

  t.same(asUser(`try { require('fs').readFileSync(${JSON.stringify(tokenFile)}); console.log('{"read":true}') } catch (e) { console.log(JSON.stringify({ error: e.code })) }`), { error: 'EACCES' }, 'nobody cannot read the token')
  t.match(requestAs({ port }, 'POST', '/v1/injections', { body: replaceBody(secret.path) }), { status: 401, code: 'FAULTLINE_ERR_UNAUTHORIZED' }, 'nobody: no token, 401')
  t.match(requestAs({ port }, 'POST', '/v1/injections', { body: replaceBody(secret.path), token: 'a'.repeat(43) }), { status: 401 }, 'nobody: a guessed token, 401')
  t.match(requestAs({ port }, 'DELETE', '/v1/injections'), { status: 401 }, 'nobody cannot halt either')
  t.match(requestAs({ port }, 'GET', '/healthz'), { status: 200 }, '/healthz stays open for supervisors')
  const cli = spawnSync(process.execPath, [builtCli, 'ls', '--agent', agent.url, '--state-dir', stateDir], { uid: NOBODY, gid: NOBODY, encoding: 'utf8', cwd: '/' })
  t.not(cli.status, 0)
  t.match(cli.stderr, /FAULTLINE_ERR_UNAUTHORIZED/, 'the CLI as nobody is refused')

  t.match(requestAs({ port }, 'GET', '/v1/injections', { token: agent.token, uid: 0, gid: 0 }), { status: 200 }, 'with the token: 200')
  t.equal(readFileSync(secret.path, 'utf8'), secret.content, 'the root-owned file is untouched')
  const journal = agent.logs.filter((l) => l.msg === 'injection journaled')
  t.same(journal, [], 'nothing was ever journaled')
})

t.test('a member of the faultline group may use the socket', { skip: opts.skip || (spawnSync('groupadd', ['--help']).status !== 0 ? 'needs groupadd' : false) }, async (t) => {
  const existing = spawnSync('getent', ['group', 'faultline'], { encoding: 'utf8' })
  if (existing.status !== 0) {
    t.equal(spawnSync('groupadd', ['--system', 'faultline']).status, 0, 'made the faultline group for this test')
    t.teardown(() => void spawnSync('groupdel', ['faultline']))
  }
  const gid = Number(spawnSync('getent', ['group', 'faultline'], { encoding: 'utf8' }).stdout.split(':')[2])
  const dir = openDir(t)
  const socketPath = join(dir, 'agent.sock')
  const agent = await startAgentProcess(t, tmpDir(t), { listen: `unix:${socketPath}` })
  const st = statSync(socketPath)
  t.equal(st.mode & 0o777, 0o660, 'the socket is 0660')
  t.equal(st.gid, gid, 'root:faultline')
  t.same(requestAs({ socketPath }, 'GET', '/v1/injections', { uid: NOBODY, gid }), { status: 200 }, 'nobody in the faultline group connects')
  t.same(requestAs({ socketPath }, 'GET', '/v1/injections'), { error: 'EACCES' }, 'nobody outside it does not')
  const seen = await waitFor('the request in the log', () => agent.logs.find((l) => l.msg === 'request' && l.url === '/v1/injections'))
  t.equal(seen.who, `unix:uid=${NOBODY}`, 'the log names the caller by uid (SO_PEERCRED)')

  // A selector by name that reaches another user's process needs the caller to say so
  // (maxTargets, the CLI's --all): here nobody's name selector matches a process of root's.
  const comm = `flsl${process.pid.toString(36)}`.slice(0, 15)
  const binary = join(tmpDir(t), comm)
  copyFileSync('/bin/sleep', binary)
  chmodSync(binary, 0o755)
  const rootsOwn = spawn(binary, ['600'], { stdio: 'ignore' })
  t.teardown(() => void rootsOwn.kill('SIGKILL'))
  await waitFor('the renamed sleep', () => readFileSync(`/proc/${rootsOwn.pid}/comm`, 'utf8').trim() === comm)
  const byName = { fault: { kind: 'process-stop' }, target: { type: 'process', name: comm }, duration: '1m' }
  const refused = requestAs({ socketPath }, 'POST', '/v1/injections', { uid: NOBODY, gid, body: byName })
  t.same(refused, { status: 422, code: 'FAULTLINE_ERR_TOO_MANY_TARGETS' }, "another user's process by name: refused")
  t.equal(readFileSync(`/proc/${rootsOwn.pid}/stat`, 'utf8').split(') ')[1]![0], 'S', 'and left running')
  const meant = requestAs({ socketPath }, 'POST', '/v1/injections', { uid: NOBODY, gid, body: { ...byName, maxTargets: 1 } })
  t.same(meant, { status: 201 }, 'with maxTargets it is meant, and done')
  t.same(requestAs({ socketPath }, 'DELETE', '/v1/injections', { uid: NOBODY, gid }), { status: 200 }, 'recovered')
})
