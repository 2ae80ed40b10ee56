// Bad values, as a person types them: each is answered with the field, what is wrong with it and
// what is allowed — checked against the one kind the body names, never "must NOT have additional
// properties" or a leaked regex — by the agent's API and by the CLI, and nothing changes.
import t from 'tap'
import { runCli, sleeper, testAgent } from '../helpers.js'

interface Issue {
  field: string
  problem: string
  allowed?: string
}

interface Row {
  /** What was typed, as a body's fault, target and duration. */
  fault: Record<string, unknown>
  target?: Record<string, unknown>
  duration?: unknown
  field: string
  problem: RegExp
  allowed: RegExp
  code?: string
}

const host = { type: 'host' }

/** ≥ 30 bad values across kinds: the field, the problem and what is allowed, for each. */
function rows(pid: number): Row[] {
  const proc = { type: 'process', pid }
  return [
    // As reported: --load 150, a relative --path, --offset 15, process:0, an unknown parameter.
    { fault: { kind: 'stress-cpu', load: 150 }, field: 'fault.load', problem: /load 150 is above the maximum 100/, allowed: /percent of one CPU.*from 1 to 100/ },
    { fault: { kind: 'file-corrupt', path: 'etc/app.conf', count: 3 }, field: 'fault.path', problem: /"etc\/app\.conf" is not an absolute path/, allowed: /regular file/ },
    { fault: { kind: 'time-skew', offset: '15' }, target: proc, field: 'fault.offset', problem: /invalid duration "15".*units/, allowed: /-15m/ },
    { fault: { kind: 'process-stop' }, target: { type: 'process', pid: 0 }, field: 'target.pid', problem: /pid 0 is below the minimum 1/, allowed: /Process id/ },
    { fault: { kind: 'stress-cpu', lod: 50 }, field: 'fault.lod', problem: /stress-cpu has no parameter "lod"; did you mean "load"\?/, allowed: /its parameters: load, workers, engine/ },
    // Durations (item 4): the grammar in words, code BAD_DURATION, never the regex.
    { fault: { kind: 'process-stop' }, target: proc, duration: '30', field: 'duration', problem: /invalid duration "30": use whole numbers with units/, allowed: /30s/, code: 'FAULTLINE_ERR_BAD_DURATION' },
    { fault: { kind: 'process-stop' }, target: proc, duration: '30sec', field: 'duration', problem: /invalid duration "30sec"/, allowed: /30s/, code: 'FAULTLINE_ERR_BAD_DURATION' },
    { fault: { kind: 'process-stop' }, target: proc, duration: '0.5s', field: 'duration', problem: /invalid duration "0\.5s"/, allowed: /30s/, code: 'FAULTLINE_ERR_BAD_DURATION' },
    { fault: { kind: 'process-stop' }, target: proc, duration: '500ms', field: 'duration', problem: /500ms is shorter than the minimum 1s/, allowed: /1s to 1h/, code: 'FAULTLINE_ERR_BAD_DURATION' },
    { fault: { kind: 'process-stop' }, target: proc, duration: '2h', field: 'duration', problem: /2h exceeds this agent's maximum of 1h/, allowed: /1s to 1h/, code: 'FAULTLINE_ERR_BAD_DURATION' },
    { fault: { kind: 'process-stop' }, target: proc, duration: '5m30m', field: 'duration', problem: /each unit may appear once, largest first/, allowed: /30s/, code: 'FAULTLINE_ERR_BAD_DURATION' },
    { fault: { kind: 'process-stop' }, target: proc, duration: 30, field: 'duration', problem: /must be a string, not 30/, allowed: /30s/, code: 'FAULTLINE_ERR_BAD_DURATION' },
    // Numbers out of range, wrong types, too many decimals.
    { fault: { kind: 'stress-cpu', load: 1.5 }, field: 'fault.load', problem: /load must be a whole number, not 1\.5/, allowed: /from 1 to 100/ },
    { fault: { kind: 'stress-cpu', workers: 0 }, field: 'fault.workers', problem: /workers 0 is below the minimum 1/, allowed: /from 1 to 256/ },
    { fault: { kind: 'stress-io', workers: 1000 }, field: 'fault.workers', problem: /workers 1000 is above the maximum/, allowed: /workers/i },
    { fault: { kind: 'network-loss', percent: 0 }, field: 'fault.percent', problem: /percent 0 is below the minimum 0 \(not included\)/, allowed: /0\.01 steps/ },
    { fault: { kind: 'network-loss', percent: 150 }, field: 'fault.percent', problem: /percent 150 is above the maximum 100/, allowed: /Percent of matching packets to drop/ },
    { fault: { kind: 'network-loss', percent: 10.001 }, field: 'fault.percent', problem: /too many decimals \(steps of 0\.01\)/, allowed: /0\.01 steps/ },
    { fault: { kind: 'network-loss', percent: '10' }, field: 'fault.percent', problem: /percent must be a number, not "10"/, allowed: /Percent/ },
    { fault: { kind: 'network-loss', percent: 10, ports: [70000] }, field: 'fault.ports[0]', problem: /ports\[0\] 70000 is above the maximum 65535/, allowed: /Remote ports/ },
    { fault: { kind: 'network-loss', percent: 10, ports: [80, 80] }, field: 'fault.ports', problem: /lists a value twice/, allowed: /Remote ports/ },
    { fault: { kind: 'file-corrupt', path: '/etc/app.conf', offsets: [-1] }, field: 'fault.offsets[0]', problem: /offsets\[0\] -1 is below the minimum 0/, allowed: /Byte offsets/ },
    { fault: { kind: 'file-corrupt', path: '/etc/app.conf', value: 300, offsets: [1] }, field: 'fault.value', problem: /value 300 is above the maximum 255/, allowed: /from 0 to 255/ },
    // Choices, forms and units.
    { fault: { kind: 'network-loss', percent: 10, direction: 'up' }, field: 'fault.direction', problem: /direction "up" is not one of egress, ingress, both/, allowed: /one of egress, ingress, both/ },
    { fault: { kind: 'process-kill', signal: 'SIGFOO' }, target: proc, field: 'fault.signal', problem: /signal "SIGFOO" is not one of KILL, TERM/, allowed: /without the SIG prefix/ },
    { fault: { kind: 'stress-cpu', engine: 'fast' }, field: 'fault.engine', problem: /engine "fast" is not one of auto, stress-ng, builtin/, allowed: /built-in burner/ },
    { fault: { kind: 'network-delay', latency: '100' }, field: 'fault.latency', problem: /latency: invalid duration "100"/, allowed: /Added delay.*1ms to 1m/ },
    { fault: { kind: 'network-delay' }, field: 'fault.latency', problem: /network-delay needs latency/, allowed: /Added delay/ },
    { fault: { kind: 'network-bandwidth', rate: 'fast' }, field: 'fault.rate', problem: /rate "fast" is not in the form rate takes/, allowed: /bits per second.*1mbit/ },
    { fault: { kind: 'stress-memory', size: 'lots' }, field: 'fault.size', problem: /size "lots" is not a size/, allowed: /KiB, MiB.*1\.5GB/ },
    { fault: { kind: 'disk-fill', path: '/tmp', size: '10Mbit' }, field: 'fault.size', problem: /size "10Mbit" is not a size \(sizes are bytes/, allowed: /How much to allocate/ },
    { fault: { kind: 'file-chmod', path: '/etc/app.conf', mode: '999' }, field: 'fault.mode', problem: /mode "999" is not in the form mode takes/, allowed: /octal/ },
    { fault: { kind: 'file-delete', path: '/etc/app.conf/' }, field: 'fault.path', problem: /not in normal form.*write it as "\/etc\/app\.conf"/, allowed: /absolute path in normal form/ },
    { fault: { kind: 'file-delete', path: '/etc/../etc/app.conf' }, field: 'fault.path', problem: /write it as "\/etc\/app\.conf"/, allowed: /normal form/ },
    { fault: { kind: 'network-partition', peers: [] }, field: 'fault.peers', problem: /peers has fewer items than the minimum 1/, allowed: /Remote addresses/ },
    // Kinds and targets.
    { fault: { kind: 'process-stp' }, target: proc, field: 'fault.kind', problem: /unknown fault kind "process-stp".*did you mean process-stop\?/, allowed: /kinds listed/ },
    { fault: { kind: 'process-stop' }, target: { type: 'proces', pid }, field: 'target.type', problem: /unknown target type "proces"; did you mean process\?/, allowed: /one of host, process, netns, container/ },
    { fault: { kind: 'process-stop' }, target: { type: 'process' }, field: 'target', problem: /a process target needs one of pid, name, cmdline/, allowed: /pid: Process id/ },
    { fault: { kind: 'process-stop' }, target: { type: 'process', pid, name: 'sleep' }, field: 'target', problem: /takes one of pid, name, cmdline, not pid and name/, allowed: /exactly one of pid, name, cmdline/ },
    { fault: { kind: 'process-stop' }, target: { type: 'process', name: '' }, field: 'target.name', problem: /name has fewer characters than the minimum 1/, allowed: /Exact process name/ },
    { fault: { kind: 'network-delay', latency: '10ms' }, target: { type: 'netns', name: 'a b' }, field: 'target.name', problem: /name "a b" is not in the form name takes/, allowed: /named network namespace/ },
    { fault: { kind: 'process-stop' }, target: { type: 'container', id: 'x' }, field: 'target.id', problem: /id "x" is not in the form id takes/, allowed: /at least 3 characters/ },
  ]
}

t.test('the agent answers each bad value with the field, the problem and what is allowed', async (t) => {
  const app = await testAgent(t)
  const s = sleeper(t)
  const table = rows(s.pid)
  t.ok(table.length >= 30, `${table.length} bad values`)
  for (const row of table) {
    const body = { fault: row.fault, target: row.target ?? host, duration: row.duration ?? '30s' }
    const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: body })
    const reply = res.json<{ code: string; message: string; details?: { issues?: Issue[] } }>()
    const what = `${JSON.stringify(row.fault)} ${JSON.stringify(row.target ?? host)} ${JSON.stringify(row.duration ?? '30s')}`
    t.equal(res.statusCode, 400, `400: ${what}`)
    t.equal(reply.code, row.code ?? 'FAULTLINE_ERR_VALIDATION', `code: ${what}`)
    const issue = reply.details?.issues?.[0]
    t.equal(issue?.field, row.field, `field: ${what}`)
    t.match(issue?.problem, row.problem, `problem: ${what}`)
    t.match(issue?.allowed, row.allowed, `allowed: ${what}`)
    t.match(reply.message, new RegExp(`^${row.field.replace(/[.[\]]/g, '\\$&')}: .* — allowed: `), `the message leads with the field and ends with what is allowed: ${what}`)
    t.notMatch(reply.message, /must match pattern|must NOT have additional properties|anyOf|must be equal to constant/, `no schema jargon: ${what}`)
  }
  const list = await app.inject({ method: 'GET', url: '/v1/injections' })
  t.same(list.json<{ injections: unknown[] }>().injections, [], 'nothing was journaled')
})

t.test('the CLI says it with flags, before any agent is asked', async (t) => {
  // No agent at this address: these are refused by the CLI itself, in the words of its flags.
  const on = ['--agent', 'unix:/nonexistent/faultline.sock']
  const cases: [string[], RegExp][] = [
    [['stress-cpu', '--load', '150', '--target', 'host'], /--load: load 150 is above the maximum 100 \(allowed: .*from 1 to 100\)/],
    [['file-corrupt', '--path', 'etc/app.conf', '--count', '3', '--target', 'host'], /--path: path "etc\/app\.conf" is not an absolute path/],
    [['time-skew', '--offset', '15', '--target', 'process:4242'], /--offset: offset: invalid duration "15"/],
    [['process-stop', '--target', 'process:0'], /--target: pid 0 is below the minimum 1/],
    [['file-delete', '--path', '/etc/app.conf/', '--target', 'host'], /--path: path "\/etc\/app\.conf\/" is not in normal form/],
  ]
  for (const [args, expected] of cases) {
    const res = await runCli(['inject', ...args, '--duration', '30s', ...on])
    t.equal(res.code, 1, args.join(' '))
    t.match(res.stderr, expected, args.join(' '))
    t.notMatch(res.stderr, /no agent listens/, 'refused before the agent is asked')
  }
  for (const duration of ['30', '30sec', '0.5s']) {
    const res = await runCli(['inject', 'process-stop', '--target', 'process:4242', '--duration', duration, ...on])
    t.match(res.stderr, new RegExp(`--duration: invalid duration "${duration.replace('.', '\\.')}": use whole numbers with units .*\\[FAULTLINE_ERR_BAD_DURATION\\]`), `--duration ${duration}`)
  }
  const unknown = await runCli(['inject', 'stress-cpu', '--lod', '50', '--target', 'host', '--duration', '30s', ...on])
  t.equal(unknown.code, 1)
  t.match(unknown.stderr, /unknown option '--lod'\s*\(Did you mean --load\?\)/, 'an unknown flag names the right one')
})
