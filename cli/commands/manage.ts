import { Command, Option } from 'commander'
import type { Capabilities } from '../../protocol/capabilities.js'
import { injectionStatuses, type Injection } from '../../protocol/injection.js'
import { describeTarget, targetTypes, type ResolvedTarget } from '../../protocol/target.js'
import { capabilitiesReport, dim, green, injectionDetails, injectionTable, red, table, bold } from '../format.js'
import { clientFrom, printJson, wantsJson, withClientOptions } from './client-options.js'

async function withClient<T>(cmd: Command, work: (client: ReturnType<typeof clientFrom>) => Promise<T>): Promise<T> {
  const client = clientFrom(cmd)
  try {
    return await work(client)
  } finally {
    await client.close()
  }
}

export function lsCommand(): Command {
  return withClientOptions(new Command('ls'))
    .description('list injections on the agent, newest first')
    .addOption(new Option('--status <status>', 'only injections in this status').choices([...injectionStatuses]))
    .option('--limit <n>', 'at most this many', '50')
    .addHelpText('after', '\nExamples:\n  faultline ls\n  faultline ls --status active\n  faultline ls --json | jq \'.injections[].id\'')
    .action(async (_o, cmd: Command) =>
      withClient(cmd, async (client) => {
        const o = cmd.opts<{ status?: string; limit: string }>()
        const query = new URLSearchParams({ limit: o.limit, ...(o.status ? { status: o.status } : {}) })
        const { body } = await client.call<{ injections: Injection[] }>('GET', `/v1/injections?${query}`)
        if (wantsJson(cmd)) printJson(body)
        else console.log(injectionTable(body.injections))
      }),
    )
}

export function showCommand(): Command {
  return withClientOptions(new Command('show'))
    .description('show one injection: target, plan, status, notes')
    .argument('<id>', 'injection id')
    .addHelpText('after', '\nExample:\n  faultline show 7h3k2m9q0a')
    .action(async (id: string, _o, cmd: Command) =>
      withClient(cmd, async (client) => {
        const { body } = await client.call<Injection>('GET', `/v1/injections/${encodeURIComponent(id)}`)
        if (wantsJson(cmd)) printJson(body)
        else console.log(injectionDetails(body))
      }),
    )
}

export function recoverCommand(): Command {
  return withClientOptions(new Command('recover'))
    .description('take an injection back out now (or every one with --all)')
    .argument('[id]', 'injection id')
    .option('--all', 'recover every injection on the agent (halt)')
    .addHelpText('after', '\nExamples:\n  faultline recover 7h3k2m9q0a\n  faultline recover --all')
    .action(async (id: string | undefined, _o, cmd: Command) =>
      withClient(cmd, async (client) => {
        const all = Boolean(cmd.opts<{ all?: boolean }>().all)
        if (all === Boolean(id)) cmd.error('give an injection id, or --all (not both)', { exitCode: 2 })
        if (all) {
          const { body } = await client.call<{ injections: Injection[]; failed: { id: string; error: string }[] }>('DELETE', '/v1/injections')
          if (wantsJson(cmd)) return printJson(body)
          if (body.injections.length === 0) console.log(dim('nothing to recover'))
          for (const i of body.injections) {
            const fail = body.failed.find((f) => f.id === i.id)
            console.log(fail ? `${red('✗')} ${i.id} ${i.kind} on ${describeTarget(i.resolved)}: ${fail.error}` : `${green('✓')} ${i.id} ${i.kind} on ${describeTarget(i.resolved)} ${i.status}`)
          }
          if (body.failed.length > 0) process.exitCode = 1
          return
        }
        const { body } = await client.call<Injection>('DELETE', `/v1/injections/${encodeURIComponent(id!)}`)
        if (wantsJson(cmd)) return printJson(body)
        const note = body.notes.length > 0 ? dim(`  (${body.notes[body.notes.length - 1]})`) : ''
        console.log(`${green('✓')} ${body.id} ${body.kind} on ${describeTarget(body.resolved)} ${body.status}${note}`)
      }),
    )
}

export function capsCommand(): Command {
  return withClientOptions(new Command('caps'))
    .description('what this host can do: fault kinds available, and why not when they are not')
    .option('--refresh', 'probe again instead of the cached result')
    .addHelpText('after', '\nExamples:\n  faultline caps\n  faultline caps --json | jq .kinds')
    .action(async (_o, cmd: Command) =>
      withClient(cmd, async (client) => {
        const refresh = cmd.opts<{ refresh?: boolean }>().refresh ? '?refresh=true' : ''
        const { body } = await client.call<Capabilities>('GET', `/v1/capabilities${refresh}`)
        if (wantsJson(cmd)) printJson(body)
        else console.log(capabilitiesReport(body))
      }),
    )
}

export function targetsCommand(): Command {
  return withClientOptions(new Command('targets'))
    .description('list what the agent can target')
    .addOption(new Option('--type <type>', 'only this target type').choices([...targetTypes]))
    .addHelpText('after', '\nExamples:\n  faultline targets --type process\n  faultline targets --json')
    .action(async (_o, cmd: Command) =>
      withClient(cmd, async (client) => {
        const type = cmd.opts<{ type?: string }>().type
        const { body } = await client.call<{ targets: ResolvedTarget[] }>('GET', `/v1/targets${type ? `?type=${type}` : ''}`)
        if (wantsJson(cmd)) return printJson(body)
        const rows = [['TYPE', 'ID', 'NAME', 'DETAIL'].map(bold)]
        for (const t of body.targets) {
          if (t.type === 'host') rows.push(['host', '-', t.hostname, `netns inode ${t.netnsInode}`])
          else if (t.type === 'netns') rows.push(['netns', String(t.netnsInode), t.name, t.path])
          else if (t.type === 'container') rows.push(['container', t.id.slice(0, 12), t.name ?? '-', `${t.runtime}  ${t.image ?? ''}  ${Object.entries(t.labels).map(([k, v]) => `${k}=${v}`).join(',').slice(0, 60)}`])
          else rows.push(['process', String(t.pid), t.comm, `${t.state}  ${t.cmdline.slice(0, 80)}`])
        }
        console.log(table(rows))
      }),
    )
}
