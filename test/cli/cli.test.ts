// The `faultline` command against a real agent child process, on real `sleep` processes.
import { spawn } from 'node:child_process'
import { existsSync, rmSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import t from 'tap'
import { DEFAULT_AGENT_SOCKET } from '../../common/locations.js'
import type { Injection } from '../../protocol/injection.js'
import { cliEntry, procState, runCli, sleeper, startAgentProcess, tmpDir, waitFor } from '../helpers.js'

t.test('help explains commands, kinds and parameters with examples', async (t) => {
  const top = await runCli(['--help'])
  t.equal(top.code, 0)
  for (const word of ['agent', 'inject', 'ls', 'show', 'recover', 'caps', 'Examples:']) t.match(top.stdout, word)
  const inject = await runCli(['inject', '--help'])
  t.match(inject.stdout, /process-kill \[options\]\s+Send a signal/)
  t.match(inject.stdout, /process-stop \[options\]\s+Stop a process/)
  const kill = await runCli(['inject', 'process-kill', '--help'])
  t.match(kill.stdout, /--signal <value>/, 'parameters come from the kind\'s schema')
  t.match(kill.stdout, /choices: "KILL", "TERM"/)
  t.match(kill.stdout, /--dry-run/)
  t.match(kill.stdout, /Ctrl-C recovers/)
  const agent = await runCli(['agent', '--help'])
  t.match(agent.stdout, /--max-duration/)
  t.match(agent.stdout, /FAULTLINE_AGENT_LISTEN/)
})

t.test("as root, with no flags at all: the agent on its default socket, the CLI finds it", { skip: process.getuid?.() === 0 ? false : 'needs root' }, async (t) => {
  const madeDir = !existsSync(dirname(DEFAULT_AGENT_SOCKET))
  const agent = await startAgentProcess(t, tmpDir(t), { listen: 'default' })
  t.teardown(async () => {
    // A graceful stop removes the socket; the directory goes too if this test made it.
    agent.child.kill('SIGTERM')
    await agent.exited
    if (madeDir) rmSync(dirname(DEFAULT_AGENT_SOCKET), { recursive: true, force: true })
  })
  t.equal(agent.url, `unix:${DEFAULT_AGENT_SOCKET}`)
  t.equal(statSync(DEFAULT_AGENT_SOCKET).mode & 0o777, 0o600, 'root only (no faultline group here)')
  const caps = await runCli(['caps', '--json'])
  t.equal(caps.code, 0, caps.stderr)
  t.equal((JSON.parse(caps.stdout) as { host: { agentPid: number } }).host.agentPid, agent.pid, 'that agent answered')
  const s = sleeper(t)
  const stop = await runCli(['inject', 'process-stop', '--target', `process:${s.pid}`, '--duration', '1m', '--detach'])
  t.equal(stop.code, 0, stop.stderr)
  t.equal(procState(s.pid), 'T')
  const all = await runCli(['recover', '--all'])
  t.equal(all.code, 0, all.stderr)
  t.equal(procState(s.pid), 'S')
  const mutations = agent.logs.filter((l) => l.msg === 'mutating request')
  t.ok(mutations.length >= 2 && mutations.every((l) => l.who === 'unix:uid=0'), 'the log names root (uid 0) as the caller')
})

t.test('the CLI against a real agent', async (t) => {
  const stateDir = tmpDir(t)
  const agent = await startAgentProcess(t, stateDir)
  // On TCP the CLI sends the token the agent made in its state dir.
  const on = ['--agent', agent.url, '--state-dir', stateDir]

  t.test('caps, human and JSON', async (t) => {
    const human = await runCli(['caps', ...on])
    t.equal(human.code, 0)
    t.match(human.stdout, /✓\s+process-stop/)
    t.match(human.stdout, /Host features/)
    const json = JSON.parse((await runCli(['caps', '--json', ...on])).stdout) as { kinds: Record<string, { available: boolean }> }
    t.equal(json.kinds['process-kill']?.available, true)
  })

  t.test('dry run prints the plan and changes nothing', async (t) => {
    const s = sleeper(t)
    const res = await runCli(['inject', 'process-stop', '--target', `process:${s.pid}`, '--duration', '30s', '--dry-run', ...on])
    t.equal(res.code, 0, res.stderr)
    t.match(res.stdout, /dry run: nothing was changed/)
    t.match(res.stdout, new RegExp(`apply\\s+SIGSTOP to pid ${s.pid}`))
    t.match(res.stdout, /recover\s+SIGCONT/)
    t.equal(procState(s.pid), 'S')
  })

  t.test('inject waits for the deadline, then reports the recovery', async (t) => {
    const s = sleeper(t)
    const run = runCli(['inject', 'process-stop', '--target', `process:${s.pid}`, '--duration', '2s', ...on])
    await waitFor('the process to be stopped', () => procState(s.pid) === 'T', 10_000)
    const res = await run
    t.equal(res.code, 0, res.stderr)
    t.match(res.stdout, /process-stop on process \d+ \(sleep, user root\) is active/)
    t.match(res.stdout, /recovered at its deadline/)
    t.equal(procState(s.pid), 'S')
  })

  t.test('Ctrl-C recovers at once', async (t) => {
    const s = sleeper(t)
    const child = spawn(process.execPath, ['--import', 'tsx', cliEntry, 'inject', 'process-stop', '--target', `process:${s.pid}`, '--duration', '10m', ...on], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1' },
    })
    t.teardown(() => child.kill('SIGKILL'))
    let out = ''
    child.stdout.on('data', (c: Buffer) => (out += c.toString()))
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    await waitFor('the CLI to report the fault active', () => out.includes('Ctrl-C recovers now'), 20_000)
    t.equal(procState(s.pid), 'T', 'stopped while the CLI waits')
    const started = Date.now()
    child.kill('SIGINT')
    t.equal(await exited, 130, 'exit code of an interrupted command')
    t.equal(procState(s.pid), 'S', 'running again as soon as the CLI returns')
    t.ok(Date.now() - started < 10_000, 'long before the 10 minute deadline')
    t.match(out, /recovered at Ctrl-C/)
  })

  t.test('detach, ls, show, recover, recover --all', async (t) => {
    const a = sleeper(t)
    const b = sleeper(t)
    const first = await runCli(['inject', 'process-stop', '--target', `process:pid=${a.pid}`, '--duration', '5m', '--detach', '--json', ...on])
    t.equal(first.code, 0, first.stderr)
    const [injA] = JSON.parse(first.stdout) as Injection[]
    t.equal(injA?.status, 'active')
    await runCli(['inject', 'process-stop', '--target', `process:${b.pid}`, '--duration', '5m', '--detach', '--id', 'cli-b', ...on])
    t.equal(procState(a.pid), 'T')
    t.equal(procState(b.pid), 'T')

    const ls = await runCli(['ls', '--status', 'active', ...on])
    t.match(ls.stdout, /ID\s+KIND\s+TARGET\s+STATUS\s+WHEN/)
    t.match(ls.stdout, new RegExp(`cli-b\\s+process-stop\\s+process ${b.pid} \\(sleep, user root\\)\\s+active\\s+ends in`))
    t.match(ls.stdout, injA!.id)

    const show = await runCli(['show', 'cli-b', ...on])
    t.match(show.stdout, /cli-b\s+process-stop on process \d+ \(sleep, user root\)\s+active/)
    t.match(show.stdout, /plan/)

    const rec = await runCli(['recover', injA!.id, ...on])
    t.equal(rec.code, 0)
    t.match(rec.stdout, /recovered/)
    t.equal(procState(a.pid), 'S')
    t.equal(procState(b.pid), 'T', 'the other injection is untouched')

    const all = await runCli(['recover', '--all', ...on])
    t.equal(all.code, 0)
    t.match(all.stdout, /cli-b process-stop on process \d+ \(sleep, user root\) recovered/)
    t.equal(procState(b.pid), 'S')
    const nothing = await runCli(['recover', '--all', ...on])
    t.match(nothing.stdout, /nothing to recover/)
    const usage = await runCli(['recover', ...on])
    t.equal(usage.code, 2, 'neither id nor --all is a usage error')
  })

  t.test('process-kill with a signal', async (t) => {
    const s = sleeper(t)
    const died = new Promise<NodeJS.Signals | null>((resolve) => s.child.on('exit', (_c, sig) => resolve(sig)))
    const res = await runCli(['inject', 'process-kill', '--signal', 'TERM', '--target', `process:${s.pid}`, '--duration', '1s', ...on])
    t.equal(res.code, 0, res.stderr)
    t.equal(await died, 'SIGTERM')
    t.match(res.stdout, new RegExp(`process-kill on process ${s.pid} .*done: SIGTERM to pid ${s.pid}\\b.*; it cannot be undone`))
  })

  t.test('errors are clear and exit non-zero', async (t) => {
    const gone = await runCli(['inject', 'process-stop', '--target', 'process:4194000', '--duration', '5s', ...on])
    t.equal(gone.code, 1)
    t.match(gone.stderr, /no process with pid 4194000 \[FAULTLINE_ERR_TARGET_NOT_FOUND\]/)
    const badTarget = await runCli(['inject', 'process-stop', '--target', 'vm:3', '--duration', '5s', ...on])
    t.equal(badTarget.code, 1)
    t.match(badTarget.stderr, /unknown target type "vm"/)
    const badSignal = await runCli(['inject', 'process-kill', '--signal', 'STOP', '--target', 'process:1', '--duration', '5s', ...on])
    t.not(badSignal.code, 0)
    t.match(badSignal.stderr, /Allowed choices are KILL, TERM/)
    const missing = await runCli(['show', 'nope', ...on])
    t.match(missing.stderr, /no injection with id "nope" \[FAULTLINE_ERR_NOT_FOUND\]/)
    const down = await runCli(['ls', '--agent', 'http://127.0.0.1:1'])
    t.equal(down.code, 1)
    t.match(down.stderr, /nothing listens at http:\/\/127.0.0.1:1 \(ECONNREFUSED\)/)
  })
})
