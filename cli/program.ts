import { Command } from 'commander'
import { FAULTLINE_VERSION } from '../common/version.js'
import { agentCommand } from './commands/agent.js'
import { completionCommand } from './commands/completion.js'
import { agentsCommand, auditCommand, eventsCommand, expCommand, haltCommand, tokensCommand } from './commands/fleet.js'
import { injectCommand } from './commands/inject.js'
import { capsCommand, lsCommand, recoverCommand, showCommand, targetsCommand } from './commands/manage.js'
import { serverCommand } from './commands/server.js'

/**
 * Variables no command reads any more, since each process got its own names (the agent's
 * --tls-ca means "require client certificates", the CLI's "trust this CA"): a warning instead of
 * a silent change of meaning.
 */
const retiredVariables: Record<string, string> = {
  FAULTLINE_CONFIG: 'FAULTLINE_AGENT_CONFIG (faultline agent) or FAULTLINE_SERVER_CONFIG (faultline server)',
  FAULTLINE_LISTEN: 'FAULTLINE_AGENT_LISTEN or FAULTLINE_SERVER_LISTEN',
  FAULTLINE_STATE_DIR: "FAULTLINE_AGENT_STATE_DIR (the agent, and the CLI finding the agent's socket and token) or FAULTLINE_SERVER_STATE_DIR",
  FAULTLINE_POLICY: 'FAULTLINE_AGENT_POLICY',
  FAULTLINE_MAX_DURATION: 'FAULTLINE_AGENT_MAX_DURATION',
  FAULTLINE_TOKEN_FILE: "FAULTLINE_AGENT_TOKEN_FILE (the agent's token) or FAULTLINE_SERVER_TOKEN_FILE (a token for the server)",
  FAULTLINE_TLS_CERT: 'FAULTLINE_AGENT_TLS_CERT or FAULTLINE_SERVER_TLS_CERT (a certificate to serve), FAULTLINE_AGENT_CLIENT_CERT (the CLI presenting one)',
  FAULTLINE_TLS_KEY: 'FAULTLINE_AGENT_TLS_KEY, FAULTLINE_SERVER_TLS_KEY or FAULTLINE_AGENT_CLIENT_KEY',
  FAULTLINE_TLS_CA: 'FAULTLINE_AGENT_CLIENT_CA or FAULTLINE_SERVER_CLIENT_CA (require client certificates), FAULTLINE_AGENT_CA (the CLI trusting the agent\'s CA)',
  FAULTLINE_ENROL_TOKEN_FILE: 'FAULTLINE_AGENT_ENROL_TOKEN_FILE or FAULTLINE_SERVER_ENROL_TOKEN_FILE',
  FAULTLINE_ADMIN_TOKEN_FILE: 'FAULTLINE_SERVER_ADMIN_TOKEN_FILE',
  FAULTLINE_LEASE: 'FAULTLINE_SERVER_LEASE',
  FAULTLINE_LABELS: 'FAULTLINE_AGENT_LABELS',
  FAULTLINE_NAME: 'FAULTLINE_AGENT_NAME',
  FAULTLINE_LOG_LEVEL: 'FAULTLINE_AGENT_LOG_LEVEL or FAULTLINE_SERVER_LOG_LEVEL',
  FAULTLINE_DOCKER_SOCKET: 'FAULTLINE_AGENT_DOCKER_SOCKET',
  FAULTLINE_CONTAINERD_SOCKET: 'FAULTLINE_AGENT_CONTAINERD_SOCKET',
  FAULTLINE_PODMAN_SOCKET: 'FAULTLINE_AGENT_PODMAN_SOCKET',
  FAULTLINE_CRIO_SOCKET: 'FAULTLINE_AGENT_CRIO_SOCKET',
  FAULTLINE_SERVER_CERT: 'FAULTLINE_SERVER_CLIENT_CERT',
  FAULTLINE_SERVER_KEY: 'FAULTLINE_SERVER_CLIENT_KEY',
}

function warnRetiredVariables(): void {
  for (const [name, instead] of Object.entries(retiredVariables)) {
    if (process.env[name] !== undefined) process.stderr.write(`faultline: warning: ${name} is not read any more; use ${instead}\n`)
  }
}

export function buildProgram(): Command {
  return new Command('faultline')
    .description('Chaos engineering for Linux hosts: precise faults, always taken back out.')
    .version(FAULTLINE_VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .hook('preAction', warnRetiredVariables)
    .addCommand(agentCommand())
    .addCommand(injectCommand())
    .addCommand(lsCommand())
    .addCommand(showCommand())
    .addCommand(recoverCommand())
    .addCommand(capsCommand())
    .addCommand(targetsCommand())
    .addCommand(serverCommand())
    .addCommand(expCommand())
    .addCommand(haltCommand())
    .addCommand(agentsCommand())
    .addCommand(tokensCommand())
    .addCommand(eventsCommand())
    .addCommand(auditCommand())
    .addCommand(completionCommand())
    .addHelpText(
      'after',
      `
Examples:
  faultline agent --state-dir ./.faultline                       run the agent (API on its Unix socket)
  faultline inject process-stop --target process:4242 --duration 30s --dry-run   what it would do
  faultline inject process-stop --target process:4242 --duration 30s
  faultline ls                                                    what is injected, newest first
  faultline recover --all                                         take everything back out now
  faultline caps                                                  which fault kinds this host supports
  faultline server --state-dir ./.faultline-server                run the control plane on 127.0.0.1:7071
  faultline exp apply -f db-latency.yaml && faultline exp run db-latency
  faultline halt --all                                            stop every fault on every agent of the fleet

Environment: each process has its own variables. faultline agent reads FAULTLINE_AGENT_* (its
flags), faultline server FAULTLINE_SERVER_*; commands that talk to an agent read FAULTLINE_AGENT
(its address), FAULTLINE_AGENT_STATE_DIR, FAULTLINE_AGENT_TOKEN_FILE, FAULTLINE_AGENT_CA; commands
that talk to a server read FAULTLINE_SERVER (its URL), FAULTLINE_SERVER_TOKEN_FILE, FAULTLINE_SERVER_CA.
FAULTLINE_DEBUG=1 adds stack traces to errors.`,
    )
}
