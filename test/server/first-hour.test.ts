// The first hour with a server, as the report found it (issue 13, items 6-10): experiments that
// can never run are refused at apply; `exp apply --dry-run` and `exp plan` show per host what a
// run would do without applying it; `agents rm` holds until `agents admit`; the CLI speaks to
// the person at the command line (flags, not API routes; certificates and schemes in words; no
// stack traces); a refused enrolment is said in words by the agent, and logged, audited and
// recorded by the server. A real server (TLS, throwaway CA) and two real agents, each in its own
// PID namespace with its own `sleep`, as separate as hosts. Needs root (PID namespaces).
import { randomBytes, randomInt } from 'node:crypto'
import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { cliEntry, makePki, procState, runCli, spawnLogged, tmpDir, waitFor, type LoggedProcess } from '../helpers.js'

if (process.getuid?.() !== 0) {
  t.plan(0, 'needs root (PID namespaces)')
  process.exit(0)
}

const ADMIN = `admin-${randomBytes(16).toString('hex')}`
const ENROL = `enrol-${randomBytes(16).toString('hex')}`
const dir = tmpDir(t, 'fl-first-hour-')
const pki = makePki(dir)
writeFileSync(join(dir, 'admin-token'), ADMIN, { mode: 0o600 })
writeFileSync(join(dir, 'enrol-token'), ENROL, { mode: 0o600 })
writeFileSync(join(dir, 'wrong-enrol-token'), `wrong-${randomBytes(16).toString('hex')}`, { mode: 0o600 })

let server: LoggedProcess
let base = ''
/** The CLI against the server, as an admin would set it up. */
let env: NodeJS.ProcessEnv = {}

function findProcess(argv: string[]): number | undefined {
  const want = argv.join('\0') + '\0'
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8') === want) return Number(entry)
    } catch {
      /* gone */
    }
  }
  return undefined
}

interface HostAgent {
  name: string
  proc: LoggedProcess
  /** Host pid of the agent's own `sleep`. */
  sleeper: number
}

/** An agent in a PID namespace of its own, with a `sleep` there to fault. */
async function startAgent(name: string, enrolTokenFile = join(dir, 'enrol-token')): Promise<HostAgent> {
  const sleeperArgv = ['sleep', `${randomInt(3000, 3600)}.${process.pid}${randomInt(1000, 9999)}`]
  const proc = spawnLogged(t, [
    'unshare', '--pid', '--fork', '--mount-proc', '--kill-child',
    'sh', '-c', 'sleep "$0" & exec "$@"', sleeperArgv[1]!,
    process.execPath, '--import', 'tsx', cliEntry, 'agent', '--listen', '127.0.0.1:0', '--state-dir', join(dir, `agent-${name}`), '--log-level', 'info',
    '--server', `wss://127.0.0.1:${new URL(base).port}`, '--enrol-token-file', enrolTokenFile, '--server-ca', pki('ca.crt'),
    '--labels', 'role=first-hour', '--name', name,
  ])
  const sleeper = await waitFor(`${name}'s sleep`, () => {
    if (!proc.running()) throw new Error(`agent ${name} exited: ${proc.stderr()}`)
    return findProcess(sleeperArgv)
  }, 30_000)
  return { name, proc, sleeper }
}

const connected = async () => {
  const res = await runCli(['agents', 'ls', '--json'], { env })
  return (JSON.parse(res.stdout) as { agents: { id: string; connected: boolean }[] }).agents.filter((a) => a.connected).map((a) => a.id).sort()
}

const agents: HostAgent[] = []

t.before(async () => {
  server = spawnLogged(t, [
    process.execPath, '--import', 'tsx', cliEntry, 'server', '--listen', '127.0.0.1:0', '--state-dir', join(dir, 'server'), '--lease', '5s',
    '--admin-token-file', join(dir, 'admin-token'), '--enrol-token-file', join(dir, 'enrol-token'),
    '--tls-cert', pki('server.crt'), '--tls-key', pki('server.key'),
  ])
  const ready = await waitFor('the server', () => {
    if (!server.running()) throw new Error(server.stderr())
    return server.logs.find((l) => l.msg === 'faultline server ready')
  }, 60_000)
  base = String(ready.url)
  env = { FAULTLINE_SERVER: base, FAULTLINE_SERVER_TOKEN_FILE: join(dir, 'admin-token'), FAULTLINE_SERVER_CA: pki('ca.crt') }
  agents.push(await startAgent('fh-1'), await startAgent('fh-2'))
  await waitFor('both agents connected', async () => ((await connected()).length === 2 ? true : undefined), 60_000, 250)
})

/** Writes an experiment file and returns its path. */
function experimentFile(name: string, spec: Record<string, unknown>): string {
  const file = join(dir, `${name}.json`)
  writeFileSync(file, JSON.stringify({ name, hosts: { labels: { role: 'first-hour' } }, target: { type: 'process', name: 'sleep' }, fault: { kind: 'process-stop' }, duration: '30s', ...spec }))
  return file
}

t.test('item 7: experiments that can never run are refused at apply, saying why', async (t) => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['delay-on-process', { fault: { kind: 'network-delay', latency: '100ms' } }, /network-delay acts on host, netns, container targets, not on a process target \[FAULTLINE_ERR_TARGET_UNSUPPORTED\]/],
    ['too-long', { duration: '2h' }, /duration 2h is longer than 2 selected agents accept: fh-1 \(at most 1h\), fh-2 \(at most 1h\).*--max-duration.*\[FAULTLINE_ERR_BAD_DURATION\]/],
    ['every-process', { target: { type: 'process', cmdline: '.*' } }, /matches the empty string, so it would select every process.*\[FAULTLINE_ERR_UNSAFE_PATTERN\]/],
    ['bad-load', { fault: { kind: 'stress-cpu', load: 150 }, target: { type: 'host' } }, /fault\.load: load 150 is above the maximum 100 — allowed:/],
  ]
  for (const [name, spec, expected] of cases) {
    const res = await runCli(['exp', 'apply', '-f', experimentFile(name, spec)], { env })
    t.equal(res.code, 1, `${name}: refused`)
    t.match(res.stderr, expected, name)
  }
  const ls = await runCli(['exp', 'ls', '--json'], { env })
  t.same((JSON.parse(ls.stdout) as { experiments: unknown[] }).experiments, [], 'none of them was stored')
})

t.test('item 7: exp apply --dry-run and exp plan show per host what would happen; nothing is applied', async (t) => {
  const file = experimentFile('stop-sleep', { mode: 'one' })
  const dry = await runCli(['exp', 'apply', '-f', file, '--dry-run'], { env })
  t.equal(dry.code, 0, dry.stderr)
  t.match(dry.stdout, /plan of stop-sleep\s+a run now would pick 1 of 2 connected host\(s\) \(mode one\).*nothing was applied/)
  for (const a of agents) t.match(dry.stdout, new RegExp(`${a.name}\\s+would-inject\\s+process \\d+ \\(sleep, user root\\)\\s+SIGSTOP to pid \\d+`), `${a.name}: what it would do`)
  t.same(agents.map((a) => procState(a.sleeper)), ['S', 'S'], 'nothing was stopped')
  t.same((JSON.parse((await runCli(['exp', 'ls', '--json'], { env })).stdout) as { experiments: unknown[] }).experiments, [], 'nor stored')

  t.equal((await runCli(['exp', 'apply', '-f', file], { env })).code, 0)
  const plan = await runCli(['exp', 'plan', 'stop-sleep', '--json'], { env })
  const body = JSON.parse(plan.stdout) as { selection: { wouldChoose: number; connected: number }; hosts: { agent: string; outcome: string; injections: { dryRun?: boolean; status: string }[] }[] }
  t.match(body.selection, { wouldChoose: 1, connected: 2 })
  t.same(body.hosts.map((h) => [h.agent, h.outcome]).sort(), [['fh-1', 'would-inject'], ['fh-2', 'would-inject']])
  t.ok(body.hosts.every((h) => h.injections.length === 1 && h.injections[0]!.dryRun === true), 'one dry-run plan per host')
  t.same(agents.map((a) => procState(a.sleeper)), ['S', 'S'], 'still nothing stopped')

  // A host where the run would fail is shown as refused, with the agent's reason; exit 1.
  const missing = experimentFile('stop-missing', { target: { type: 'process', name: `nosuch${process.pid}`.slice(0, 15) } })
  const refused = await runCli(['exp', 'apply', '-f', missing, '--dry-run'], { env })
  t.equal(refused.code, 1)
  t.match(refused.stdout, /fh-1\s+refused\s+-\s+no process named "nosuch\d*" may be targeted/)
})

t.test('items 6 and 9: the CLI speaks to the person at the command line', async (t) => {
  const noStack = (s: string) => !/\n\s+at /.test(s)
  const missingFile = await runCli(['exp', 'apply', '-f', join(dir, 'missing.yaml')], { env })
  t.equal(missingFile.code, 2)
  t.match(missingFile.stderr, /^faultline: cannot read the experiment file .*missing\.yaml: no such file\n$/, 'one line for a missing file')
  const missingToken = await runCli(['agents', 'ls', '--token-file', join(dir, 'no-such-token')], { env })
  t.equal(missingToken.code, 1)
  t.match(missingToken.stderr, /cannot read the token file .*no-such-token \(ENOENT\)/)
  t.ok(noStack(missingFile.stderr) && noStack(missingToken.stderr), 'no stack traces')

  writeFileSync(join(dir, 'wrong-token'), 'not-the-token-0123456789', { mode: 0o600 })
  const wrong = await runCli(['agents', 'ls', '--token-file', join(dir, 'wrong-token')], { env })
  t.equal(wrong.code, 1)
  t.match(wrong.stderr, /refused the token in .*wrong-token: give an API token with --token-file FILE \(or FAULTLINE_SERVER_TOKEN_FILE\)/)
  t.notMatch(wrong.stderr, /--admin-token-file|POST \/v1\/tokens/, 'nothing only the server or its API would understand')

  const noCa = await runCli(['agents', 'ls'], { env: { ...env, FAULTLINE_SERVER_CA: '' } })
  t.match(noCa.stderr, /the server's certificate is signed by a CA this command does not trust: give that CA with --tls-ca FILE \(or FAULTLINE_SERVER_CA\)/)
  t.notMatch(noCa.stderr, /is it running\?/)
  const plainHttp = await runCli(['agents', 'ls', '--server', base.replace('https://', 'http://')], { env })
  t.match(plainHttp.stderr, /closed the connection without an answer .*: it probably serves HTTPS; try https:\/\/ in --server/)

  // An agent on TCP without its token: --token-file, not an HTTP header.
  const agentPort = await waitFor('fh-1 on TCP', () => agents[0]!.proc.logs.find((l) => l.msg === 'faultline agent ready')?.url as string | undefined)
  const noAgentToken = await runCli(['ls', '--agent', agentPort, '--state-dir', join(dir, 'nowhere')])
  t.equal(noAgentToken.code, 1)
  t.match(noAgentToken.stderr, /the agent at http:\/\/127\.0\.0\.1:\d+ refused no token: give its token with --token-file FILE/)
  t.notMatch(noAgentToken.stderr, /Authorization: Bearer/)
})

t.test('item 8: agents rm holds until agents admit', async (t) => {
  const target = agents[1]!
  const rm = await runCli(['agents', 'rm', target.name], { env })
  t.equal(rm.code, 0, rm.stderr)
  t.match(rm.stdout, new RegExp(`agent ${target.name} removed and disconnected; ${target.name} may not enrol again until "faultline agents admit ${target.name}"`))
  // As reported, it re-enrolled within a second with the token on its command line; now it is refused.
  await waitFor('the agent to be told', () => target.proc.logs.find((l) => String(l.msg).startsWith('an admin removed this agent from the server')), 20_000)
  t.same(await connected(), ['fh-1'], 'it stays out')
  const removed = JSON.parse((await runCli(['agents', 'ls', '--removed', '--json'], { env })).stdout) as { removed: { name: string; removedBy: string }[] }
  t.match(removed.removed, [{ name: target.name, removedBy: 'admin-token' }])
  const events = JSON.parse((await runCli(['events', '--json', '--limit', '200'], { env })).stdout) as { events: { type: string; message: string }[] }
  t.ok(events.events.some((e) => e.type === 'agent.refused' && e.message.includes(`enrol:${target.name}`)), 'its attempts are events')

  const admit = await runCli(['agents', 'admit', target.name], { env })
  t.equal(admit.code, 0, admit.stderr)
  t.match(admit.stdout, new RegExp(`${target.name} may enrol again`))
  // Its next attempt is up to a minute away (refused agents back off); a restart enrols at once.
  // (unshare --fork passes no SIGTERM on; --kill-child ends the agent with it, which holds no fault)
  target.proc.child.kill('SIGKILL')
  await target.proc.exited
  agents[1] = await startAgent(target.name)
  await waitFor('re-admitted and connected', async () => ((await connected()).includes(target.name) ? true : undefined), 60_000, 250)
  t.pass('back after admit')
})

t.test('item 10: a wrong enrolment token is said in words by the agent, and logged, audited and recorded by the server', async (t) => {
  const stranger = await startAgent('fh-stranger', join(dir, 'wrong-enrol-token'))
  const said = await waitFor('the agent to say why', () => stranger.proc.logs.find((l) => String(l.msg).startsWith('the server refused the enrolment token')), 20_000)
  t.match(said.msg, /--enrol-token-file must hold the server's enrolment token/)
  t.notMatch(JSON.stringify(stranger.proc.logs), /Unexpected server response: 401/, 'not the bare status')
  const logged = await waitFor('the server log', () => server.logs.find((l) => String(l.msg).startsWith('agent connection refused') && l.claim === 'enrol:fh-stranger'))
  t.match(logged.msg, /the enrolment token is wrong/)
  const audit = JSON.parse((await runCli(['audit', '--json', '--limit', '500'], { env })).stdout) as { entries: { who: string; route: string; status: number; outcome: string }[] }
  t.ok(audit.entries.some((e) => e.who === 'enrol:fh-stranger' && e.route === '/v1/agents/connect' && e.status === 401 && e.outcome === 'unauthenticated'), 'an audit row names who tried')
  const events = JSON.parse((await runCli(['events', '--json', '--limit', '500'], { env })).stdout) as { events: { type: string; message: string }[] }
  t.ok(events.events.some((e) => e.type === 'agent.refused' && /enrol:fh-stranger.*enrolment token is wrong/.test(e.message)), 'and an event')
  t.notOk((await connected()).includes('fh-stranger'), 'it did not get in')
  stranger.proc.child.kill('SIGKILL')
  await stranger.proc.exited
})

t.test('also: exp run --detach prints the id alone; fixed 3 that finds 2 hosts says so; faultline audit and events read', async (t) => {
  t.equal((await runCli(['exp', 'apply', '-f', experimentFile('fixed-three', { mode: { fixed: 3 }, duration: '2s' })], { env })).code, 0)
  const detached = await runCli(['exp', 'run', 'fixed-three', '--detach'], { env })
  t.equal(detached.code, 0, 'started')
  t.match(detached.stdout, /^[a-z0-9]{10,}\n$/, 'stdout is the run id alone')
  const id = detached.stdout.trim()
  const shown = await runCli(['exp', 'show', 'fixed-three', '--json'], { env })
  const run = (JSON.parse(shown.stdout) as { lastRun: { id: string; selection: { chosen: number; requested?: number } } }).lastRun
  t.equal(run.id, id)
  t.match(run.selection, { chosen: 2, requested: 3 }, 'the run records that fixed 3 found 2')
  const events = await runCli(['events'], { env })
  t.match(events.stdout, /run\.started\s+run \S+ of fixed-three .*mode fixed 3 asked for 3 host\(s\), only 2 connected/)
  const audit = await runCli(['audit'], { env })
  t.match(audit.stdout, /admin-token\s+POST \/v1\/experiments\/fixed-three\/runs\s+201 ok/)
  await waitFor('the run to end', async () => {
    const r = JSON.parse((await runCli(['exp', 'show', 'fixed-three', '--json'], { env })).stdout) as { lastRun: { status: string } }
    return r.lastRun.status !== 'running' ? true : undefined
  }, 30_000, 500)
  t.same(agents.map((a) => procState(a.sleeper)), ['S', 'S'], 'every sleep runs again')
})
