// The fleet commands of the CLI (from the sources, through runCli) against a server listening on
// loopback, with a fake agent on the link: exp apply / ls / show / run (live, and Ctrl-C) / abort,
// halt --all, agents ls, and their --help examples.
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Command } from 'commander'
import t from 'tap'
import { buildProgram } from '../../cli/program.js'
import { buildServer } from '../../server/app.js'
import { cliEntry, runCli, tmpDir, waitFor } from '../helpers.js'
import { connectFake } from './fake-agent.js'

const ADMIN = 'admin-token-for-the-cli-test-0123456789'
const ENROL = 'enrol-token-for-the-cli-test-0123456789'

const dir = tmpDir(t, 'fl-srv-cli-')
const app = await buildServer({ stateDir: join(dir, 'state'), adminToken: ADMIN, enrolToken: ENROL, leaseMs: 5_000 })
t.teardown(() => app.close())
await app.listen({ host: '127.0.0.1', port: 0 })
const port = (app.server.address() as { port: number }).port
writeFileSync(join(dir, 'token'), ADMIN + '\n', { mode: 0o600 })
writeFileSync(join(dir, 'wrong'), 'not-the-token-not-the-token-000\n', { mode: 0o600 })
const env = { FAULTLINE_SERVER: `http://127.0.0.1:${port}`, FAULTLINE_SERVER_TOKEN_FILE: join(dir, 'token') }
const cli = (...args: string[]) => runCli(args, { env })
const adminHeaders = { authorization: `Bearer ${ADMIN}` }

const agent = await connectFake(app, { name: 'db-1', authorization: `Bearer ${ENROL}`, labels: { role: 'db' } })
t.teardown(() => agent.ws.terminate())

const yamlFile = join(dir, 'db-stop.yaml')
writeFileSync(
  yamlFile,
  `name: db-stop
description: stop the sleeper on one db host
hosts: { labels: { role: db } }
mode: one
target: { type: process, name: sleep }
fault: { kind: process-stop }
duration: 30s
`,
)

t.test('exp apply -f creates, then replaces', async (t) => {
  const first = await cli('exp', 'apply', '-f', yamlFile)
  t.equal(first.code, 0, first.stderr)
  t.match(first.stdout, /experiment db-stop created/)
  const again = await cli('exp', 'apply', '-f', yamlFile)
  t.equal(again.code, 0, again.stderr)
  t.match(again.stdout, /experiment db-stop replaced/)
  const bad = join(dir, 'bad.yaml')
  writeFileSync(bad, 'name: Bad Name\nhosts: {}\n')
  const refused = await cli('exp', 'apply', '-f', bad)
  t.not(refused.code, 0, 'an invalid experiment is refused')
  t.match(refused.stderr, /FAULTLINE_ERR_VALIDATION|invalid|must/i)
})

t.test('exp ls and exp show before any run', async (t) => {
  const ls = await cli('exp', 'ls')
  t.equal(ls.code, 0, ls.stderr)
  t.match(ls.stdout, /NAME\s+HOSTS\s+MODE/)
  t.match(ls.stdout, /db-stop\s+role=db\s+one\s+process-stop\s+process name=sleep\s+30s\s+-\s+never/)
  const show = await cli('exp', 'show', 'db-stop')
  t.equal(show.code, 0, show.stderr)
  t.match(show.stdout, /never run; start it with "faultline exp run db-stop"/)
})

t.test('exp run follows the run live; halt --all ends it; exp show has the table per host', async (t) => {
  const live = cli('exp', 'run', 'db-stop')
  const run = await waitFor('the run to be active on db-1', async () => {
    const runs = (await app.inject({ method: 'GET', url: '/v1/runs', headers: adminHeaders })).json() as { runs: { id: string; status: string }[] }
    const open = runs.runs.find((r) => r.status === 'running')
    if (!open) return undefined
    const view = (await app.inject({ method: 'GET', url: `/v1/runs/${open.id}`, headers: adminHeaders })).json() as { id: string; records: { status: string }[] }
    return view.records[0]?.status === 'active' ? view : undefined
  }, 30_000, 100)
  t.equal(agent.open.size, 1, 'the agent holds the injection')
  const halt = await cli('halt', '--all')
  t.equal(halt.code, 0, halt.stderr)
  t.match(halt.stdout, /✓ db-1 recovered everything/)
  t.match(halt.stdout, new RegExp(`aborted run\\(s\\): ${run.id}`))
  t.equal(agent.open.size, 0, 'the agent recovered it')
  const watched = await live
  t.equal(watched.code, 1, 'exit 1: the run was aborted')
  t.match(watched.stdout, new RegExp(`run ${run.id} of db-stop`))
  t.match(watched.stdout, /db-1\s+process 4242 \(sleep\)\s+active/, 'progress: active on db-1')
  t.match(watched.stdout, /db-1\s+process 4242 \(sleep\)\s+aborted \(halt\)/, 'progress: aborted by the halt')
  t.match(watched.stdout, new RegExp(`✗ run ${run.id} aborted`))

  const show = await cli('exp', 'show', 'db-stop')
  t.equal(show.code, 0, show.stderr)
  t.match(show.stdout, /hosts\s+role=db\s+\(mode one\)/)
  t.match(show.stdout, /AGENT\s+TARGET\s+STATUS\s+REASON\s+INJECTION/)
  t.match(show.stdout, /db-1\s+process 4242 \(sleep\)\s+aborted\s+halt\s+\S+\.1/)
})

t.test('exp run --detach, then exp abort', async (t) => {
  const started = await cli('exp', 'run', 'db-stop', '--detach', '--json')
  t.equal(started.code, 0, started.stderr)
  const { id } = JSON.parse(started.stdout) as { id: string }
  await waitFor('active', () => agent.open.size === 1 || undefined, 10_000)
  const aborted = await cli('exp', 'abort', id)
  t.equal(aborted.code, 0, aborted.stderr)
  t.match(aborted.stdout, new RegExp(`run ${id} of db-stop`))
  await waitFor('recovered', () => agent.open.size === 0 || undefined, 10_000)
  const view = (await app.inject({ method: 'GET', url: `/v1/runs/${id}`, headers: adminHeaders })).json() as { status: string; abortedBy: string }
  t.equal(view.status, 'aborted')
  t.equal(view.abortedBy, 'admin-token')
})

t.test('Ctrl-C during exp run aborts the run: the host recovers', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', cliEntry, 'exp', 'run', 'db-stop'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', ...env } })
  t.teardown(() => void child.kill('SIGKILL'))
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)))
  await waitFor('the live view to show the host active', () => /active/.test(stdout) || undefined, 30_000, 50)
  t.equal(agent.open.size, 1)
  child.kill('SIGINT')
  t.equal(await exited, 130, 'exit 130, as for any command stopped by Ctrl-C (the run was aborted)')
  t.match(stderr, /aborting run \S+: every host recovers now/)
  t.match(stdout, /aborted \(abort\)/)
  t.equal(agent.open.size, 0, 'the agent recovered')
})

t.test('agents ls; a wrong token is refused with a clear message', async (t) => {
  const ls = await cli('agents', 'ls')
  t.equal(ls.code, 0, ls.stderr)
  t.match(ls.stdout, /ID\s+HOSTNAME\s+LABELS\s+STATE/)
  t.match(ls.stdout, /db-1\s+db-1\s+role=db\s+connected/)
  const wrong = await runCli(['agents', 'ls'], { env: { ...env, FAULTLINE_SERVER_TOKEN_FILE: join(dir, 'wrong') } })
  t.not(wrong.code, 0)
  t.match(wrong.stderr, /401|FAULTLINE_ERR_UNAUTHORIZED/)
})

t.test('--help of every fleet command shows examples', async (t) => {
  // In process (commander's own help output), not one CLI process per command.
  const program = buildProgram()
  for (const path of [['server'], ['exp', 'apply'], ['exp', 'ls'], ['exp', 'show'], ['exp', 'run'], ['exp', 'abort'], ['halt'], ['agents', 'ls']]) {
    let cmd: Command | undefined = program
    for (const name of path) cmd = cmd?.commands.find((c) => c.name() === name)
    if (!cmd) {
      t.fail(`no command ${path.join(' ')}`)
      continue
    }
    let text = ''
    cmd.configureOutput({ writeOut: (s) => (text += s), writeErr: (s) => (text += s) })
    cmd.outputHelp()
    t.match(text, /Examples?:\n(\s+#.*\n)*\s+faultline /, `${path.join(' ')} --help has examples`)
  }
})
