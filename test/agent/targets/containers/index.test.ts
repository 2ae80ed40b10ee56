import { fileURLToPath } from 'node:url'
import t from 'tap'
import { containerResolver, discoverContainers, imageMatches } from '../../../../agent/targets/containers/index.js'
import type { TargetContext } from '../../../../agent/targets/types.js'

const fixture = (path: string) => fileURLToPath(new URL(`../../../fixtures/${path}`, import.meta.url))
const nowhere = ['/nonexistent/runtime.sock']
const ctx: TargetContext = {
  paths: { procRoot: fixture('proc-containers'), netnsDir: '/nonexistent', containerdTaskDir: fixture('containerd-tasks') },
  selfPid: 99999,
  hostname: 'fixture',
  runtimeSockets: { docker: nowhere, containerd: nowhere, podman: nowhere, crio: nowhere },
}

t.test('imageMatches: exact references, repositories without tag, Docker Hub short forms', async (t) => {
  const yes: [string, string][] = [
    ['busybox', 'docker.io/library/busybox:latest'],
    ['busybox', 'busybox:1.36'],
    ['busybox:latest', 'busybox'],
    ['busybox:latest', 'docker.io/library/busybox:latest'],
    ['library/busybox:1.36', 'busybox:1.36'],
    ['docker.io/library/busybox', 'busybox:1.36'],
    ['localhost/faultline-test/busybox', 'localhost/faultline-test/busybox:latest'],
    ['localhost:5000/app', 'localhost:5000/app:v2'],
    ['localhost:5000/app:v2', 'localhost:5000/app:v2'],
    ['app@sha256:abcd', 'app@sha256:abcd'],
    ['app', 'app@sha256:abcd'],
  ]
  const no: [string, string | undefined][] = [
    ['busybox:1.36', 'busybox:latest'],
    ['busybox', 'busybox-extra:latest'],
    ['faultline-test/busybox', 'localhost/faultline-test/busybox:latest'],
    ['localhost:5000/app:v1', 'localhost:5000/app:v2'],
    ['app', 'localhost:5000/app:v2'],
    ['localhost:5000/app', 'localhost:5001/app:v2'],
    ['app@sha256:abcd', 'app@sha256:ef01'],
    ['app:latest', 'app@sha256:abcd'],
    ['busybox', undefined],
  ]
  for (const [wanted, actual] of yes) t.ok(imageMatches(wanted, actual), `${wanted} matches ${actual}`)
  for (const [wanted, actual] of no) t.notOk(imageMatches(wanted, actual), `${wanted} does not match ${actual}`)
})

t.test('without sockets: containers found, unnamed but containerd ones and nspawn ones, and why', async (t) => {
  const report = await discoverContainers(ctx)
  t.same(
    report.containers.map((c) => [c.runtime, c.name ?? null]),
    [
      ['containerd', 'def'],
      ['docker', null],
      ['docker', null],
      ['nspawn', 'web-1'],
    ],
  )
  t.same(report.sockets, [], 'no socket was there to ask')
  t.same(
    report.unenriched.map((u) => u.runtime).sort(),
    ['containerd', 'docker'],
    'docker and containerd have containers here and no socket; nspawn needs none',
  )
})

t.test('selection without sockets: ids work, names fail with the "select by id" hint', async (t) => {
  const byId = await containerResolver.resolve({ type: 'container', id: '3432181e' }, ctx)
  t.same(byId.map((c) => c.type === 'container' && c.initPid), [101])
  const byName = await containerResolver.resolve({ type: 'container', name: 'def' }, ctx)
  t.same(byName.map((c) => c.type === 'container' && c.id), ['def'], "a containerd container's id is its name")
  await t.rejects(containerResolver.resolve({ type: 'container', name: 'web' }, ctx), {
    code: 'FAULTLINE_ERR_TARGET_NOT_FOUND',
    message: /no running container named web \(4 containers found\).*none answered for docker \(no socket at \/nonexistent\/runtime\.sock\).*select those containers by id/,
  })
  await t.rejects(containerResolver.resolve({ type: 'container', labels: { app: 'web' }, runtime: 'nspawn' }, ctx), {
    code: 'FAULTLINE_ERR_TARGET_NOT_FOUND',
    message: /^no running container with labels app=web in nspawn \(4 containers found\)$/,
  }, 'no hint when the runtime asked for needs no socket')
  await t.rejects(containerResolver.resolve({ type: 'container', id: 'ffffff' }, ctx), { code: 'FAULTLINE_ERR_TARGET_NOT_FOUND', message: /with id ffffff/ })
})
