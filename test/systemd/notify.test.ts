// Type=notify: the agent and the server send READY=1 themselves, from their main process, once
// their API answers, and STOPPING=1 when they stop. A stand-in for systemd (a Unix datagram
// socket bound by python3, as Node has none) receives what they send.
import { join } from 'node:path'
import t from 'tap'
import { sdNotify, socketAddress } from '../../common/sd-notify.js'
import { cliEntry, spawnLogged, tmpDir, waitFor, type TestLike } from '../helpers.js'

const receiver = `
import json, os, socket, sys
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + name[1:] if name.startswith("@") else name)
print(json.dumps({"bound": name}), flush=True)
while True:
    data, _ = s.recvfrom(4096)
    print(json.dumps({"message": data.decode()}), flush=True)
`

/** A pretend systemd on `name` (a path or "@abstract"): every datagram it gets, parsed. */
function fakeSystemd(t: TestLike, name: string) {
  const proc = spawnLogged(t, ['python3', '-c', receiver, name])
  const messages = () =>
    proc.logs.filter((l) => typeof l.message === 'string').map((l) => Object.fromEntries(String(l.message).split('\n').map((kv) => kv.split(/=(.*)/s).slice(0, 2))) as Record<string, string>)
  return { proc, messages, bound: waitFor('the notify socket', () => proc.logs.some((l) => l.bound), 10_000) }
}

t.test('sockaddr_un for a path and for an abstract name', async (t) => {
  const path = socketAddress('/run/systemd/notify')
  t.equal(path.length, 2 + '/run/systemd/notify'.length + 1, 'a path ends with its NUL')
  t.equal(path.addr.readUInt16LE(0), 1, 'AF_UNIX')
  const abstract = socketAddress('@/org/freedesktop/systemd1/notify/123')
  t.equal(abstract.length, 2 + '/org/freedesktop/systemd1/notify/123'.length + 1, 'an abstract name: a leading NUL, no terminator')
  t.equal(abstract.addr[2], 0)
  t.throws(() => socketAddress(`/${'x'.repeat(120)}`), /too long/)
  t.equal(sdNotify({ READY: 1 }, {}), false, 'without NOTIFY_SOCKET there is nobody to tell')
  t.throws(() => sdNotify({ READY: 1 }, { NOTIFY_SOCKET: 'relative/path' }), /neither a path nor an abstract name/)
})

t.test('the agent says READY=1 once its API answers, from its own pid, and STOPPING=1 at SIGTERM', async (t) => {
  const dir = tmpDir(t)
  const systemd = fakeSystemd(t, join(dir, 'notify'))
  await systemd.bound
  const socket = join(dir, 'agent.sock')
  const agent = spawnLogged(t, [process.execPath, '--import', 'tsx', cliEntry, 'agent', '--listen', `unix:${socket}`, '--state-dir', join(dir, 'state')], { NOTIFY_SOCKET: join(dir, 'notify') })
  const ready = await waitFor('READY=1', () => systemd.messages().find((m) => m.READY === '1'), 60_000)
  t.equal(ready.MAINPID, String(agent.child.pid), 'sent by the agent itself')
  t.match(ready.STATUS, `listening on unix:${socket}`)
  t.ok(agent.logs.some((l) => l.msg === 'faultline agent ready'), 'only after the API answers')
  t.equal(systemd.messages().length, 1, 'nothing before it')
  agent.child.kill('SIGTERM')
  t.equal((await agent.exited).code, 0)
  t.match(systemd.messages()[1], { STOPPING: '1', STATUS: /recovering every injection/ })
})

t.test('the server does the same, on an abstract socket as systemd uses', async (t) => {
  const dir = tmpDir(t)
  const name = `@fl-test-notify-${process.pid}`
  const systemd = fakeSystemd(t, name)
  await systemd.bound
  const server = spawnLogged(t, [process.execPath, '--import', 'tsx', cliEntry, 'server', '--listen', '127.0.0.1:0', '--state-dir', join(dir, 'server')], { NOTIFY_SOCKET: name })
  const ready = await waitFor('READY=1', () => systemd.messages().find((m) => m.READY === '1'), 60_000)
  t.equal(ready.MAINPID, String(server.child.pid))
  t.match(ready.STATUS, /^listening on http:\/\/127\.0\.0\.1:\d+$/)
  t.ok(server.logs.some((l) => l.msg === 'faultline server ready'))
  server.child.kill('SIGTERM')
  t.equal((await server.exited).code, 0)
  t.match(systemd.messages()[1], { STOPPING: '1' })
})

t.test('a start that fails never says READY=1', async (t) => {
  const dir = tmpDir(t)
  const systemd = fakeSystemd(t, join(dir, 'notify'))
  await systemd.bound
  const agent = spawnLogged(t, [process.execPath, '--import', 'tsx', cliEntry, 'agent', '--listen', 'unix:/sys/no/such/dir/agent.sock', '--state-dir', join(dir, 'state')], { NOTIFY_SOCKET: join(dir, 'notify') })
  t.not((await agent.exited).code, 0)
  t.same(systemd.messages(), [], 'systemd sees the process exit, not a ready service')
})
