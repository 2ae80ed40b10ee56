import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance, InjectOptions } from 'fastify'
import { buildAgent, type AgentOptions } from '../agent/app.js'

/** The subset of a tap Test these helpers need (keeps them independent of tap's types). */
export interface TestLike {
  teardown(fn: () => unknown): void
  comment(...args: unknown[]): void
}

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..')
export const cliEntry = join(repoRoot, 'cli', 'main.ts')

export function tmpDir(t: TestLike, prefix = 'fl-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/**
 * The app, with every inject() sending "Authorization: Bearer <token>" unless the call names its
 * own: for in-process servers, which (like every server) answer nobody without a token.
 */
export function withBearer<T extends FastifyInstance>(app: T, token: string): T {
  return new Proxy(app, {
    get(target, prop) {
      if (prop === 'inject') {
        return (opts: InjectOptions) => target.inject({ ...opts, headers: { authorization: `Bearer ${token}`, ...opts.headers } })
      }
      const value = Reflect.get(target, prop, target) as unknown
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  })
}

/** An in-process agent for app.inject() tests, closed (and its injections recovered) at teardown. */
export async function testAgent(t: TestLike, opts: Partial<AgentOptions> = {}): Promise<FastifyInstance> {
  const app = await buildAgent({ stateDir: tmpDir(t), maxDurationMs: 3_600_000, ...opts })
  t.teardown(() => app.close())
  return app
}

export interface Sleeper {
  pid: number
  child: ChildProcess
}

/**
 * A real process to fault: `sleep`. Teardown resumes and kills it, so a failing test never
 * leaves a stopped process behind.
 */
export function sleeper(t: TestLike, seconds = 600): Sleeper {
  const child = spawn('sleep', [String(seconds)], { stdio: 'ignore' })
  const pid = child.pid
  if (pid === undefined) throw new Error('could not start sleep')
  t.teardown(() => {
    try {
      process.kill(pid, 'SIGCONT')
      process.kill(pid, 'SIGKILL')
    } catch {
      /* already gone */
    }
  })
  return { pid, child }
}

/** The state letter of a process (R, S, T, Z, ...), or undefined when it is gone. */
export function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]
  } catch {
    return undefined
  }
}

export function startTimeOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19])
  } catch {
    return undefined
  }
}

export async function waitFor<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export interface AgentProcess {
  child: ChildProcess
  url: string
  /** The bearer token its TCP API wants (its --token-file, or the one it made in its state dir). */
  token: string
  pid: number
  /** Every log line the agent printed so far (parsed JSON). */
  logs: Record<string, unknown>[]
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

export interface LoggedProcess {
  child: ChildProcess
  /** Every line printed on stdout so far: parsed JSON, or { raw } for other lines. */
  logs: Record<string, unknown>[]
  /** The last 20 000 characters of stderr. */
  stderr: () => string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  running: () => boolean
}

/** A child process whose JSON log lines are collected; killed with SIGKILL at teardown if still running. */
export function spawnLogged(t: TestLike, argv: string[], env?: NodeJS.ProcessEnv): LoggedProcess {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  const logs: Record<string, unknown>[] = []
  let stderr = ''
  let buffered = ''
  child.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString()
    let nl: number
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        logs.push({ raw: line })
      }
    }
  })
  child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-20_000)))
  let running = true
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  )
  void exited.then(() => (running = false))
  t.teardown(async () => {
    if (running) {
      child.kill('SIGKILL')
      await exited
    }
  })
  return { child, logs, stderr: () => stderr, exited, running: () => running }
}

/**
 * Bearer tokens of the agents the tests started, by origin: http() sends them, as every client
 * of an agent on TCP must.
 */
const agentTokens = new Map<string, string>()

/**
 * The agent as a real child process (`faultline agent` from the sources), on a free loopback
 * port. Resolves once it logged "faultline agent ready" with its URL. Killed with SIGKILL at
 * teardown if still running.
 */
export async function startAgentProcess(
  t: TestLike,
  stateDir: string,
  /** listen: 'default' starts it without --listen (its default Unix socket). */
  opts: { env?: NodeJS.ProcessEnv; args?: string[]; waitReady?: boolean; listen?: string; netnsPath?: string } = {},
): Promise<AgentProcess> {
  const listen = opts.listen === 'default' ? [] : ['--listen', opts.listen ?? '127.0.0.1:0']
  const argv = [process.execPath, '--import', 'tsx', cliEntry, 'agent', ...listen, '--state-dir', stateDir, '--log-level', 'debug', ...(opts.args ?? [])]
  // An agent inside a test network namespace: only its network namespace differs.
  if (opts.netnsPath) argv.unshift('nsenter', `--net=${opts.netnsPath}`, '--')
  const proc = spawnLogged(t, argv, opts.env)
  const { child, logs, exited } = proc
  const agent: AgentProcess = { child, url: '', token: '', pid: child.pid!, logs, exited }
  // (with nsenter in front, child.pid is nsenter's, which execs the agent: the same pid)
  if (opts.waitReady === false) return agent
  const ready = await waitFor(
    'the agent to be ready',
    () => {
      if (!proc.running()) throw new Error(`agent exited before it was ready: ${proc.stderr()}`)
      return logs.find((l) => l.msg === 'faultline agent ready')
    },
    60_000,
  )
  agent.url = String(ready.url)
  // On TCP it wants a token: the one its args name, or the one it made in its state dir.
  const named = opts.args?.indexOf('--token-file') ?? -1
  const tokenFile = named >= 0 ? opts.args![named + 1]! : join(stateDir, 'agent.token')
  if (agent.url.startsWith('http')) {
    agent.token = readFileSync(tokenFile, 'utf8').trim()
    agentTokens.set(new URL(agent.url).origin, agent.token)
  }
  return agent
}

/**
 * A throwaway CA with a server certificate for `serverIp` (and localhost) and a client
 * certificate (CN sre-alice), made with openssl. Returns a path helper.
 */
export function makePki(dir: string, serverIp = '127.0.0.1'): (file: string) => string {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=faultline-test-ca')
  writeFileSync(`${dir}/server.ext`, `subjectAltName=IP:${serverIp},DNS:localhost\n`)
  for (const [name, cn] of [['server', 'localhost'], ['client', 'sre-alice']] as const) {
    ssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`)
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', ...(name === 'server' ? ['-extfile', 'server.ext'] : []))
  }
  return (f: string) => `${dir}/${f}`
}

export async function http<T = unknown>(
  url: string,
  init: { method?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: T }> {
  const token = agentTokens.get(new URL(url).origin)
  const res = await fetch(url, {
    method: init.method ?? 'GET',
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}), ...init.headers },
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
  })
  const text = await res.text()
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T }
}

/** Runs the CLI (from the sources) to completion. */
export function runCli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', cliEntry, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1', ...opts.env },
      timeout: opts.timeoutMs ?? 60_000,
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}
