import { Command, Option } from 'commander'
import { AgentClient } from '../client.js'

/** Options every command that talks to an agent accepts. */
export function withClientOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--agent <url>', 'agent API address').env('FAULTLINE_AGENT').default('http://127.0.0.1:7070'))
    .addOption(new Option('--token-file <file>', 'file with the agent\'s bearer token').env('FAULTLINE_TOKEN_FILE'))
    .addOption(new Option('--tls-ca <file>', 'CA that signed the agent\'s certificate (https)').env('FAULTLINE_TLS_CA'))
    .addOption(new Option('--tls-cert <file>', 'client certificate, when the agent requires one').env('FAULTLINE_TLS_CERT'))
    .addOption(new Option('--tls-key <file>', 'key of --tls-cert').env('FAULTLINE_TLS_KEY'))
    .option('--json', 'print JSON instead of text')
}

export function clientFrom(cmd: Command): AgentClient {
  const o = cmd.opts<{ agent: string; tokenFile?: string; tlsCa?: string; tlsCert?: string; tlsKey?: string }>()
  return new AgentClient({
    url: o.agent,
    ...(o.tokenFile ? { tokenFile: o.tokenFile } : {}),
    ...(o.tlsCa ? { tlsCa: o.tlsCa } : {}),
    ...(o.tlsCert ? { tlsCert: o.tlsCert } : {}),
    ...(o.tlsKey ? { tlsKey: o.tlsKey } : {}),
  })
}

export function wantsJson(cmd: Command): boolean {
  return Boolean(cmd.opts<{ json?: boolean }>().json)
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value) + '\n')
}
