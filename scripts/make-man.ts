// Writes faultline(1), in roff with the man(7) macros, from the CLI's own command tree: the man
// page lists exactly the commands, options, defaults and variables of the build it ships with.
//
//   node --import tsx scripts/make-man.ts dist/man/faultline.1     (part of npm run build)
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Help, type Argument, type Command, type Option } from 'commander'
import { commandPaths, type CommandPath } from '../cli/commands/completion.js'
import { buildProgram } from '../cli/program.js'
import { DEFAULT_AGENT_SOCKET, DEFAULT_AGENT_STATE_DIR, DEFAULT_SERVER_STATE_DIR, adminTokenFile, agentTokenFile, enrolTokenFile } from '../common/locations.js'
import { FAULTLINE_VERSION } from '../common/version.js'

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..')

/**
 * Text for a roff text line: backslashes escaped, "-" as \- (a hyphen-minus, so a flag copied
 * from the rendered page is typed as it reads), characters beyond ASCII (±, ×, —) by code point,
 * as troff reads its input as Latin-1, and \& before a "." or "'" that would start a line (which
 * roff would take for a request).
 */
function roff(text: string): string {
  return text
    .replaceAll('\\', '\\e')
    .replaceAll('-', '\\-')
    .replace(/[^\x00-\x7f]/gu, (c) => `\\[u${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}]`)
    .split('\n')
    .map((line) => (/^[.']/.test(line) ? `\\&${line}` : line))
    .join('\n')
}

/** A macro argument in double quotes: a quote inside it is \(dq. */
const arg = (text: string) => `"${roff(text).replaceAll('"', '\\(dq')}"`
const bold = (text: string) => `\\fB${roff(text)}\\fR`
const italic = (text: string) => `\\fI${roff(text)}\\fR`

/**
 * A help text as roff: indented lines (examples, continuation lines) keep their layout in a
 * no-fill block; other lines are prose, refilled to the page width as paragraphs.
 */
function helpText(text: string): string[] {
  const out: string[] = []
  const lines = text.split('\n')
  const blank = (line: string) => line.trim() === ''
  const indented = (line: string | undefined) => line !== undefined && /^\s+\S/.test(line)
  let i = 0
  while (i < lines.length) {
    if (blank(lines[i]!)) {
      i++
      continue
    }
    const block: string[] = []
    if (!indented(lines[i])) {
      while (i < lines.length && !blank(lines[i]!) && !indented(lines[i])) block.push(lines[i++]!.trim())
      out.push('.PP', roff(block.join(' ')))
      continue
    }
    // An example block goes on across blank lines, as long as what follows them is indented too.
    while (indented(lines[i]) || (i < lines.length && blank(lines[i]!) && indented(lines.slice(i).find((l) => !blank(l))))) block.push(lines[i++]!)
    const margin = Math.min(...block.filter((l) => !blank(l)).map((l) => /^\s*/.exec(l)![0].length))
    out.push('.RS 4', '.nf', ...block.map((l) => (blank(l) ? '.sp' : roff(l.slice(margin).trimEnd()))), '.fi', '.RE')
  }
  return out
}

/** The text `addHelpText('after', ...)` prints after a command's --help: what outputHelp adds to helpInformation. */
function afterHelp(cmd: Command): string {
  let printed = ''
  cmd.configureOutput({ writeOut: (s) => (printed += s) })
  cmd.outputHelp()
  const builtIn = cmd.helpInformation()
  return printed.startsWith(builtIn) ? printed.slice(builtIn.length) : ''
}

function optionTerm(option: Option): string {
  const flags = [option.short, option.long].filter((f): f is string => f !== undefined).map(bold)
  const placeholder = /[<[]([^>\]]+)[>\]]/.exec(option.flags)?.[1]
  if (placeholder === undefined) return flags.join(', ')
  return `${flags.join(', ')} ${option.required ? italic(placeholder) : `[${italic(placeholder)}]`}`
}

/** The description, then what --help shows in parentheses: required, choices, default, variable. */
function optionDescription(option: Option): string {
  const facts: string[] = []
  if (option.mandatory) facts.push('required')
  if (option.argChoices) facts.push(`one of ${option.argChoices.map(bold).join(', ')}`)
  // as --help does: a boolean flag's default is no news
  if (option.defaultValue !== undefined && (option.required || option.optional)) facts.push(`default ${bold(String(option.defaultValue))}`)
  if (option.envVar) facts.push(`environment ${bold(option.envVar)}`)
  return facts.length > 0 ? `${roff(option.description)} (${facts.join('; ')})` : roff(option.description)
}

function argumentDescription(argument: Argument): string {
  const facts = [...(argument.required ? [] : ['optional']), ...(argument.argChoices ? [`one of ${argument.argChoices.map(bold).join(', ')}`] : [])]
  return facts.length > 0 ? `${roff(argument.description)} (${facts.join('; ')})` : roff(argument.description)
}

function synopsis({ words, command }: CommandPath): string {
  const parts = [bold(words.join(' '))]
  if (command.commands.length > 0) parts.push(italic('command'))
  if (command.options.length > 0) parts.push(`[${italic('options')}]`)
  for (const a of command.registeredArguments) parts.push(a.required ? italic(a.name()) : `[${italic(a.name())}]`)
  return parts.join(' ')
}

/** One .SS per command: synopsis, description, arguments, options (without --help, said once), the text after its --help. */
function commandSection(path: CommandPath): string[] {
  const { words, command } = path
  const out = [`.SS ${arg(words.join(' '))}`, synopsis(path), '.PP', roff(command.description())]
  if (command.registeredArguments.length > 0) {
    out.push('.PP', 'Arguments:')
    for (const a of command.registeredArguments) out.push('.TP', italic(a.name()), argumentDescription(a))
  }
  const options = command.options.filter((o) => !o.hidden)
  if (options.length > 0) {
    out.push('.PP', 'Options:')
    for (const o of options) out.push('.TP', optionTerm(o), optionDescription(o))
  }
  out.push(...helpText(afterHelp(command)))
  return out
}

/**
 * Every variable an option reads, with the flags it stands for. A variable shared by many commands
 * (FAULTLINE_AGENT_STATE_DIR) is listed once per meaning, naming the top-level commands that read it.
 */
function environment(paths: CommandPath[]): string[] {
  const uses = new Map<string, Map<string, { flag: string; description: string; commands: Set<string> }>>()
  for (const { words, command } of paths) {
    for (const o of command.options) {
      if (!o.envVar || o.hidden) continue
      const meanings = uses.get(o.envVar) ?? new Map()
      uses.set(o.envVar, meanings)
      const key = `${o.long}\n${o.description}`
      const meaning = meanings.get(key) ?? { flag: o.long ?? o.flags, description: o.description, commands: new Set<string>() }
      meanings.set(key, meaning)
      meaning.commands.add(words.slice(0, 2).join(' '))
    }
  }
  const out: string[] = []
  for (const [name, meanings] of uses) {
    out.push('.TP', bold(name))
    const lines = [...meanings.values()].map((m) => `${bold(m.flag)} of ${[...m.commands].map(bold).join(', ')}: ${roff(m.description)}`)
    out.push(lines.join('\n.br\n'))
  }
  out.push(
    '.TP',
    bold('FAULTLINE_DEBUG'),
    `${bold('1')} adds the stack trace to an error message.`,
    '.TP',
    bold('NO_COLOR'),
    'When set, no colours, even on a terminal (output that is not a terminal never has them).',
  )
  return out
}

function files(): string[] {
  const entry = (path: string, text: string) => ['.TP', bold(path), text]
  return [
    ...entry(DEFAULT_AGENT_SOCKET, `The agent's API socket when it runs as root (mode 0660 root:faultline, or 0600); otherwise ${italic('state-dir')}/agent.sock.`),
    ...entry(DEFAULT_AGENT_STATE_DIR, `The agent's state directory (${bold('--state-dir')}):`),
    '.RS',
    ...entry('journal.sqlite', 'the journal: every injection is written here before it is applied, and recovered from here at the next start'),
    ...entry(basename(agentTokenFile(DEFAULT_AGENT_STATE_DIR)), `the bearer token callers send over TCP, made at the first start unless ${bold('--token-file')} names one`),
    ...entry('agent.lock', 'held by the running agent: one agent per state directory'),
    ...entry('backups/', 'what the file faults changed or moved aside, until they are recovered'),
    '.RE',
    ...entry(DEFAULT_SERVER_STATE_DIR, `The server's state directory (${bold('faultline server --state-dir')}):`),
    '.RS',
    ...entry('server.sqlite', 'experiments, runs, agents, tokens, events and the audit log'),
    ...entry(basename(adminTokenFile(DEFAULT_SERVER_STATE_DIR)), `the admin token, made at the first start unless ${bold('--admin-token-file')} names one`),
    ...entry(basename(enrolTokenFile(DEFAULT_SERVER_STATE_DIR)), `the token agents enrol with, made at the first start unless ${bold('--enrol-token-file')} names one`),
    '.RE',
    ...entry('/etc/faultline/agent.yaml', `The agent's settings (${bold('--config')}; the keys are the long flag names), as the systemd unit starts it.`),
    ...entry('/etc/faultline/policy.yaml', `The host policy (${bold('--policy')}): the fault kinds, targets, paths, limits and networks the host's owner allows, whoever asks.`),
  ]
}

/** The docs shipped with the package, each with its title (its first "# " line). */
function seeAlso(): string[] {
  const out = ['The guides in the package\'s (and the repository\'s) docs folder:']
  for (const name of readdirSync(join(repoRoot, 'docs')).filter((n) => n.endsWith('.md')).sort()) {
    const title = /^# (.+)$/m.exec(readFileSync(join(repoRoot, 'docs', name), 'utf8'))?.[1] ?? name
    out.push('.TP', bold(`docs/${name}`), roff(title))
  }
  return out
}

/** The date of the build, or SOURCE_DATE_EPOCH's (reproducible builds). */
function buildDate(): string {
  const epoch = process.env.SOURCE_DATE_EPOCH
  return (epoch ? new Date(Number(epoch) * 1000) : new Date()).toISOString().slice(0, 10)
}

function renderManPage(root: Command): string {
  const [top, ...commands] = commandPaths(root)
  const rootOptions = new Help().visibleOptions(root)
  const page = [
    `.TH FAULTLINE 1 ${arg(buildDate())} ${arg(`faultline ${FAULTLINE_VERSION}`)} "Faultline Manual"`,
    // no hyphenation, ragged right: flags and variable names stay whole and copyable
    '.nh',
    '.ad l',
    '.SH NAME',
    `faultline \\- ${roff(root.description())}`,
    '.SH SYNOPSIS',
    `${bold('faultline')} ${italic('command')} [${italic('subcommand')}] [${italic('options')}] [${italic('arguments')}]`,
    '.br',
    `${bold('faultline')} ${italic('command')} ${bold('--help')}`,
    '.SH DESCRIPTION',
    `One program for each part of Faultline: ${bold('faultline agent')} runs the host agent, which applies faults and always takes them back out (at their deadline, at Ctrl-C, at its next start after a crash); ${bold('faultline server')} runs the control plane that runs experiments across a fleet; the other commands talk to one of them.`,
    ...helpText(afterHelp(top!.command)),
    '.SH OPTIONS',
    ...rootOptions.flatMap((o) => ['.TP', optionTerm(o), roff(o.description)]),
    '.PP',
    `Every command also takes ${bold('-h')}, ${bold('--help')}: its options and examples.`,
    '.SH COMMANDS',
    ...commands.flatMap(commandSection),
    '.SH ENVIRONMENT',
    'Flags win over the environment, the environment over a configuration file, and that over the defaults.',
    ...environment(commands),
    '.SH FILES',
    ...files(),
    '.SH "EXIT STATUS"',
    '.TP',
    bold('0'),
    'Done.',
    '.TP',
    bold('1'),
    `A refusal or a failure: one line on standard error, ending with its code in brackets (${bold('[FAULTLINE_ERR_...]')}, listed in docs/errors.md). Usage errors found by the argument parser (an unknown option, a missing argument, a value not among the choices) exit with 1 too, after a line that starts with ${bold('error:')}.`,
    '.TP',
    bold('2'),
    'A wrong flag or setting: a configuration file or variable that does not parse, or flags that do not go together.',
    '.TP',
    bold('130'),
    `Interrupted (Ctrl-C) while waiting. At the first Ctrl-C ${bold('faultline inject')} recovers its fault before it exits; at a second one it exits at once, and the agent recovers the fault at its deadline.`,
    '.SH "SEE ALSO"',
    ...seeAlso(),
  ]
  return `${page.join('\n')}\n`
}

const out = process.argv[2]
if (!out) {
  process.stderr.write('usage: node --import tsx scripts/make-man.ts OUT_FILE\n')
  process.exit(2)
}
mkdirSync(dirname(out), { recursive: true })
writeFileSync(out, renderManPage(buildProgram()))
