import { statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { discoverFromCgroups, matchCgroupPath, parseProcCgroup } from '../../../../agent/targets/containers/cgroups.js'

// Container discovery from cgroup paths alone, on fixture strings and a fixture /proc tree
// (test/fixtures/proc-containers: stat, cgroup and ns/{pid,net} symlinks to files standing in
// for namespace inodes) with a fixture containerd task dir (test/fixtures/containerd-tasks).
const fixture = (path: string) => fileURLToPath(new URL(`../../../fixtures/${path}`, import.meta.url))
const containerdTaskDir = fixture('containerd-tasks')
const procRoot = fixture('proc-containers')
const match = (path: string) => matchCgroupPath(path, { containerdTaskDir })

const id = '3432181eafc19292c74781cf9b83d7273a9861fdf6873f19b84e7b0dcf0b2eea'
const id2 = '6b1e2c9e0f7a4d5b8c3e1f2a9d8c7b6a5f4e3d2c1b0a99887766554433221100'
const podUid = '0f5a8b2e-9c1d-4e7f-a3b6-2d4c8e1f0a97'
const podUidSystemd = podUid.replace(/-/g, '_')

t.test('docker: cgroupfs driver and systemd driver', async (t) => {
  t.same(match(`/docker/${id}`), { id, runtime: 'docker', namespace: 'moby' })
  t.same(match(`/system.slice/docker-${id}.scope`), { id, runtime: 'docker', namespace: 'moby' })
  t.same(match(`/docker/${id2}/docker/${id}`), { id, runtime: 'docker', namespace: 'moby' }, 'docker in docker: the inner container')
  t.equal(match(`/docker/${id.slice(0, 12)}`), undefined, 'a short id is not a container cgroup')
  t.equal(match('/system.slice/docker.service'), undefined, 'the daemon itself')
})

t.test('containerd: /<namespace>/<id> counts only with a task dir', async (t) => {
  t.same(match('/default/def'), { id: 'def', runtime: 'containerd', namespace: 'default' })
  t.equal(match('/default/other'), undefined, 'same shape, no task: not a container')
  t.equal(match('/k8s.io/def'), undefined, 'task dir is per namespace')
  t.equal(match('/system.slice/containerd.service'), undefined)
  t.same(matchCgroupPath('/default/def', { containerdTaskDir: '/nonexistent' }), undefined, 'without the task dir the shape proves nothing')
})

t.test('podman: cgroupfs and systemd managers; conmon is not the container', async (t) => {
  t.same(match(`/libpod_parent/libpod-${id}`), { id, runtime: 'podman' })
  t.same(match(`/machine.slice/libpod-${id}.scope`), { id, runtime: 'podman' })
  t.same(match(`/machine.slice/libpod-${id}.scope/container`), { id, runtime: 'podman' }, 'split cgroups: the container part')
  t.same(match(`/machine.slice/machine-libpod_pod_${id2}.slice/libpod-${id}.scope`), { id, runtime: 'podman' }, 'in a pod')
  t.equal(match(`/machine.slice/libpod-conmon-${id}.scope`), undefined)
  t.equal(match('/libpod_parent/conmon'), undefined)
})

t.test('CRI-O outside Kubernetes; its conmon is not the container', async (t) => {
  t.same(match(`/system.slice/crio-${id}.scope`), { id, runtime: 'crio' })
  t.equal(match(`/system.slice/crio-conmon-${id}.scope`), undefined)
})

t.test('kubelet: cgroupfs driver (burstable, besteffort, guaranteed)', async (t) => {
  t.same(match(`/kubepods/burstable/pod${podUid}/${id}`), { id, runtime: 'containerd', namespace: 'k8s.io', podUid })
  t.same(match(`/kubepods/besteffort/pod${podUid}/crio-${id}`), { id, runtime: 'crio', namespace: 'k8s.io', podUid })
  t.same(match(`/kubepods/pod${podUid}/${id}`), { id, runtime: 'containerd', namespace: 'k8s.io', podUid }, 'guaranteed pods sit right under kubepods')
  t.equal(match(`/kubepods/burstable/pod${podUid}`), undefined, 'the pod itself is not a container')
})

t.test('kubelet: systemd driver (burstable, besteffort, guaranteed)', async (t) => {
  t.same(match(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${podUidSystemd}.slice/cri-containerd-${id}.scope`), {
    id,
    runtime: 'containerd',
    namespace: 'k8s.io',
    podUid,
  })
  t.same(match(`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${podUidSystemd}.slice/crio-${id}.scope`), {
    id,
    runtime: 'crio',
    namespace: 'k8s.io',
    podUid,
  })
  t.same(match(`/kubepods.slice/kubepods-pod${podUidSystemd}.slice/cri-containerd-${id}.scope`), { id, runtime: 'containerd', namespace: 'k8s.io', podUid }, 'guaranteed')
  t.same(match(`/kubepods.slice/kubepods-pod${podUidSystemd}.slice/docker-${id}.scope`), { id, runtime: 'docker', namespace: 'k8s.io', podUid }, 'cri-dockerd')
  t.same(match(`/system.slice/cri-containerd-${id}.scope`), { id, runtime: 'containerd', namespace: 'k8s.io' }, 'outside the kubepods tree')
  t.equal(match(`/kubepods.slice/kubepods-pod${podUidSystemd}.slice`), undefined)
})

t.test('LXC: lxc.payload.<name> (LXC 4+) and /lxc/<name>; the monitor is not the container', async (t) => {
  t.same(match('/lxc.payload.web'), { id: 'web', runtime: 'lxc', name: 'web' })
  t.same(match('/lxc/web'), { id: 'web', runtime: 'lxc', name: 'web' })
  t.equal(match('/lxc.monitor.web'), undefined)
})

t.test('systemd-nspawn: machine scope or nspawn service, names unescaped', async (t) => {
  t.same(match('/machine.slice/machine-web\\x2d1.scope'), { id: 'web-1', runtime: 'nspawn', name: 'web-1' })
  t.same(match('/machine.slice/machine-web\\x2d1.scope/payload'), { id: 'web-1', runtime: 'nspawn', name: 'web-1' })
  t.same(match('/machine.slice/systemd-nspawn@db.service/payload'), { id: 'db', runtime: 'nspawn', name: 'db' })
})

t.test('host cgroups are not containers', async (t) => {
  for (const path of ['/', '/init.scope', '/user.slice/user-0.slice/session-1.scope', '/system.slice/ssh.service', '/system.slice']) {
    t.equal(match(path), undefined, path)
  }
})

t.test('parseProcCgroup: v1 hierarchies, v2, hybrid, colons in paths', async (t) => {
  const hybrid = '12:pids:/docker/a\n4:cpu,cpuacct:/docker/a\n1:name=systemd:/docker/a\n0::/\n'
  t.same(parseProcCgroup(hybrid), { pids: '/docker/a', 'cpu,cpuacct': '/docker/a', 'name=systemd': '/docker/a', unified: '/' })
  t.same(parseProcCgroup('0::/system.slice/docker-x.scope\n'), { unified: '/system.slice/docker-x.scope' })
  t.same(parseProcCgroup('0::/odd:path:with:colons'), { unified: '/odd:path:with:colons' }, 'only the first two colons separate fields')
  t.same(parseProcCgroup(''), {})
  t.same(parseProcCgroup('garbage\n'), {}, 'lines without fields are skipped')
})

t.test('discoverFromCgroups on a fixture /proc', async (t) => {
  const found = discoverFromCgroups({ procRoot, containerdTaskDir })
  const inode = (ns: string) => statSync(`${procRoot}/ns/${ns}`).ino
  t.same(
    found.map((c) => `${c.runtime}/${c.id}`),
    [`containerd/def`, `docker/${id}`, `docker/${id2}`, 'nspawn/web-1'],
    'the qemu VM in machine.slice and the /default/other look-alike without a task are not containers',
  )
  const byId = new Map(found.map((c) => [c.id, c]))

  const docker = byId.get(id)!
  t.same(docker.pids, [101, 102, 103], 'processes exec-ed in count; the zombie does not')
  t.equal(docker.initPid, 101, 'init: the oldest process with a pid namespace of its own, not the later exec')
  t.equal(docker.initStartTime, 510)
  t.equal(docker.netnsInode, inode('net-docker'))
  t.same(docker.cgroupPaths, { unified: `/system.slice/docker-${id}.scope` })

  const ctr = byId.get('def')!
  t.equal(ctr.namespace, 'default')
  t.same(ctr.pids, [401, 402])
  t.equal(ctr.initPid, 401)
  t.same(ctr.cgroupPaths, { unified: '/default/def' }, 'cut at the container, not at the "/def" inside "/default"')
  t.equal(ctr.netnsInode, inode('net-ctr'))

  const hostPid = byId.get(id2)!
  t.equal(hostPid.initPid, 600, 'sharing the host pid namespace: the oldest process whose parent is outside')
  t.equal(hostPid.netnsInode, inode('net-hostpid'))
  t.equal(hostPid.cgroupPaths.unified, '/', 'v2 unused: found through the v1 hierarchies')
  t.equal(hostPid.cgroupPaths.freezer, `/docker/${id2}`)

  const nspawn = byId.get('web-1')!
  t.same(nspawn.pids, [201, 202], 'the supervisor (systemd-nspawn itself) is not in the container')
  t.equal(nspawn.initPid, 201)
  t.equal(nspawn.netnsInode, inode('net-nspawn'), "the payload's netns, never the host's")
  t.equal(nspawn.name, 'web-1')
  t.same(nspawn.cgroupPaths, { unified: '/machine.slice/machine-web\\x2d1.scope/payload' })
})
