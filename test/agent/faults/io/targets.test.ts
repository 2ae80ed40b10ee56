// io-* on process and container targets: the mount is made in the target's mount namespace,
// so only the target sees the fault. A container of a real runtime (docker; the busybox test
// image of scripts/test-runtimes.sh) sees EIO at its own /data while the host reads the same
// files through /proc/<pid>/root normally; a process in a private mount namespace (unshare -m)
// is faulted while the host's view of the same directory is not. Needs root, /dev/fuse,
// native/iofault built, and for the container case dockerd with the test image.
import { spawn, execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import type { Injection } from '../../../../protocol/injection.js'
import { runContainer, runtimeCli, skipUnlessRuntime } from '../../../containers.js'
import { testAgent, waitFor } from '../../../helpers.js'
import { OPEN_RESULTS, canRun, ioTmp, iofaultMounts, makeDir, python } from './io.js'

const skip = canRun()
t.setTimeout(300_000)

const sh = (name: string, command: string) => runtimeCli(['docker', 'exec', name, 'sh', '-c', command]).then(
  (out) => ({ ok: true, out }),
  (err: Error) => ({ ok: false, out: err.message }),
)

t.test('container target: only the container sees the fault, at its own path', { skip: skip || skipUnlessRuntime('docker') }, async (t) => {
  const c = await runContainer(t, 'docker', { command: ['sh', '-c', 'mkdir -p /data && echo hello > /data/f && exec sleep 3600'] })
  await waitFor('/data/f in the container', async () => (await sh(c.name, 'cat /data/f')).ok)
  const app = await testAgent(t)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'io-error', path: '/data', errno: 'EIO', operations: ['open'] }, target: { type: 'container', name: c.name, runtime: 'docker' }, duration: '60s' },
  })
  t.equal(res.statusCode, 201, res.statusCode === 201 ? 'created' : res.body)
  const inj = res.json<Injection>()
  const inside = await sh(c.name, 'cat /data/f')
  t.notOk(inside.ok, 'cat /data/f fails inside the container')
  t.match(inside.out, /Input\/output error/, 'with EIO')
  // (/proc/<pid>/root/data would resolve in the container's mount tree: the host's view of the
  // same directory is the container's root file system, the overlay's merged dir)
  const merged = (await runtimeCli(['docker', 'inspect', '-f', '{{.GraphDriver.Data.MergedDir}}', c.id])).trim()
  t.equal(readFileSync(join(merged, 'data', 'f'), 'utf8'), 'hello\n', `the host reads the same file normally (${merged}/data/f)`)
  // (other tests running alongside may have mounts of their own in the host's namespace)
  t.same(iofaultMounts().filter((m) => m.source === `faultline-iofault-${inj.id}`), [], "the host's mount namespace does not have it")
  t.same(iofaultMounts(`/proc/${c.pid}/mountinfo`).map((m) => [m.mountPoint, m.source]), [['/data', `faultline-iofault-${inj.id}`]], "the container's has it at /data")
  t.match(JSON.stringify(inj.plan), /LD_PRELOAD/, 'the plan shows how the helper enters the mount namespace')

  const del = await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })
  t.equal(del.json<Injection>().status, 'recovered')
  const after = await sh(c.name, 'cat /data/f && echo new > /data/g && cat /data/g')
  t.ok(after.ok, 'the container reads and writes /data again')
  t.same(iofaultMounts(`/proc/${c.pid}/mountinfo`), [], 'no mount of ours left in the container')
})

t.test('process target in its own mount namespace: faulted there, not on the host', { skip }, async (t) => {
  const tmp = ioTmp(t)
  const data = makeDir(tmp, 'data', { 'f.txt': 'hello\n' })
  // A process in a private mount namespace (propagation private: nothing leaks back to the host).
  const proc = spawn('unshare', ['--mount', '--propagation', 'private', 'sleep', '600'], { stdio: 'ignore' })
  t.teardown(() => proc.kill('SIGKILL'))
  const pid = await waitFor('the process in its own mount namespace', () => {
    try {
      const own = readFileSync('/proc/self/mountinfo', 'utf8')
      const its = execFileSync('readlink', [`/proc/${proc.pid}/ns/mnt`], { encoding: 'utf8' })
      return its !== execFileSync('readlink', ['/proc/self/ns/mnt'], { encoding: 'utf8' }) && own ? proc.pid : undefined
    } catch {
      return undefined
    }
  })
  const app = await testAgent(t)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'io-error', path: data, errno: 'ENOSPC', operations: ['open'] }, target: { type: 'process', pid }, duration: '60s' },
  })
  t.equal(res.statusCode, 201, res.statusCode === 201 ? 'created' : res.body)
  const inside = await python<{ ok: number; errors: Record<string, number> }>(OPEN_RESULTS, [join(data, 'f.txt'), '20'], { nsenterPid: pid })
  t.same(inside, { ok: 0, errors: { ENOSPC: 20 } }, "every open fails with ENOSPC in the process's mount namespace")
  const host = await python<{ ok: number; errors: Record<string, number> }>(OPEN_RESULTS, [join(data, 'f.txt'), '20'])
  t.same(host, { ok: 20, errors: {} }, 'the host opens the same file normally')
  const del = await app.inject({ method: 'DELETE', url: `/v1/injections/${res.json<Injection>().id}` })
  t.equal(del.json<Injection>().status, 'recovered')
  const after = await python<{ ok: number; errors: Record<string, number> }>(OPEN_RESULTS, [join(data, 'f.txt'), '20'], { nsenterPid: pid })
  t.same(after, { ok: 20, errors: {} }, 'the process opens it again')
})
