import { Command, InvalidArgumentError, Option } from 'commander'
import { readFileSync } from 'node:fs'
import { ConfigError, isReadable as readable } from '../../common/config.js'
import { DEFAULT_SERVER_STATE_DIR, adminTokenFile } from '../../common/locations.js'
import type { Experiment } from '../../protocol/experiment.js'
import { formatDuration, parseDuration } from '../../protocol/duration.js'
import { roles } from '../../protocol/roles.js'
import { describeTarget } from '../../protocol/target.js'
import type { AgentView, ApiTokenView, AuditEntry, FleetEvent, ExperimentPlan, ExperimentView, HaltResult, NewApiToken, RemovedAgentView, RunRecordView, RunView } from '../../protocol/views.js'
import { AgentClient } from '../client.js'
import { bold, clock, dim, green, red, relative, table, yellow } from '../format.js'
import { printJson, wantsJson } from './client-options.js'

/** Commands against the Faultline server: experiments, runs, halt, agents, tokens. */

export function withServerOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--server <url>', 'server API address (https://HOST:7071)').env('FAULTLINE_SERVER').default('http://127.0.0.1:7071'))
    .addOption(new Option('--token-file <file>', "file with an API token, or the admin token (default <server-state-dir>/admin.token, when readable)").env('FAULTLINE_SERVER_TOKEN_FILE'))
    .addOption(new Option('--server-state-dir <dir>', "the server's state dir, where it made its admin token").env('FAULTLINE_SERVER_STATE_DIR').default(DEFAULT_SERVER_STATE_DIR))
    .addOption(new Option('--tls-ca <file>', "CA that signed the server's certificate").env('FAULTLINE_SERVER_CA'))
    .addOption(new Option('--tls-cert <file>', 'client certificate to present (optional; recorded in the audit log)').env('FAULTLINE_SERVER_CLIENT_CERT'))
    .addOption(new Option('--tls-key <file>', 'key of --tls-cert').env('FAULTLINE_SERVER_CLIENT_KEY'))
    .option('--json', 'print JSON instead of text')
}

function serverClient(cmd: Command, timeoutMs?: number): AgentClient {
  const o = cmd.opts<{ server: string; tokenFile?: string; serverStateDir: string; tlsCa?: string; tlsCert?: string; tlsKey?: string }>()
  // wss:// works too, so one FAULTLINE_SERVER serves both the agent (--server) and the CLI.
  const url = o.server.replace(/^ws(s?):/i, 'http$1:').replace(/\/v1\/agents\/connect\/?$/, '')
  // On the server's own host, its admin can use the admin token it made at its first start.
  const tokenFile = o.tokenFile ?? (readable(adminTokenFile(o.serverStateDir)) ? adminTokenFile(o.serverStateDir) : undefined)
  return new AgentClient({
    url,
    peer: 'server',
    ...(tokenFile ? { tokenFile } : {}),
    ...(o.tlsCa ? { tlsCa: o.tlsCa } : {}),
    ...(o.tlsCert ? { tlsCert: o.tlsCert } : {}),
    ...(o.tlsKey ? { tlsKey: o.tlsKey } : {}),
    ...(timeoutMs ? { timeoutMs } : {}),
  })
}

async function withServer<T>(cmd: Command, work: (client: AgentClient) => Promise<T>, timeoutMs?: number): Promise<T> {
  const client = serverClient(cmd, timeoutMs)
  try {
    return await work(client)
  } finally {
    await client.close()
  }
}

function recordColor(status: string): string {
  if (status === 'active' || status === 'sent') return yellow(status)
  if (status === 'recovered') return green(status)
  if (status === 'failed' || status === 'aborted') return red(status)
  return dim(status)
}

function runColor(status: string): string {
  if (status === 'completed') return green(status)
  if (status === 'running' || status === 'pending') return yellow(status)
  return red(status)
}

function describeHosts(hosts: Experiment['hosts']): string {
  if ('all' in hosts) return 'all'
  if ('names' in hosts) return hosts.names.join(',')
  return Object.entries(hosts.labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',')
}

function describeMode(mode: Experiment['mode']): string {
  if (mode === undefined || typeof mode === 'string') return mode ?? 'all'
  return 'fixed' in mode ? `fixed ${mode.fixed}` : `${mode.percent}%`
}

function describeSelector(target: Experiment['target']): string {
  const { type, ...rest } = target as Record<string, unknown>
  const detail = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
    .join(' ')
  return detail ? `${String(type)} ${detail}` : String(type)
}

export function recordsTable(records: RunRecordView[]): string {
  if (records.length === 0) return dim('no hosts')
  const rows = [['AGENT', 'TARGET', 'STATUS', 'REASON', 'INJECTION', 'ERROR'].map(bold)]
  for (const r of records) rows.push([r.agent, r.target || dim('-'), recordColor(r.status), r.reason || dim('-'), r.injectionId || dim('-'), r.error ? red(r.error.message.slice(0, 100)) : ''])
  return table(rows)
}

function runHeader(run: RunView): string {
  const s = run.selection
  return `${bold(`run ${run.id}`)} of ${run.experiment}  ${runColor(run.status)}  ${dim(`started ${clock(run.startedAt)} by ${run.startedBy} (${run.trigger}); ${s.chosen} of ${s.connected} connected host(s), mode ${s.mode}, ${s.matched - s.connected} offline; duration ${run.duration}`)}`
}

// ---- exp ----------------------------------------------------------------------------------------

function expApply(): Command {
  return withServerOptions(new Command('apply'))
    .description('create or replace an experiment from a YAML or JSON file')
    .requiredOption('-f, --file <file>', 'the experiment (YAML or JSON); "-" reads standard input')
    .addHelpText(
      'after',
      `
Example file (db-latency.yaml):
  name: db-latency
  hosts: { labels: { role: db } }
  mode: { fixed: 2 }
  target: { type: container, labels: { app: postgres } }
  fault: { kind: network-delay, latency: 100ms, jitter: 10ms }
  duration: 5m
  schedule: "*/30 * * * *"
  guards:
    - { http: { url: "http://127.0.0.1:8080/health", expectStatus: 200 }, every: 5s }

Examples:
  faultline exp apply -f db-latency.yaml --dry-run   checks it and shows per host what would happen
  faultline exp apply -f db-latency.yaml
  faultline exp apply -f - < experiment.json`,
    )
    .option('--dry-run', 'check it, and ask every connected agent it selects what it would do there; store nothing, apply nothing')
    .action(async (_o, cmd: Command) => {
      const { file, dryRun } = cmd.opts<{ file: string; dryRun?: boolean }>()
      const text = readExperimentFile(file)
      const raw = { raw: text, contentType: file.endsWith('.json') || /^\s*\{/.test(text) ? 'application/json' : 'application/yaml' }
      await withServer(cmd, async (client) => {
        if (dryRun) {
          const { body } = await client.call<ExperimentPlan>('POST', '/v1/plans', raw)
          if (wantsJson(cmd)) return printJson(body)
          printPlan(body)
          return
        }
        const { status, body } = await client.call<ExperimentView>('POST', '/v1/experiments', raw)
        if (wantsJson(cmd)) return printJson(body)
        const next = body.nextRunAt ? dim(`  next run ${clock(body.nextRunAt)} (${relative(body.nextRunAt)})`) : ''
        console.log(`${green('✓')} experiment ${bold(body.name)} ${status === 201 ? 'created' : 'replaced'}${next}`)
        for (const w of body.warnings ?? []) console.log(`${yellow('!')} ${w}`)
      }, 120_000)
    })
}

/** The experiment file, or standard input for "-"; a missing file is one line, not a stack. */
function readExperimentFile(file: string): string {
  try {
    return readFileSync(file === '-' ? 0 : file, 'utf8')
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new ConfigError(`cannot read the experiment file ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.message}`)
  }
}

/** A plan, host by host: what each agent would do, or why it would fail. */
function printPlan(plan: ExperimentPlan): void {
  const s = plan.selection
  console.log(
    `${bold(`plan of ${plan.experiment}`)}  ${dim(`a run now would pick ${s.wouldChoose} of ${s.connected} connected host(s) (mode ${plan.mode})${s.matched > s.connected ? `, ${s.matched - s.connected} offline` : ''}; duration ${plan.duration}; nothing was applied`)}`,
  )
  for (const w of plan.warnings) console.log(`${yellow('!')} ${w}`)
  if (plan.hosts.length === 0) return console.log(dim('no agent matches its hosts; see "faultline agents ls"'))
  const rows = [['AGENT', 'OUTCOME', 'TARGET', 'PLAN / ERROR'].map(bold)]
  for (const h of plan.hosts) {
    if (h.injections.length === 0) rows.push([h.agent, planColor(h.outcome), dim('-'), h.error ? red(h.error.message.slice(0, 160)) : ''])
    for (const i of h.injections) rows.push([h.agent, planColor(h.outcome), describeTarget(i.resolved), h.error ? red(h.error.message.slice(0, 160)) : (i.plan?.steps ?? []).filter((st) => st.phase === 'apply').map((st) => st.detail).join('; ').slice(0, 160)])
  }
  console.log(table(rows))
  if (plan.hosts.some((h) => h.outcome === 'refused')) process.exitCode = 1
}

function planColor(outcome: string): string {
  return outcome === 'would-inject' ? green(outcome) : outcome === 'refused' ? red(outcome) : yellow(outcome)
}

function expPlan(): Command {
  return withServerOptions(new Command('plan'))
    .description('what a run of a stored experiment would do now, host by host; nothing is applied')
    .argument('<name>', 'experiment name')
    .addHelpText('after', '\nExamples:\n  faultline exp plan db-latency\n  faultline exp apply -f db-latency.yaml --dry-run    (the same, for a file not applied yet)\n\nExit status: 1 when some selected host would refuse it.')
    .action(async (name: string, _o, cmd: Command) =>
      withServer(cmd, async (client) => {
        const { body } = await client.call<ExperimentPlan>('POST', `/v1/experiments/${encodeURIComponent(name)}/plan`)
        if (wantsJson(cmd)) return printJson(body)
        printPlan(body)
      }, 120_000),
    )
}

function expLs(): Command {
  return withServerOptions(new Command('ls'))
    .description('list experiments')
    .addHelpText('after', '\nExamples:\n  faultline exp ls\n  faultline exp ls --json | jq \'.experiments[].name\'')
    .action(async (_o, cmd: Command) =>
      withServer(cmd, async (client) => {
        const { body } = await client.call<{ experiments: ExperimentView[] }>('GET', '/v1/experiments')
        if (wantsJson(cmd)) return printJson(body)
        if (body.experiments.length === 0) return console.log(dim('no experiments; create one with "faultline exp apply -f FILE"'))
        const rows = [['NAME', 'HOSTS', 'MODE', 'FAULT', 'TARGET', 'DURATION', 'SCHEDULE', 'LAST RUN'].map(bold)]
        for (const e of body.experiments) {
          const last = e.lastRun ? `${e.lastRun.id} ${runColor(e.lastRun.status)} ${relative(e.lastRun.startedAt)}` : dim('never')
          rows.push([e.name, describeHosts(e.spec.hosts), describeMode(e.spec.mode), e.spec.fault.kind, describeSelector(e.spec.target), e.spec.duration, e.spec.schedule ?? dim('-'), last])
        }
        console.log(table(rows))
      }),
    )
}

function expShow(): Command {
  return withServerOptions(new Command('show'))
    .description('show an experiment and, per host and target, its last run')
    .argument('<name>', 'experiment name')
    .addHelpText('after', '\nExamples:\n  faultline exp show db-latency\n  faultline exp show db-latency --json')
    .action(async (name: string, _o, cmd: Command) =>
      withServer(cmd, async (client) => {
        const { body: exp } = await client.call<ExperimentView>('GET', `/v1/experiments/${encodeURIComponent(name)}`)
        const run = exp.lastRun ? (await client.call<RunView>('GET', `/v1/runs/${encodeURIComponent(exp.lastRun.id)}`)).body : undefined
        if (wantsJson(cmd)) return printJson({ experiment: exp, lastRun: run ?? null })
        const s = exp.spec
        const lines = [
          `${bold(exp.name)}  ${dim(`updated ${clock(exp.updatedAt)} by ${exp.updatedBy}`)}`,
          `  hosts      ${describeHosts(s.hosts)}  (mode ${describeMode(s.mode)})`,
          `  target     ${describeSelector(s.target)}`,
          `  fault      ${JSON.stringify(s.fault)}`,
          `  duration   ${s.duration}`,
        ]
        if (s.schedule) lines.push(`  schedule   ${s.schedule}${exp.nextRunAt ? dim(`  next ${clock(exp.nextRunAt)}`) : ''}`)
        for (const g of s.guards ?? []) lines.push(`  guard      ${JSON.stringify(g)}`)
        console.log(lines.join('\n'))
        console.log('')
        if (!run) return console.log(dim('never run; start it with "faultline exp run ' + exp.name + '"'))
        console.log(runHeader(run))
        console.log(recordsTable(run.records))
      }),
    )
}

function expRun(): Command {
  return withServerOptions(new Command('run'))
    .description('start a run now and follow it host by host until it ends (Ctrl-C aborts the run)')
    .argument('<name>', 'experiment name')
    .option('--detach', 'print the run id and return at once')
    .addHelpText(
      'after',
      `
Examples:
  faultline exp run db-latency             live progress; Ctrl-C aborts the run (every host recovers)
  faultline exp run db-latency --detach    then: faultline exp show db-latency / faultline exp abort RUN

Exit status: 0 when the run completed, 1 when it failed or was aborted, 130 after Ctrl-C (the run is aborted).`,
    )
    .action(async (name: string, _o, cmd: Command) =>
      withServer(cmd, async (client) => {
        const json = wantsJson(cmd)
        const tty = process.stdout.isTTY && !json
        let interrupted = 0
        let wake = () => undefined as void
        const onSigint = () => {
          interrupted++
          if (interrupted > 1) {
            process.stderr.write('\ninterrupted again: exiting; the run goes on being aborted on the server\n')
            process.exit(130)
          }
          wake()
        }
        // Watched from before the request, so an interrupt during the start still aborts.
        process.on('SIGINT', onSigint)
        try {
          const { body: started } = await client.call<{ id: string }>('POST', `/v1/experiments/${encodeURIComponent(name)}/runs`)
          if (cmd.opts<{ detach?: boolean }>().detach && !interrupted) {
            // The id alone on stdout (RUN=$(faultline exp run NAME --detach)); the rest on stderr.
            if (json) printJson(started)
            else {
              console.log(started.id)
              process.stderr.write(dim(`run ${started.id} of ${name} started; follow with "faultline exp show ${name}", abort with "faultline exp abort ${started.id}"\n`))
            }
            return
          }
          const seen = new Map<string, string>()
          let aborted = false
          let header = false
          for (;;) {
            if (interrupted && !aborted) {
              aborted = true
              if (!json) process.stderr.write(`\n${yellow('aborting')} run ${started.id}: every host recovers now (Ctrl-C again to stop watching)\n`)
              await client.call('POST', `/v1/runs/${encodeURIComponent(started.id)}/abort`)
            }
            const { body: run } = await client.call<RunView>('GET', `/v1/runs/${encodeURIComponent(started.id)}`)
            if (!json && !header) {
              console.log(runHeader(run))
              const sel = run.selection
              if (sel.requested !== undefined && sel.chosen < sel.requested) console.log(`${yellow('!')} mode ${sel.mode} asked for ${sel.requested} host(s); only ${sel.chosen} connected, so the run uses ${sel.chosen}`)
              if (!tty) console.log(dim(`runs until ${clock(new Date(new Date(run.startedAt).getTime() + parseDuration(run.duration)).toISOString())}; Ctrl-C aborts the run`))
              header = true
            }
            if (tty) process.stdout.write('\r\x1b[K')
            for (const r of run.records) {
              const key = `${r.agent}|${r.injectionId || r.target}`
              const state = `${r.status}|${r.reason}`
              if (seen.get(key) === state) continue
              seen.set(key, state)
              if (json) printJson({ run: run.id, ...r })
              else console.log(`  ${dim(clock(r.updatedAt))}  ${r.agent}  ${r.target || dim('-')}  ${recordColor(r.status)}${r.reason ? dim(` (${r.reason})`) : ''}${r.error ? `  ${red(r.error.message.slice(0, 160))}` : ''}`)
            }
            if (tty && (run.status === 'running' || run.status === 'pending')) {
              const left = new Date(run.startedAt).getTime() + parseDuration(run.duration) - Date.now()
              process.stdout.write(left > 0 ? `  ends in ${formatDuration(Math.ceil(left / 1000) * 1000)} — Ctrl-C aborts the run` : '  ending: waiting for every host to report its recovery')
            }
            if (run.status !== 'running' && run.status !== 'pending') {
              if (json) printJson({ id: run.id, status: run.status })
              else console.log(`${run.status === 'completed' ? green('✓') : red('✗')} run ${run.id} ${runColor(run.status)}`)
              // Ctrl-C is the person's choice (130, as for inject); a run that failed on its own is 1.
              if (interrupted) process.exitCode = 130
              else if (run.status !== 'completed') process.exitCode = 1
              return
            }
            await new Promise<void>((resolve) => {
              wake = resolve
              setTimeout(resolve, 500)
            })
          }
        } finally {
          process.off('SIGINT', onSigint)
        }
      }),
    )
}

function expAbort(): Command {
  return withServerOptions(new Command('abort'))
    .description('abort a run: every host of the run recovers now')
    .argument('<run>', 'run id')
    .addHelpText('after', '\nExample:\n  faultline exp abort 7h3k2m9q0a')
    .action(async (id: string, _o, cmd: Command) =>
      withServer(cmd, async (client) => {
        const { body } = await client.call<RunView>('POST', `/v1/runs/${encodeURIComponent(id)}/abort`)
        if (wantsJson(cmd)) return printJson(body)
        console.log(runHeader(body))
        console.log(recordsTable(body.records))
      }),
    )
}

function expRm(): Command {
  return withServerOptions(new Command('rm'))
    .description('delete an experiment (its runs are kept)')
    .argument('<name>', 'experiment name')
    .addHelpText('after', '\nExample:\n  faultline exp rm db-latency')
    .action(async (name: string, _o, cmd: Command) =>
      withServer(cmd, async (client) => {
        const { body } = await client.call<{ deleted: string }>('DELETE', `/v1/experiments/${encodeURIComponent(name)}`)
        if (wantsJson(cmd)) return printJson(body)
        console.log(`${green('✓')} experiment ${body.deleted} deleted`)
      }),
    )
}

export function expCommand(): Command {
  return new Command('exp')
    .description('experiments on the server: apply, list, show, run, abort')
    .addCommand(expApply())
    .addCommand(expPlan())
    .addCommand(expLs())
    .addCommand(expShow())
    .addCommand(expRun())
    .addCommand(expAbort())
    .addCommand(expRm())
    .addHelpText(
      'after',
      `
Examples:
  faultline exp apply -f db-latency.yaml --dry-run    what each host would do; nothing applied
  faultline exp apply -f db-latency.yaml
  faultline exp plan db-latency
  faultline exp run db-latency
  faultline exp show db-latency
  export FAULTLINE_SERVER=https://faultline.example:7071 FAULTLINE_SERVER_TOKEN_FILE=~/.faultline-token FAULTLINE_SERVER_CA=ca.crt`,
    )
}

// ---- halt, agents, tokens -------------------------------------------------------------------------

export function haltCommand(): Command {
  return withServerOptions(new Command('halt'))
    .description('stop every fault on every agent of the fleet now (through the server)')
    .option('--all', 'required: recover everything, everywhere')
    .addHelpText(
      'after',
      `
Example:
  faultline halt --all

Connected agents recover every injection (whoever made it) before this returns; running runs are
aborted; agents that are offline recover the server's injections through their lease.
For this host's agent alone, use "faultline recover --all".`,
    )
    .action(async (_o, cmd: Command) => {
      if (!cmd.opts<{ all?: boolean }>().all) cmd.error('halt needs --all: it recovers every injection on every agent', { exitCode: 2 })
      await withServer(
        cmd,
        async (client) => {
          const { body } = await client.call<HaltResult>('POST', '/v1/halt')
          if (wantsJson(cmd)) return printJson(body)
          for (const a of body.agents) console.log(a.ok ? `${green('✓')} ${a.agent} recovered everything` : `${red('✗')} ${a.agent}: ${a.error ?? 'failed'}`)
          for (const id of body.offline) console.log(`${yellow('…')} ${id} offline: recovers through its lease`)
          if (body.agents.length === 0 && body.offline.length === 0) console.log(dim('no agents'))
          if (body.runs.length > 0) console.log(dim(`aborted run(s): ${body.runs.join(', ')}`))
          if (body.agents.some((a) => !a.ok)) process.exitCode = 1
        },
        120_000,
      )
    })
}

export function agentsCommand(): Command {
  const ls = withServerOptions(new Command('ls'))
    .description('list the agents the server knows')
    .option('--removed', 'list the names refused because an admin removed their agent')
    .addHelpText('after', '\nExamples:\n  faultline agents ls\n  faultline agents ls --removed\n  faultline agents ls --json | jq \'.agents[] | select(.connected)\'')
    .action(async (_o, cmd: Command) =>
      withServer(cmd, async (client) => {
        if (cmd.opts<{ removed?: boolean }>().removed) {
          const { body } = await client.call<{ removed: RemovedAgentView[] }>('GET', '/v1/agents/removed')
          if (wantsJson(cmd)) return printJson(body)
          if (body.removed.length === 0) return console.log(dim('no removed agents'))
          const rows = [['NAME', 'AGENT', 'REMOVED', 'BY'].map(bold)]
          for (const r of body.removed) rows.push([r.name, r.agentId, relative(r.removedAt), r.removedBy])
          return console.log(table(rows))
        }
        const { body } = await client.call<{ agents: AgentView[] }>('GET', '/v1/agents')
        if (wantsJson(cmd)) return printJson(body)
        if (body.agents.length === 0) return console.log(dim('no agents; start one with "faultline agent --server URL --enrol-token-file F"'))
        const rows = [['ID', 'HOSTNAME', 'LABELS', 'STATE', 'LAST SEEN', 'OPEN', 'KINDS', 'VERSION'].map(bold)]
        for (const a of body.agents) {
          rows.push([
            a.id,
            a.hostname,
            Object.entries(a.labels)
              .map(([k, v]) => `${k}=${v}`)
              .join(',') || dim('-'),
            a.connected ? green('connected') : red('offline'),
            a.lastSeen ? relative(a.lastSeen) : dim('never'),
            String(a.open),
            String(a.kinds.length),
            a.version,
          ])
        }
        console.log(table(rows))
      }),
    )
  const rm = withServerOptions(new Command('rm'))
    .description('remove an agent (admin): it is disconnected and may not enrol again until "faultline agents admit"')
    .argument('<id>', 'agent id')
    .addHelpText(
      'after',
      `
Example:
  faultline agents rm db-7

The agent is disconnected at once and its credential stops working; its lease then recovers the
server's injections on it. Its name stays refused, even with the enrolment token, until an admin
runs "faultline agents admit db-7". Stop the agent on the host (systemctl stop faultline-agent)
if it should not run at all.`,
    )
    .action(async (id: string, _o, cmd: Command) =>
      withServer(cmd, async (client) => {
        const { body } = await client.call<{ deleted: string; refused: string[] }>('DELETE', `/v1/agents/${encodeURIComponent(id)}`)
        if (wantsJson(cmd)) return printJson(body)
        console.log(`${green('✓')} agent ${body.deleted} removed and disconnected; ${body.refused.join(', ')} may not enrol again until "faultline agents admit ${body.refused[0]}"`)
      }),
    )
  const admit = withServerOptions(new Command('admit'))
    .description('let a removed agent enrol again (admin)')
    .argument('<name>', 'the name (or id) of the removed agent')
    .addHelpText('after', '\nExample:\n  faultline agents admit db-7    (it enrols again with the enrolment token at its next attempt)')
    .action(async (name: string, _o, cmd: Command) =>
      withServer(cmd, async (client) => {
        const { body } = await client.call<{ admitted: string[] }>('POST', `/v1/agents/${encodeURIComponent(name)}/admit`)
        if (wantsJson(cmd)) return printJson(body)
        console.log(`${green('✓')} ${body.admitted.join(', ')} may enrol again`)
      }),
    )
  return new Command('agents').description('agents known to the server').addCommand(ls).addCommand(rm).addCommand(admit)
}

/** Follows a cursor-paged list (`after` = the last id seen): the latest page, then new rows as they come. */
async function followList<T extends { id: number }>(cmd: Command, path: string, key: string, print: (row: T) => void): Promise<void> {
  const { limit, follow } = cmd.opts<{ limit: string; follow?: boolean }>()
  const json = wantsJson(cmd)
  let stop = false
  const onSigint = () => {
    stop = true
  }
  process.on('SIGINT', onSigint)
  try {
    await withServer(cmd, async (client) => {
      let after: number | undefined
      for (;;) {
        const query = after === undefined ? `?limit=${limit}` : `?after=${after}&limit=1000`
        const { body } = await client.call<Record<string, T[]>>('GET', `${path}${query}`)
        const rows = body[key] ?? []
        if (json && !follow) return printJson(body)
        for (const row of rows) json ? printJson(row) : print(row)
        if (rows.length > 0) after = rows[rows.length - 1]!.id
        else if (after === undefined) after = 0
        if (!follow) return
        for (let waited = 0; waited < 1000 && !stop; waited += 100) await new Promise((r) => setTimeout(r, 100))
        if (stop) return
      }
    })
  } finally {
    process.off('SIGINT', onSigint)
  }
}

const limitOption = () =>
  new Option('--limit <n>', 'how many of the latest to show').default('50').argParser((v) => {
    if (!/^[1-9][0-9]{0,3}$/.test(v)) throw new InvalidArgumentError('expected a whole number from 1 to 9999')
    return v
  })

export function auditCommand(): Command {
  return withServerOptions(new Command('audit'))
    .description("the server's audit log: every mutating call, and every refused one (who, what, from where, outcome)")
    .addOption(limitOption())
    .option('-f, --follow', 'keep printing new entries as they are written (Ctrl-C stops)')
    .addHelpText('after', '\nExamples:\n  faultline audit\n  faultline audit --follow\n  faultline audit --json --limit 500 | jq \'.entries[] | select(.outcome != "ok")\'')
    .action(async (_o, cmd: Command) =>
      followList<AuditEntry>(cmd, '/v1/audit', 'entries', (e) => {
        const outcome = e.outcome === 'ok' ? green(e.outcome) : red(e.outcome)
        console.log(`${dim(`${e.at.slice(0, 19).replace('T', ' ')}`)}  ${e.who}  ${e.method} ${e.url}  ${e.status} ${outcome}  ${dim(`from ${e.source}`)}`)
      }),
    )
}

export function eventsCommand(): Command {
  return withServerOptions(new Command('events'))
    .description('fleet events: agents enrolling, connecting and refused, runs starting and ending, records, guards, halts')
    .addOption(limitOption())
    .option('-f, --follow', 'keep printing new events as they happen (Ctrl-C stops)')
    .addHelpText('after', '\nExamples:\n  faultline events\n  faultline events --follow\n  faultline events --json | jq \'.events[] | select(.type == "agent.refused")\'')
    .action(async (_o, cmd: Command) =>
      followList<FleetEvent>(cmd, '/v1/events', 'events', (e) => {
        console.log(`${dim(`${e.at.slice(0, 19).replace('T', ' ')}`)}  ${bold(e.type)}  ${e.message}`)
      }),
    )
}

export function tokensCommand(): Command {
  const create = withServerOptions(new Command('create'))
    .description('create an API token (admin); its secret is printed once')
    .requiredOption('--name <name>', 'who or what uses it (appears in the audit log)')
    .addOption(new Option('--role <role>', 'what it may do').choices([...roles]).makeOptionMandatory())
    .option('--expires-in <duration>', 'the token stops working after this long, e.g. 8h (at most 8760h, a year); default: never')
    .addHelpText('after', '\nExamples:\n  faultline tokens create --name ci --role operator > ci-token && chmod 600 ci-token\n  faultline tokens create --name alice --role viewer --expires-in 8h')
    .action(async (_o, cmd: Command) =>
      withServer(cmd, async (client) => {
        const o = cmd.opts<{ name: string; role: string; expiresIn?: string }>()
        const { body } = await client.call<NewApiToken>('POST', '/v1/tokens', { name: o.name, role: o.role, ...(o.expiresIn !== undefined ? { expiresIn: o.expiresIn } : {}) })
        if (wantsJson(cmd)) return printJson(body)
        console.log(body.token)
        const until = body.expiresAt ? `, expires ${body.expiresAt}` : ''
        process.stderr.write(dim(`token ${body.id} (${body.name}, ${body.role}${until}) created; this is the only time its secret is shown\n`))
      }),
    )
  const ls = withServerOptions(new Command('ls'))
    .description('list API tokens (admin), never their secrets')
    .action(async (_o, cmd: Command) =>
      withServer(cmd, async (client) => {
        const { body } = await client.call<{ tokens: ApiTokenView[] }>('GET', '/v1/tokens')
        if (wantsJson(cmd)) return printJson(body)
        const rows = [['ID', 'NAME', 'ROLE', 'CREATED', 'BY', 'LAST USED', 'EXPIRES'].map(bold)]
        for (const t of body.tokens) {
          rows.push([t.id, t.name, t.role, relative(t.createdAt), t.createdBy, t.lastUsedAt ? relative(t.lastUsedAt) : dim('never'), t.expiresAt ? relative(t.expiresAt) : dim('never')])
        }
        console.log(table(rows))
      }),
    )
  const rm = withServerOptions(new Command('rm'))
    .description('revoke an API token (admin)')
    .argument('<id>', 'token id')
    .action(async (id: string, _o, cmd: Command) =>
      withServer(cmd, async (client) => {
        const { body } = await client.call<{ deleted: string }>('DELETE', `/v1/tokens/${encodeURIComponent(id)}`)
        if (wantsJson(cmd)) return printJson(body)
        console.log(`${green('✓')} token ${body.deleted} revoked`)
      }),
    )
  return new Command('tokens').description('API tokens of the server (admin)').addCommand(create).addCommand(ls).addCommand(rm)
}
