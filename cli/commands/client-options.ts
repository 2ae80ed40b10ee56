import { statSync } from 'node:fs'
import { isReadable as readable } from '../../common/config.js'
import { join } from 'node:path'
import { Command, Option } from 'commander'
import { DEFAULT_AGENT_SOCKET, DEFAULT_AGENT_STATE_DIR, agentTokenFile } from '../../common/locations.js'
import { FaultlineError } from '../../protocol/errors.js'
import { AgentClient } from '../client.js'

/** Options every command that talks to an agent accepts. */
export function withClientOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--agent <address>', `the agent: unix:PATH, or http(s)://HOST:PORT (default: ${DEFAULT_AGENT_SOCKET}, else <state-dir>/agent.sock)`).env('FAULTLINE_AGENT'),
    )
    .addOption(new Option('--state-dir <dir>', "the agent's state dir: its socket when it does not run as root, and the token it made for TCP").env('FAULTLINE_AGENT_STATE_DIR').default(DEFAULT_AGENT_STATE_DIR))
    .addOption(new Option('--token-file <file>', "file with the agent's bearer token, over TCP (default <state-dir>/agent.token, when readable)").env('FAULTLINE_AGENT_TOKEN_FILE'))
    .addOption(new Option('--tls-ca <file>', 'CA that signed the agent\'s certificate (https)').env('FAULTLINE_AGENT_CA'))
    .addOption(new Option('--tls-cert <file>', 'client certificate, when the agent requires one').env('FAULTLINE_AGENT_CLIENT_CERT'))
    .addOption(new Option('--tls-key <file>', 'key of --tls-cert').env('FAULTLINE_AGENT_CLIENT_KEY'))
    .option('--json', 'print JSON instead of text')
}

const isSocket = (path: string) => {
  try {
    return statSync(path).isSocket()
  } catch {
    return false
  }
}

/**
 * Where the agent is: --agent, else the socket an agent running as root makes
 * (/run/faultline/agent.sock), else the one in the state dir (an agent not running as root).
 */
export function agentAddress(o: { agent?: string; stateDir: string }): string {
  if (o.agent) return o.agent
  const candidates = [DEFAULT_AGENT_SOCKET, join(o.stateDir, 'agent.sock')]
  const found = candidates.find(isSocket)
  if (found) return `unix:${found}`
  throw new FaultlineError(
    'FAULTLINE_ERR_AGENT_UNREACHABLE',
    `no agent socket at ${candidates.join(' or ')}: start the agent ("faultline agent", as root), or point --agent (or FAULTLINE_AGENT) at it: unix:PATH or http://HOST:PORT`,
  )
}

export function clientFrom(cmd: Command): AgentClient {
  const o = cmd.opts<{ agent?: string; stateDir: string; tokenFile?: string; tlsCa?: string; tlsCert?: string; tlsKey?: string }>()
  const url = agentAddress(o)
  // Over TCP the agent wants its token: the one named, or the one it made in its state dir.
  const generated = agentTokenFile(o.stateDir)
  const tokenFile = url.startsWith('unix:') ? undefined : (o.tokenFile ?? (readable(generated) ? generated : undefined))
  return new AgentClient({
    url,
    ...(tokenFile ? { tokenFile } : {}),
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
