// Network test fixtures: pairs of network namespaces joined by a veth pair, addressed in
// 10.200.0.0/16, created per test and deleted at teardown (also when the test fails). Traffic
// never leaves them. Needs root (ip netns add).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { inNetns } from '../agent/net/netns.js'
import { repoRoot, type TestLike } from './helpers.js'

export interface TestNs {
  name: string
  path: string
  ip: string
  dev: string
}

export interface NetnsPair {
  a: TestNs
  b: TestNs
}

const toolScript = join(repoRoot, 'test', 'net', 'tool.mjs')

function sh(argv: string[], input?: string): string {
  const res = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', input: input ?? '' })
  if (res.status !== 0) throw new Error(`${argv.join(' ')} failed: ${res.stderr}`)
  return res.stdout
}

/** Runs argv inside the namespace (network namespace only) and returns stdout; throws on failure. */
export function inNs(ns: TestNs, argv: string[], input?: string): string {
  return sh(['nsenter', `--net=${ns.path}`, '--', ...argv], input)
}

/** Like inNs, but returns the exit status and output instead of throwing. */
export function tryInNs(ns: TestNs, argv: string[]): { status: number | null; stdout: string; stderr: string } {
  const res = spawnSync('nsenter', [`--net=${ns.path}`, '--', ...argv], { encoding: 'utf8' })
  return { status: res.status, stdout: res.stdout, stderr: res.stderr }
}

/** The prefix the agent puts in front of a tool to run it in the namespace at path (native/nsexec). */
export function enter(path: string): string[] {
  return inNetns({ kind: 'path', path, inode: 0 }, [])
}

let counter = 0

/**
 * Two namespaces A (10.200.<n>.1) and B (10.200.<n>.2) joined by a veth pair, with loopback up.
 * Deleted at teardown; deleting a namespace also deletes its veth end and everything in it.
 */
export function netnsPair(t: TestLike, subnet = 0): NetnsPair {
  const tag = `${process.pid.toString(36)}${(counter++).toString(36)}${randomBytes(2).toString('hex')}`
  const a: TestNs = { name: `fl-test-${tag}-a`, path: `/var/run/netns/fl-test-${tag}-a`, ip: `10.200.${subnet}.1`, dev: `flv${tag}a`.slice(-15) }
  const b: TestNs = { name: `fl-test-${tag}-b`, path: `/var/run/netns/fl-test-${tag}-b`, ip: `10.200.${subnet}.2`, dev: `flv${tag}b`.slice(-15) }
  t.teardown(() => {
    for (const ns of [a, b]) spawnSync('ip', ['netns', 'del', ns.name])
  })
  sh(['ip', 'netns', 'add', a.name])
  sh(['ip', 'netns', 'add', b.name])
  sh(['ip', 'link', 'add', a.dev, 'netns', a.name, 'type', 'veth', 'peer', 'name', b.dev, 'netns', b.name])
  for (const ns of [a, b]) {
    sh(['ip', '-n', ns.name, 'addr', 'add', `${ns.ip}/24`, 'dev', ns.dev])
    sh(['ip', '-n', ns.name, 'link', 'set', ns.dev, 'up'])
    sh(['ip', '-n', ns.name, 'link', 'set', 'lo', 'up'])
  }
  return { a, b }
}

/** Runs one traffic tool (test/net/tool.mjs) to completion inside ns; resolves with its JSON line. */
export function tool<T = Record<string, unknown>>(ns: TestNs, ...args: (string | number)[]): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', [`--net=${ns.path}`, '--', process.execPath, toolScript, ...args.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    child.on('close', (code) => {
      const last = stdout.trim().split('\n').pop()
      try {
        resolve(JSON.parse(last ?? '') as T)
      } catch {
        reject(new Error(`tool ${args.join(' ')} exited ${code}: ${stderr || stdout}`))
      }
    })
  })
}

export interface Background {
  child: ChildProcess
  /** Resolves with the tool's last JSON line when it exits. */
  result: Promise<Record<string, unknown>>
  stop(): void
}

/** Starts a server tool in ns and waits for its {ready:true}; killed at teardown. */
export async function background(t: TestLike, ns: TestNs, ...args: (string | number)[]): Promise<Background> {
  const child = spawn('nsenter', [`--net=${ns.path}`, '--', process.execPath, toolScript, ...args.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let resolveReady: () => void
  let rejectReady: (e: Error) => void
  const ready = new Promise<void>((res, rej) => ((resolveReady = res), (rejectReady = rej)))
  child.stdout!.on('data', (c: Buffer) => {
    stdout += c.toString()
    if (stdout.includes('"ready":true')) resolveReady()
  })
  const result = new Promise<Record<string, unknown>>((resolve) =>
    child.on('close', (code) => {
      const lines = stdout.trim().split('\n').filter((l) => !l.includes('"ready":true'))
      try {
        resolve(JSON.parse(lines.pop() ?? '') as Record<string, unknown>)
      } catch {
        resolve({ exitCode: code })
      }
      rejectReady(new Error(`${args.join(' ')} exited before it was ready`))
    }),
  )
  const stop = () => {
    if (child.exitCode === null) child.kill('SIGKILL')
  }
  t.teardown(stop)
  await ready
  return { child, result, stop }
}

/**
 * Everything network-related a fault could leave behind in a namespace, as text: the nft
 * ruleset, iptables rules of both backends (policies included), qdiscs, tc filters and links.
 */
export function netSnapshot(ns: TestNs): Record<string, string> {
  const snap: Record<string, string> = {}
  snap.nft = inNs(ns, ['nft', 'list', 'ruleset'])
  for (const backend of ['iptables-legacy', 'iptables-nft']) {
    for (const table of ['filter', 'nat', 'mangle', 'raw']) {
      const res = tryInNs(ns, [backend, '-w', '-t', table, '-S'])
      snap[`${backend} ${table}`] = res.status === 0 ? res.stdout : `unavailable: ${res.stderr.trim()}`
    }
  }
  snap.qdiscs = inNs(ns, ['tc', 'qdisc', 'show'])
  snap.links = inNs(ns, ['ip', '-o', 'link', 'show']).replace(/\\\s+link\/.*$/gm, '')
  snap.filters = inNs(ns, ['ip', '-o', 'link', 'show'])
    .split('\n')
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1])
    .filter((d): d is string => Boolean(d))
    .map((dev) => `${dev} egress:${inNs(ns, ['tc', 'filter', 'show', 'dev', dev])} ingress:${tryInNs(ns, ['tc', 'filter', 'show', 'dev', dev, 'ingress']).stdout}`)
    .join('\n')
  return snap
}

// ---- throughput (network-bandwidth and composition tests) ----------------------------------------

const bandwidthScript = join(repoRoot, 'test', 'net', 'tool-bandwidth.mjs')

export interface Rate {
  /** From the upper hull of the received-bytes curve (see the header comment). */
  bitsPerSecond: number
  /** Bytes read inside the window / its length. */
  rawBitsPerSecond: number
  samples: number[]
}

/** Runs tool-bandwidth.mjs in ns; resolves with its last JSON line; killed after timeoutMs. */
function bwTool(t: TestLike, ns: TestNs, args: (string | number)[], timeoutMs: number, onReady?: () => void): Promise<Record<string, unknown>> {
  const child = spawn('nsenter', [`--net=${ns.path}`, '--', process.execPath, bandwidthScript, ...args.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] })
  const kill = () => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL')
  t.teardown(kill)
  const timer = setTimeout(kill, timeoutMs)
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => {
    stdout += c.toString()
    if (onReady && stdout.includes('"ready":true')) {
      onReady()
      onReady = undefined
    }
  })
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  return new Promise((resolve, reject) =>
    child.on('close', (code) => {
      clearTimeout(timer)
      const last = stdout.trim().split('\n').filter((l) => !l.includes('"ready":true')).pop()
      try {
        resolve(JSON.parse(last ?? '') as Record<string, unknown>)
      } catch {
        reject(new Error(`tool-bandwidth ${args.join(' ')} exited ${code}: ${stderr || stdout}`))
      }
    }),
  )
}

/**
 * TCP goodput from `from` to `to`:port, measured by the receiver over [skip, skip + window]
 * (test/net/tool-bandwidth.mjs explains why over a window, and why from the upper hull).
 */
export async function measure(t: TestLike, from: TestNs, to: TestNs, port: number, skipMs = 1500, windowMs = 4000): Promise<Rate> {
  const limit = skipMs + windowMs + 15_000
  let ready!: () => void
  const listening = new Promise<void>((r) => (ready = r))
  const tailMs = 500
  const sink = bwTool(t, to, ['tcp-sink', port, skipMs, windowMs, tailMs], limit, ready)
  await Promise.race([listening, sink])
  const seconds = Math.ceil((skipMs + windowMs + tailMs) / 1000) + 2
  const source = bwTool(t, from, ['tcp-source', to.ip, port, seconds], limit)
  const result = (await sink) as unknown as Rate
  await source
  return result
}
