// Container targets against real runtimes: containerd, dockerd and podman as started by
// scripts/test-runtimes.sh (.ci/run starts them). Needs root. Each test runs its own containers
// (test/containers.ts) and removes them, also when it fails.
import t from 'tap'
import { defaultRuntimeSockets } from '../../../agent/capabilities/probe.js'
import { discoverFromCgroups } from '../../../agent/targets/containers/cgroups.js'
import { discoverContainers } from '../../../agent/targets/containers/index.js'
import { firstSocket, listEngineContainers } from '../../../agent/targets/containers/runtimes.js'
import { resolveTarget } from '../../../agent/targets/registry.js'
import type { TargetContext } from '../../../agent/targets/types.js'
import type { ResolvedContainer } from '../../../protocol/target.js'
import {
  TEST_IMAGE,
  netnsInodeOf,
  runContainer,
  runtimeUnavailable,
  skipUnlessRuntime,
  testRuntimes,
  uniqueName,
  type TestContainer,
  type TestRuntime,
} from '../../containers.js'
import { testAgent } from '../../helpers.js'

const containerdTaskDir = '/run/containerd/io.containerd.runtime.v2.task'
const paths = { procRoot: '/proc', netnsDir: '/var/run/netns', containerdTaskDir }
const ctx: TargetContext = { paths, selfPid: process.pid, hostname: 'test', runtimeSockets: defaultRuntimeSockets }
const nowhere = ['/nonexistent']
const noSockets = { docker: nowhere, containerd: nowhere, podman: nowhere, crio: nowhere }

interface InjectionBody {
  resolved: ResolvedContainer
  plan: { netns: { kind: string; path: string; inode: number } }
  dryRun?: boolean
}

/** A dry-run network-partition on the selector: what the agent resolves it to, touching nothing. */
function dryRunPayload(target: Record<string, unknown>) {
  return { fault: { kind: 'network-partition', direction: 'both', peers: ['10.200.0.1/32'] }, target: { type: 'container', ...target }, duration: '60s', dryRun: true }
}

const isOurs = (c: TestContainer) => (r: { id: string; runtime: string }) => r.id === c.id && r.runtime === c.runtime

for (const runtime of testRuntimes) {
  t.test(`${runtime}: a real container is found through cgroupfs and its socket, and matched by id prefix, name and label`, { skip: skipUnlessRuntime(runtime) }, async (t) => {
    const caseLabel = uniqueName('case')
    const c = await runContainer(t, runtime, { labels: { 'faultline-test.case': caseLabel } })
    const netnsInode = netnsInodeOf(c.pid)

    // 1. cgroupfs alone
    const fromCgroups = discoverFromCgroups({ procRoot: '/proc', containerdTaskDir }).filter(isOurs(c))
    t.equal(fromCgroups.length, 1, 'found once through /proc/*/cgroup')
    const found = fromCgroups[0]!
    t.equal(found.initPid, c.pid, "init pid is the runtime's")
    t.ok(found.pids.includes(c.pid))
    t.equal(found.netnsInode, netnsInode)
    t.equal(found.namespace, runtime === 'containerd' ? c.namespace : runtime === 'docker' ? 'moby' : undefined)
    t.ok(Object.values(found.cgroupPaths).some((p) => p.includes(c.id)), 'cgroup paths name the container')

    // 2. enriched through the runtime's socket
    const report = await discoverContainers(ctx)
    t.ok(report.sockets.some((s) => s.runtime === runtime && s.ok), `${runtime} socket answered`)
    t.same(report.unenriched.filter((u) => u.runtime === runtime), [])
    const enriched = report.containers.find(isOurs(c))
    t.ok(enriched, 'listed by discoverContainers')
    t.equal(enriched?.name, c.name)
    t.match(enriched?.labels, c.labels, 'labels from the runtime')
    t.equal(enriched?.image, TEST_IMAGE)
    t.equal(enriched?.initPid, c.pid)
    t.equal(enriched?.netnsInode, netnsInode)

    if (runtime !== 'containerd') {
      // Both listings of the Engine API socket, whichever is asked first, say which runtime it is.
      const socket = firstSocket(defaultRuntimeSockets[runtime])!
      for (const libpodFirst of [false, true]) {
        const listed = (await listEngineContainers(socket, { libpodFirst })).filter(isOurs(c))
        t.match(listed, [{ runtime, name: c.name, labels: c.labels, image: TEST_IMAGE }], `${libpodFirst ? 'libpod listing first' : 'Docker API listing'}: ${runtime} told apart`)
      }
    }

    // 3. the agent API: listing, and resolution through a dry run (nothing is applied)
    const app = await testAgent(t)
    const listed = await app.inject({ method: 'GET', url: '/v1/targets?type=container' })
    t.equal(listed.statusCode, 200)
    const ours = (listed.json() as { targets: ResolvedContainer[] }).targets.filter(isOurs(c))
    t.equal(ours.length, 1, 'GET /v1/targets?type=container lists it')
    t.match(ours[0], { name: c.name, labels: c.labels, image: TEST_IMAGE, initPid: c.pid, netnsInode })

    const idPrefix = runtime === 'containerd' ? c.id.slice(0, -2) : c.id.slice(0, 12)
    const selectors: [string, Record<string, unknown>][] = [
      ['id prefix', { id: idPrefix }],
      ['id prefix and runtime', { id: idPrefix, runtime }],
      ['name', { name: c.name }],
      ['label', { labels: { 'faultline-test.case': caseLabel } }],
      ['labels and runtime', { labels: { 'faultline-test': '1', 'faultline-test.case': caseLabel }, runtime }],
    ]
    for (const [what, selector] of selectors) {
      const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: dryRunPayload(selector) })
      t.equal(res.statusCode, 200, `dry run by ${what}: ${res.body.slice(0, 300)}`)
      const body = res.json() as InjectionBody
      t.match(body, { dryRun: true, resolved: { type: 'container', id: c.id, runtime, initPid: c.pid, netnsInode } }, `resolved by ${what}`)
      t.match(body.plan.netns, { kind: 'path', path: `/proc/${c.pid}/ns/net`, inode: netnsInode }, "the plan acts in the container's netns")
    }
    // An image matches every container of it, ours among them.
    const byImage = await resolveTarget({ type: 'container', image: 'localhost/faultline-test/busybox', runtime }, ctx)
    t.ok(byImage.some((r) => r.type === 'container' && isOurs(c)(r)), 'matched by image (repository, any tag)')
    const other = testRuntimes.find((r) => r !== runtime)!
    const wrongRuntime = await app.inject({ method: 'POST', url: '/v1/injections', payload: dryRunPayload({ name: c.name, runtime: other }) })
    t.equal(wrongRuntime.statusCode, 422, 'another runtime does not match')
    t.equal(wrongRuntime.json().code, 'FAULTLINE_ERR_TARGET_NOT_FOUND')
    t.equal((await app.inject({ method: 'GET', url: '/v1/injections' })).json().injections.length, 0, 'dry runs journal nothing')
  })
}

const available = testRuntimes.filter((r) => !skipUnlessRuntime(r))
t.test(
  'with every runtime socket pointed at nothing, discovery still finds the containers; selection by name hints at ids',
  { skip: available.length === 0 ? testRuntimes.map((r) => `${r}: ${runtimeUnavailable(r)}`).join('; ') : false },
  async (t) => {
    const containers = await Promise.all(available.map((runtime: TestRuntime) => runContainer(t, runtime)))
    const blind: TargetContext = { ...ctx, runtimeSockets: noSockets }
    const report = await discoverContainers(blind)
    t.same(report.sockets, [], 'no socket asked')
    for (const c of containers) {
      const found = report.containers.filter(isOurs(c))
      t.equal(found.length, 1, `${c.runtime} container found`)
      t.match(found[0], { id: c.id, runtime: c.runtime, initPid: c.pid, netnsInode: netnsInodeOf(c.pid), labels: {} }, `${c.runtime}: id, runtime, init, netns`)
      t.ok(report.unenriched.some((u) => u.runtime === c.runtime && u.reason === 'no socket at /nonexistent'), `${c.runtime} reported as unenriched`)
    }

    const app = await testAgent(t, { runtimeSockets: noSockets })
    for (const c of containers) {
      const byId = await app.inject({ method: 'POST', url: '/v1/injections', payload: dryRunPayload({ id: c.runtime === 'containerd' ? c.id : c.id.slice(0, 12) }) })
      t.equal(byId.statusCode, 200, `${c.runtime}: selection by id works without sockets`)
      t.equal((byId.json() as InjectionBody).resolved.id, c.id)
      const byName = await app.inject({ method: 'POST', url: '/v1/injections', payload: dryRunPayload({ name: c.name }) })
      if (c.runtime === 'containerd') {
        // containerd has no names: the id (chosen by whoever ran it) is the name, no socket needed.
        t.equal(byName.statusCode, 200, 'containerd: its id serves as its name')
        continue
      }
      t.equal(byName.statusCode, 422, `${c.runtime}: selection by name fails without the socket`)
      t.equal(byName.json().code, 'FAULTLINE_ERR_TARGET_NOT_FOUND')
      t.match(byName.json().message, new RegExp(`named ${c.name} .*none answered for .*${c.runtime} \\(no socket at /nonexistent\\).*select those containers by id`))
      const byLabel = await app.inject({ method: 'POST', url: '/v1/injections', payload: dryRunPayload({ labels: { 'faultline-test': '1' }, runtime: c.runtime }) })
      t.equal(byLabel.statusCode, 422, `${c.runtime}: selection by label fails too`)
      t.match(byLabel.json().message, /select those containers by id/)
    }
  },
)
