import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { defaultRuntimeSockets } from '../agent/capabilities/probe.js'
import { discoverFromCgroups } from '../agent/targets/containers/cgroups.js'
import { discoverContainers } from '../agent/targets/containers/index.js'
import { resolveTarget } from '../agent/targets/registry.js'
import type { TargetContext } from '../agent/targets/types.js'
import type { ResolvedContainer } from '../protocol/target.js'
import {
  agentClient,
  formatMachine,
  machineInfo,
  ratio,
  startAgent,
  stderrProgress,
  stopAgent,
  summarise,
  table,
  us,
  withCleanup,
  type Cleanup,
  type LatencySummary,
  type MachineInfo,
} from './lib.js'

/**
 * Container discovery and selector resolution with many real containers running, through the
 * agent (in-process and over HTTP against the built agent), against the runtimes' own listings
 * (`ctr task ls`, `docker ps`, `podman ps`) in the same run. DESIGN.md section 7.
 *
 * Needs root and the runtimes of scripts/test-runtimes.sh (containerd, dockerd, podman's API
 * service, the busybox test image). Every container it starts carries the labels
 * faultline-test=1 and faultline-bench=<run>, and is removed at the end, on failure and on
 * Ctrl-C too (scripts/test-runtimes.sh stop would also remove them).
 */

type Runtime = 'docker' | 'containerd' | 'podman'
const runtimes: readonly Runtime[] = ['docker', 'containerd', 'podman']
const IMAGE = 'localhost/faultline-test/busybox:latest'
const CTR_NAMESPACE = 'faultline-test'
const containerdTaskDir = '/run/containerd/io.containerd.runtime.v2.task'

export interface DiscoveryBenchOptions {
  /** Containers to run, spread evenly over the runtimes that are there (default 100). */
  containers?: number
  /** Measured rounds (default 30). */
  rounds?: number
  /** Unmeasured rounds first (default 3). */
  warmupRounds?: number
  /** Containers started at once (default 4). */
  parallel?: number
  progress?: (line: string) => void
}

type Variant = 'discoverInProcess' | 'cgroupfsOnly' | 'discoverHttp' | 'resolveLabelInProcess' | 'resolveLabelHttpDryRun' | 'ctrTaskLs' | 'dockerPs' | 'podmanPs'

export interface DiscoveryBenchResult {
  benchmark: 'container-discovery'
  machine: MachineInfo
  rounds: number
  warmupRounds: number
  /** Containers running during the rounds, per runtime (all of them this run's). */
  containers: Partial<Record<Runtime, number>>
  /** Seconds to start them all, and to remove them all. */
  startSeconds: number
  removeSeconds: number
  latency: Partial<Record<Variant, LatencySummary>>
  ratios: {
    /** Agent discovery (every runtime) median / `docker ps` median (dockerd's containers only). */
    discoverVsDockerPs?: number
    discoverVsCtrTaskLs?: number
    discoverVsPodmanPs?: number
    httpVsDockerPs?: number
    httpVsCtrTaskLs?: number
    resolveVsDockerPs?: number
    resolveVsCtrTaskLs?: number
    /** Over HTTP / in-process: what the API adds (HTTP, validation, serialising 100 targets). */
    httpVsInProcess: number
  }
}

interface BenchContainer {
  runtime: Runtime
  name: string
  /** Full id once started (for containerd: the name). */
  id?: string
}

function cli(argv: string[], timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${argv.join(' ')}: ${stderr.trim() || err.message}`))
      else resolve(stdout)
    })
  })
}

const quiet = (argv: string[]) => cli(argv).then(
  () => true,
  () => false,
)

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket()
  } catch {
    return false
  }
}

async function runtimeReady(runtime: Runtime): Promise<string | undefined> {
  if (!defaultRuntimeSockets[runtime].some(isSocket)) return `no socket at ${defaultRuntimeSockets[runtime].join(' or ')}`
  const loaded =
    runtime === 'docker'
      ? await quiet(['docker', 'image', 'inspect', IMAGE])
      : runtime === 'podman'
        ? await quiet(['podman', 'image', 'exists', IMAGE])
        : (await cli(['ctr', '-n', CTR_NAMESPACE, 'images', 'ls', '-q']).catch(() => '')).split('\n').includes(IMAGE)
  return loaded ? undefined : `${IMAGE} is not loaded`
}

async function startContainer(c: BenchContainer, labels: string[]): Promise<void> {
  if (c.runtime === 'docker') {
    c.id = (await cli(['docker', 'run', '-d', '--network', 'none', ...labels, '--name', c.name, IMAGE])).trim()
  } else if (c.runtime === 'podman') {
    const ulimits = ['--ulimit', 'nofile=4096:4096', '--ulimit', 'nproc=4096:4096']
    c.id = (await cli(['podman', 'run', '-d', '--network', 'none', ...ulimits, ...labels, '--name', c.name, IMAGE])).trim()
  } else {
    await cli(['ctr', '-n', CTR_NAMESPACE, 'run', '-d', ...labels, IMAGE, c.name])
    c.id = c.name
  }
}

/** Removes the containers of one runtime (by name: also those whose start failed halfway). */
async function removeContainers(runtime: Runtime, names: string[], parallel: number): Promise<void> {
  if (names.length === 0) return
  if (runtime === 'docker') {
    await quiet(['docker', 'rm', '-f', '-v', ...names])
    return
  }
  if (runtime === 'podman') {
    await quiet(['podman', 'rm', '-f', '-i', '-v', '-t', '0', ...names])
    return
  }
  const ctr = (...args: string[]) => ['ctr', '-n', CTR_NAMESPACE, ...args]
  await inBatches(names, parallel, async (name) => {
    if (await quiet(ctr('tasks', 'kill', '-s', 'KILL', name))) {
      for (let i = 0; i < 100; i++) {
        const line = (await cli(ctr('tasks', 'ls')).catch(() => '')).split('\n').find((l) => l.split(/\s+/)[0] === name)
        if (!line || !/\bRUNNING\b/.test(line)) break
        await new Promise((r) => setTimeout(r, 50))
      }
    }
    await quiet(ctr('tasks', 'rm', '-f', name))
    await quiet(ctr('containers', 'rm', name))
  })
}

async function inBatches<T>(items: T[], parallel: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(parallel, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!)
    }),
  )
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now()
  await fn()
  return performance.now() - t0
}

export async function runDiscoveryBench(opts: DiscoveryBenchOptions = {}): Promise<DiscoveryBenchResult> {
  const total = opts.containers ?? 100
  const rounds = opts.rounds ?? 30
  const warmupRounds = opts.warmupRounds ?? 3
  const parallel = opts.parallel ?? 4
  const progress = opts.progress ?? stderrProgress
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`rounds must be a positive integer, not ${rounds}`)
  if (process.getuid?.() !== 0) throw new Error('the discovery benchmark needs root (it runs containers)')

  const present: Runtime[] = []
  for (const runtime of runtimes) {
    const why = await runtimeReady(runtime)
    if (why) progress(`${runtime}: not used (${why}); run scripts/test-runtimes.sh start`)
    else present.push(runtime)
  }
  if (present.length === 0) throw new Error('no container runtime is ready: run scripts/test-runtimes.sh start')

  return withCleanup(async (cleanup: Cleanup) => {
    const run = `${process.pid.toString(36)}${Date.now().toString(36)}`
    // 34 / 33 / 33 over three runtimes: the first ones take the remainder.
    const containers: BenchContainer[] = Array.from({ length: total }, (_, i) => ({
      runtime: present[i % present.length]!,
      name: `fl-bench-${run}-${String(i).padStart(3, '0')}`,
    }))
    let removeSeconds = 0
    // Registered before the first start: a run that fails halfway removes what it started.
    cleanup.add('remove the benchmark containers', async () => {
      progress(`removing ${containers.length} containers`)
      const t0 = performance.now()
      await Promise.all(present.map((r) => removeContainers(r, containers.filter((c) => c.runtime === r).map((c) => c.name), parallel)))
      removeSeconds = Math.round((performance.now() - t0) / 100) / 10
    })

    const counts: Partial<Record<Runtime, number>> = {}
    for (const c of containers) counts[c.runtime] = (counts[c.runtime] ?? 0) + 1
    progress(`starting ${total} containers (${present.map((r) => `${counts[r]} ${r}`).join(', ')}), ${parallel} at a time`)
    const t0 = performance.now()
    let started = 0
    // Interleaved over the runtimes, so each runtime's daemon works alongside the others.
    await inBatches(containers, parallel, async (c) => {
      const index = containers.indexOf(c)
      await startContainer(c, ['--label', 'faultline-test=1', '--label', `faultline-bench=${run}`, '--label', `faultline-bench.n=${index}`])
      if (++started % 20 === 0) progress(`  ${started}/${total} running`)
    })
    const startSeconds = Math.round((performance.now() - t0) / 100) / 10

    const stateDir = mkdtempSync(join(tmpdir(), 'fl-bench-'))
    cleanup.add('remove the state directory', () => rmSync(stateDir, { recursive: true, force: true }))
    progress(`starting the agent (state dir ${stateDir})`)
    const agent = await startAgent(stateDir)
    cleanup.add('stop the agent', () => stopAgent(agent))
    const { pool, call } = agentClient(agent)
    cleanup.add('close the HTTP pool', () => pool.destroy().catch(() => undefined))

    const ctx: TargetContext = {
      paths: { procRoot: '/proc', netnsDir: '/var/run/netns', containerdTaskDir },
      selfPid: process.pid,
      hostname: 'bench',
      runtimeSockets: defaultRuntimeSockets,
    }
    const ids = new Set(containers.map((c) => c.id!))
    /** Every container of this run is there, with its labels (so the sockets answered). */
    const checkAll = (list: ResolvedContainer[], what: string) => {
      const ours = list.filter((c) => ids.has(c.id) && c.labels['faultline-bench'] === run)
      if (ours.length !== total) throw new Error(`${what} found ${ours.length} of the ${total} containers with their labels`)
    }
    const lines = (out: string) => out.split('\n').filter((l) => l.includes(`fl-bench-${run}-`)).length

    let k = 0
    const variants: [Variant, () => Promise<number>][] = [
      ['discoverInProcess', () => timed(async () => checkAll((await discoverContainers(ctx)).containers, 'discoverContainers'))],
      [
        'cgroupfsOnly',
        () =>
          timed(async () => {
            const n = discoverFromCgroups({ procRoot: '/proc', containerdTaskDir }).filter((c) => ids.has(c.id)).length
            if (n !== total) throw new Error(`discoverFromCgroups found ${n} of ${total}`)
          }),
      ],
      [
        'discoverHttp',
        () =>
          timed(async () => {
            const body = JSON.parse(await call('GET', '/v1/targets?type=container', 200)) as { targets: ResolvedContainer[] }
            checkAll(body.targets, 'GET /v1/targets?type=container')
          }),
      ],
      [
        'resolveLabelInProcess',
        () => {
          const n = k++ % total
          return timed(async () => {
            const matched = await resolveTarget({ type: 'container', labels: { 'faultline-bench': run, 'faultline-bench.n': String(n) } }, ctx)
            if (matched.length !== 1 || (matched[0] as ResolvedContainer).id !== containers[n]!.id) throw new Error(`label n=${n} resolved to ${matched.length} targets`)
          })
        },
      ],
      [
        'resolveLabelHttpDryRun',
        () => {
          const n = k++ % total
          const payload = JSON.stringify({
            fault: { kind: 'network-partition', direction: 'both', peers: ['10.200.0.1/32'] },
            target: { type: 'container', labels: { 'faultline-bench': run, 'faultline-bench.n': String(n) } },
            duration: '60s',
            dryRun: true,
          })
          return timed(async () => {
            const body = JSON.parse(await call('POST', '/v1/injections', 200, payload)) as { resolved?: ResolvedContainer }
            if (body.resolved?.id !== containers[n]!.id) throw new Error(`dry run on label n=${n} did not resolve to its container`)
          })
        },
      ],
    ]
    if (present.includes('containerd')) {
      variants.push(['ctrTaskLs', () => timed(async () => {
        const n = lines(await cli(['ctr', '-n', CTR_NAMESPACE, 'task', 'ls']))
        if (n !== counts.containerd) throw new Error(`ctr task ls listed ${n} of ${counts.containerd}`)
      })])
    }
    if (present.includes('docker')) {
      variants.push(['dockerPs', () => timed(async () => {
        const n = lines(await cli(['docker', 'ps']))
        if (n !== counts.docker) throw new Error(`docker ps listed ${n} of ${counts.docker}`)
      })])
    }
    if (present.includes('podman')) {
      variants.push(['podmanPs', () => timed(async () => {
        const n = lines(await cli(['podman', 'ps']))
        if (n !== counts.podman) throw new Error(`podman ps listed ${n} of ${counts.podman}`)
      })])
    }

    const samples = new Map<Variant, number[]>(variants.map(([v]) => [v, []]))
    const runRounds = async (n: number, record: boolean) => {
      for (let i = 0; i < n; i++) {
        // Interleaved, the order rotating each round, so drift and noise hit every variant alike.
        for (let j = 0; j < variants.length; j++) {
          const [name, fn] = variants[(i + j) % variants.length]!
          const ms = await fn()
          if (record) samples.get(name)!.push(ms)
        }
      }
    }
    progress(`warm-up: ${warmupRounds} rounds`)
    await runRounds(warmupRounds, false)
    progress(`measuring: ${rounds} rounds of ${variants.length} variants`)
    await runRounds(rounds, true)
    if (agent.warnings.length > 0) progress(`the agent logged ${agent.warnings.length} warnings, e.g. ${agent.warnings[0]}`)

    const latency: DiscoveryBenchResult['latency'] = {}
    for (const [name, values] of samples) latency[name] = summarise(values)
    const med = (v: Variant) => latency[v]?.medianUs
    const r = (a: Variant, b: Variant) => (med(a) !== undefined && med(b) !== undefined ? ratio(med(a)!, med(b)!, 2) : undefined)
    const ratios: DiscoveryBenchResult['ratios'] = { httpVsInProcess: r('discoverHttp', 'discoverInProcess')! }
    const set = (key: keyof DiscoveryBenchResult['ratios'], a: Variant, b: Variant) => {
      const value = r(a, b)
      if (value !== undefined) ratios[key] = value
    }
    set('discoverVsDockerPs', 'discoverInProcess', 'dockerPs')
    set('discoverVsCtrTaskLs', 'discoverInProcess', 'ctrTaskLs')
    set('discoverVsPodmanPs', 'discoverInProcess', 'podmanPs')
    set('httpVsDockerPs', 'discoverHttp', 'dockerPs')
    set('httpVsCtrTaskLs', 'discoverHttp', 'ctrTaskLs')
    set('resolveVsDockerPs', 'resolveLabelInProcess', 'dockerPs')
    set('resolveVsCtrTaskLs', 'resolveLabelInProcess', 'ctrTaskLs')

    await pool.close()
    await cleanup.run()
    return {
      benchmark: 'container-discovery',
      machine: machineInfo(),
      rounds,
      warmupRounds,
      containers: counts,
      startSeconds,
      removeSeconds,
      latency,
      ratios,
    }
  })
}

// ---- output --------------------------------------------------------------------------------

const labels: Record<Variant, string> = {
  discoverInProcess: 'agent: discoverContainers (in-process, all runtimes)',
  cgroupfsOnly: '  of which: /proc/*/cgroup scan alone',
  discoverHttp: 'agent: GET /v1/targets?type=container (HTTP)',
  resolveLabelInProcess: 'agent: resolve {labels} to 1 container (in-process)',
  resolveLabelHttpDryRun: 'agent: dry-run POST on {labels} (HTTP)',
  ctrTaskLs: 'baseline: ctr -n faultline-test task ls',
  dockerPs: 'baseline: docker ps',
  podmanPs: 'baseline: podman ps',
}

export function formatDiscoveryResult(r: DiscoveryBenchResult): string {
  const counts = Object.entries(r.containers).map(([rt, n]) => `${n} ${rt}`).join(', ')
  const x = (v: number | undefined) => (v === undefined ? '—' : `${v}×`)
  return [
    `${r.benchmark}: ${counts} containers; ${r.rounds} rounds after ${r.warmupRounds} warm-up, interleaved`,
    formatMachine(r.machine),
    `started in ${r.startSeconds} s, removed in ${r.removeSeconds} s`,
    '',
    table(
      ['variant', 'median', 'p99', 'min', 'max'],
      (Object.keys(labels) as Variant[])
        .filter((v) => r.latency[v])
        .map((v) => {
          const s = r.latency[v]!
          return [labels[v], us(s.medianUs), us(s.p99Us), us(s.minUs), us(s.maxUs)]
        }),
    ),
    '',
    table(
      ['ratio (medians)', 'vs docker ps', 'vs ctr task ls', 'vs podman ps'],
      [
        ['discoverContainers, in-process', x(r.ratios.discoverVsDockerPs), x(r.ratios.discoverVsCtrTaskLs), x(r.ratios.discoverVsPodmanPs)],
        ['GET /v1/targets?type=container', x(r.ratios.httpVsDockerPs), x(r.ratios.httpVsCtrTaskLs), '—'],
        ['resolve {labels}, in-process', x(r.ratios.resolveVsDockerPs), x(r.ratios.resolveVsCtrTaskLs), '—'],
      ],
    ),
    `HTTP / in-process discovery: ${r.ratios.httpVsInProcess}×`,
  ].join('\n')
}
