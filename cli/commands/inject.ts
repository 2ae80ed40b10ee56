import { Command, InvalidArgumentError, Option } from 'commander'
import { formatDuration } from '../../protocol/duration.js'
import { faultSpecs, type FaultSpecDefinition } from '../../protocol/faults/index.js'
import { createInterface } from 'node:readline/promises'
import { FaultlineError, isFaultlineError } from '../../protocol/errors.js'
import { explainRequest, requestError, type Issue } from '../../protocol/explain.js'
import { isOpenStatus, type CreateInjectionBody, type Injection } from '../../protocol/injection.js'
import { describeTarget, parseTargetShorthand } from '../../protocol/target.js'
import type { AgentClient } from '../client.js'
import { clock, dim, green, injectionDetails, red, yellow } from '../format.js'
import { clientFrom, printJson, wantsJson, withClientOptions } from './client-options.js'

/** The most targets one request may name (the schema's maximum of maxTargets). */
const MAX_TARGETS = 10_000

const targetHelp =
  'host | process:<pid> | process:name=<comm> | process:cmdline=<regex> | netns:<name> | container:<id prefix> | container:name=<name> | container:labels=<k=v,...> | container:image=<ref>'

interface JsonSchemaLike {
  type?: string
  enum?: unknown[]
  description?: string
  items?: JsonSchemaLike
  minimum?: number
  maximum?: number
}

const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)

/** Flags for a kind's parameters, derived from its spec schema: no kind is named in the CLI. */
function kindOptions(kind: FaultSpecDefinition): Option[] {
  const schema = kind.specSchema as unknown as { properties: Record<string, JsonSchemaLike>; required?: string[] }
  const options: Option[] = []
  for (const [name, prop] of Object.entries(schema.properties)) {
    if (name === 'kind') continue
    const required = schema.required?.includes(name) ?? false
    const description = prop.description ?? name
    if (prop.type === 'boolean') {
      // both forms, so "not given" stays distinct from an explicit false
      options.push(new Option(`--${kebab(name)}`, description), new Option(`--no-${kebab(name)}`, `set ${kebab(name)} to false`))
      continue
    }
    const placeholder = prop.type === 'array' ? 'values' : prop.type === 'object' ? 'name=value,...' : 'value'
    const opt = new Option(`--${kebab(name)} <${placeholder}>`, description)
    if (prop.enum) opt.choices(prop.enum.map(String))
    if (prop.type === 'integer' || prop.type === 'number') {
      opt.argParser((v) => {
        const n = Number(v)
        if (!Number.isFinite(n) || (prop.type === 'integer' && !Number.isInteger(n))) throw new InvalidArgumentError(`expected a ${prop.type}`)
        return n
      })
    }
    if (prop.type === 'object') {
      // name=value pairs, e.g. --records db.internal=10.0.0.99,api.internal=10.0.0.98
      opt.argParser((v) => {
        const out: Record<string, string> = {}
        for (const pair of v.split(',').map((s) => s.trim()).filter(Boolean)) {
          const eq = pair.indexOf('=')
          if (eq <= 0) throw new InvalidArgumentError(`"${pair}" is not name=value`)
          out[pair.slice(0, eq)] = pair.slice(eq + 1)
        }
        return out
      })
    }
    if (prop.type === 'array') {
      const numeric = prop.items?.type === 'integer' || prop.items?.type === 'number'
      opt.argParser((v) =>
        v
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
          .map((s) => {
            if (!numeric) return s
            const n = Number(s)
            if (!Number.isFinite(n)) throw new InvalidArgumentError(`"${s}" is not a number`)
            return n
          }),
      )
    }
    if (required) opt.makeOptionMandatory()
    options.push(opt)
  }
  return options
}

/** Target selectors for examples, in order of preference, per target type. */
const exampleTargets: Record<string, string[]> = {
  process: ['process:name=nginx', 'process:4242', "'process:cmdline=^postgres: checkpointer'"],
  container: ['container:labels=app=db', 'container:name=api'],
  netns: ['netns:blue'],
  host: ['host'],
}

/**
 * Examples that work as written: only target types the kind accepts, and the parameters of the
 * spec's own example (protocol/faults/<kind>.ts), which a test posts to the agent's schema.
 */
function kindExamples(kind: FaultSpecDefinition): string {
  const required = Object.entries(kind.example as Record<string, unknown>)
    .map(([name, example]) => {
      const text = Array.isArray(example) ? example.join(',') : typeof example === 'object' && example !== null ? Object.entries(example).map(([k, v]) => `${k}=${String(v)}`).join(',') : String(example)
      return ` --${kebab(name)} ${/^[\w.,:=%/+-]+$/.test(text) ? text : `'${text}'`}`
    })
    .join('')
  const targets = kind.targets.flatMap((type) => exampleTargets[type] ?? []).slice(0, 3)
  const durations = ['30s', '5m --detach', '1m --dry-run']
  const lines = targets.map((target, i) => `  faultline inject ${kind.kind} --target ${target}${required} --duration ${durations[i]}`)
  return `
Examples:
${lines.join('\n')}

Without --detach the command waits, shows the time left, and Ctrl-C recovers the fault at once.`
}

function kindCommand(kind: FaultSpecDefinition): Command {
  const cmd = withClientOptions(new Command(kind.kind))
    .description(kind.summary)
    .requiredOption('-t, --target <target>', targetHelp)
    .requiredOption('-d, --duration <duration>', 'how long the fault lasts: 30s, 5m, 1h30m')
    .option('--id <id>', 'client id: posting the same id and spec again returns the same injection')
    .option('--dry-run', 'print the plan; change nothing')
    .option('--detach', 'return once the fault is active; the agent recovers it at the deadline')
    .addOption(
      new Option('--max-targets <n>', 'how many targets the selector may match (default 1: more is refused with the list of what matched)').argParser((v) => {
        if (!/^[1-9][0-9]{0,3}$|^10000$/.test(v)) throw new InvalidArgumentError('expected a whole number from 1 to 10000')
        return Number(v)
      }),
    )
    .addOption(new Option('--all', 'fault every target the selector matches (up to 10000)').conflicts('maxTargets'))
  for (const opt of kindOptions(kind)) cmd.addOption(opt)
  cmd.addHelpText('after', kindExamples(kind))
  cmd.action(async (_opts, command: Command) => injectAction(kind, command))
  return cmd
}

export function injectCommand(): Command {
  const inject = new Command('inject')
    .description('inject a fault through the agent and wait until it is recovered')
    .addHelpText('after', `\nRun "faultline inject <kind> --help" for a kind's parameters and examples; docs/faults.md has the details.`)
  for (const kind of faultSpecs) inject.addCommand(kindCommand(kind))
  return inject
}

/** The POST /v1/injections body a kind's command line asks for. */
export function requestFromOptions(kind: FaultSpecDefinition, opts: Record<string, unknown>): CreateInjectionBody {
  const schema = kind.specSchema as unknown as { properties: Record<string, unknown> }
  const fault: Record<string, unknown> = { kind: kind.kind }
  for (const name of Object.keys(schema.properties)) {
    if (name !== 'kind' && opts[name] !== undefined) fault[name] = opts[name]
  }
  return {
    fault: fault as CreateInjectionBody['fault'],
    target: parseTargetShorthand(String(opts.target)),
    duration: String(opts.duration),
    ...(opts.id ? { id: String(opts.id) } : {}),
    ...(opts.dryRun ? { dryRun: true } : {}),
    ...(opts.maxTargets !== undefined ? { maxTargets: Number(opts.maxTargets) } : opts.all ? { maxTargets: MAX_TARGETS } : {}),
  }
}

/**
 * A request's issues in the words of the command line: "--load: load 150 is above the maximum
 * 100 (allowed: ...)". Checked before anything is sent, so a typo needs no agent to be explained.
 */
export function flagIssues(issues: Issue[]): string {
  const flag = (field: string) =>
    field === 'duration' ? '--duration' : field.startsWith('target') ? '--target' : field.startsWith('fault.') ? `--${kebab(field.slice('fault.'.length).replace(/[.[].*$/, ''))}` : field
  return issues.map((i) => `${flag(i.field)}: ${i.problem}${i.allowed ? ` (allowed: ${i.allowed})` : ''}`).join('\n  ')
}

/** The agent's answer to a body with issues, said with flags instead of JSON fields. */
function inFlagWords(err: unknown): unknown {
  const issues = (err as { details?: { issues?: Issue[] } }).details?.issues
  if (!isFaultlineError(err) || !Array.isArray(issues) || issues.length === 0) return err
  return new FaultlineError(err.code, flagIssues(issues), err.details)
}

/**
 * On a terminal, a selector that matched more than it may is shown and the user asked whether
 * to fault them all; elsewhere (scripts, --json) the refusal stands.
 */
async function confirmAll(err: unknown, json: boolean): Promise<number | undefined> {
  if (!isFaultlineError(err) || err.code !== 'FAULTLINE_ERR_TOO_MANY_TARGETS' || json || !process.stdin.isTTY || !process.stdout.isTTY) return undefined
  const details = err.details as { matched?: number; targets?: string[] } | undefined
  if (!details?.matched || !details.targets) return undefined
  console.log(`${yellow('!')} the selector matched ${details.matched} targets:`)
  for (const t of details.targets) console.log(`    ${t}`)
  const rl = createInterface({ input: process.stdin, output: process.stdout })
  try {
    const answer = await rl.question(`Fault all ${details.matched} of them? [y/N] `)
    return /^y(es)?$/i.test(answer.trim()) ? details.matched : undefined
  } finally {
    rl.close()
  }
}

async function injectAction(kind: FaultSpecDefinition, cmd: Command): Promise<void> {
  const opts = cmd.opts<Record<string, unknown>>()
  const json = wantsJson(cmd)
  const body: CreateInjectionBody = requestFromOptions(kind, opts)
  // Text parameters are taken as they are; a shell's 'x\n' is a backslash and an n, not a newline.
  for (const [name, value] of Object.entries(body.fault)) {
    if (typeof value === 'string' && /\\[nt]/.test(value) && name === 'text') {
      process.stderr.write(`faultline: note: --${kebab(name)} contains a backslash escape ("\\n"), which is written as it is (two characters); for a newline use $'...\\n' in bash, or --base64\n`)
    }
  }
  const issues = explainRequest(body, 'faultline')
  if (issues.length > 0) throw new FaultlineError(requestError(issues).code, flagIssues(issues), { issues })
  const client = clientFrom(cmd)
  // Ctrl-C is watched from before the request, so an interrupt that lands while the agent is
  // still applying recovers the fault as soon as it exists.
  const sigint = watchSigint()
  try {
    const post = () => client.call<Injection | { injections: Injection[] }>('POST', '/v1/injections', body)
    let reply: Injection | { injections: Injection[] }
    try {
      reply = (await post()).body
    } catch (err) {
      const all = await confirmAll(err, json)
      if (all === undefined) throw inFlagWords(err)
      body.maxTargets = all
      reply = (await post().catch((again: unknown) => Promise.reject(inFlagWords(again)))).body
    }
    const injections = 'injections' in reply ? reply.injections : [reply]
    if (opts.dryRun) {
      if (json) printJson(injections)
      else for (const i of injections) console.log(injectionDetails(i))
      return
    }
    // Only what can be taken back out is waited for: a delivered signal is done.
    const open = injections.filter((i) => isOpenStatus(i.status) && i.recoverable)
    const waiting = open.length > 0 && !(opts.detach && !sigint.interrupted)
    // --json prints one document: the injections as they end, or as they started when not waiting.
    if (!json) for (const i of injections) console.log(startLine(i))
    if (!waiting) {
      if (json) printJson(injections)
      return
    }
    const final = await waitForRecovery(client, open, json, sigint)
    if (json) printJson([...final, ...injections.filter((i) => !open.includes(i))])
  } finally {
    sigint.dispose()
    await client.close()
  }
}

interface SigintWatch {
  readonly interrupted: boolean
  /** Resolves on the first Ctrl-C, or after `ms`. */
  sleep(ms: number): Promise<void>
  dispose(): void
}

function watchSigint(): SigintWatch {
  let interrupted = false
  let wake: () => void = () => undefined
  const onSigint = () => {
    if (interrupted) {
      process.stderr.write('\ninterrupted again: exiting; the agent still recovers the fault at its deadline\n')
      process.exit(130)
    }
    interrupted = true
    wake()
  }
  process.on('SIGINT', onSigint)
  return {
    get interrupted() {
      return interrupted
    },
    sleep: (ms) =>
      new Promise<void>((resolve) => {
        if (interrupted) return resolve()
        wake = resolve
        setTimeout(resolve, ms)
      }),
    dispose: () => process.off('SIGINT', onSigint),
  }
}

function startLine(i: Injection): string {
  if (i.status === 'failed') return `${red('✗')} ${i.kind} on ${describeTarget(i.resolved)}: ${i.error?.message ?? 'failed'}`
  if (!i.recoverable) return `${green('✓')} ${i.kind} on ${describeTarget(i.resolved)} done: ${i.plan.steps.filter((s) => s.phase === 'apply').map((s) => s.detail).join('; ')}; it cannot be undone  ${dim(`id ${i.id}, experiment window until ${clock(i.expiresAt)} (${i.duration})`)}`
  return `${green('✓')} ${i.kind} on ${describeTarget(i.resolved)} is ${yellow(i.status)}  ${dim(`id ${i.id}, ends ${clock(i.expiresAt)} (${i.duration})`)}`
}

function endLine(i: Injection, how: string): string {
  const notes = i.notes.length > 0 ? dim(`  (${i.notes[i.notes.length - 1]})`) : ''
  const mark = i.status === 'recovered' ? green('✓') : red('✗')
  return `${mark} ${i.kind} on ${describeTarget(i.resolved)} ${i.status} ${how}${notes}`
}

/**
 * Shows the time left, and recovers at once on Ctrl-C. The deadline itself is enforced by the
 * agent: this only watches, so a lost terminal never leaves a fault behind.
 */
async function waitForRecovery(client: AgentClient, open: Injection[], json: boolean, sigint: SigintWatch): Promise<Injection[]> {
  const tty = process.stdout.isTTY && !json
  const deadline = Math.max(...open.map((i) => new Date(i.expiresAt).getTime()))
  if (!tty && !json) console.log(dim(`waiting until ${clock(new Date(deadline).toISOString())}; Ctrl-C recovers now`))
  while (!sigint.interrupted && Date.now() < deadline) {
    if (tty) process.stdout.write(`\r\x1b[K  recovers in ${formatDuration(Math.ceil((deadline - Date.now()) / 1000) * 1000)} — Ctrl-C recovers now`)
    await sigint.sleep(Math.min(1000, Math.max(10, deadline - Date.now())))
  }
  if (tty) process.stdout.write('\r\x1b[K')
  if (sigint.interrupted) {
    const recovered = await Promise.all(open.map((i) => client.call<Injection>('DELETE', `/v1/injections/${encodeURIComponent(i.id)}`).then((r) => r.body)))
    if (!json) for (const i of recovered) console.log(endLine(i, 'at Ctrl-C'))
    process.exitCode = 130
    return recovered
  }
  // The agent recovers at the deadline; follow until every injection has ended.
  const settleBy = Date.now() + 60_000
  for (;;) {
    const current = await Promise.all(open.map((i) => client.call<Injection>('GET', `/v1/injections/${encodeURIComponent(i.id)}`).then((r) => r.body)))
    if (current.every((i) => !isOpenStatus(i.status)) || Date.now() > settleBy) {
      if (!json) for (const i of current) console.log(endLine(i, 'at its deadline'))
      if (current.some((i) => i.status !== 'recovered')) process.exitCode = 1
      return current
    }
    await new Promise((r) => setTimeout(r, 200))
  }
}
