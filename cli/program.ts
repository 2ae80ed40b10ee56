import { Command } from 'commander'
import { FAULTLINE_VERSION } from '../common/version.js'
import { agentCommand } from './commands/agent.js'
import { agentsCommand, expCommand, haltCommand, tokensCommand } from './commands/fleet.js'
import { injectCommand } from './commands/inject.js'
import { capsCommand, lsCommand, recoverCommand, showCommand, targetsCommand } from './commands/manage.js'
import { serverCommand } from './commands/server.js'

export function buildProgram(): Command {
  return new Command('faultline')
    .description('Chaos engineering for Linux hosts: precise faults, always taken back out.')
    .version(FAULTLINE_VERSION)
    .showHelpAfterError('(run with --help for usage)')
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
    .addHelpText(
      'after',
      `
Examples:
  faultline agent --state-dir ./.faultline                       run the agent on 127.0.0.1:7070
  faultline inject process-stop --target process:name=sleep --duration 30s
  faultline ls                                                    what is injected, newest first
  faultline recover --all                                         take everything back out now
  faultline caps                                                  which fault kinds this host supports
  faultline server --state-dir ./.faultline-server                run the control plane on 127.0.0.1:7071
  faultline exp apply -f db-latency.yaml && faultline exp run db-latency
  faultline halt --all                                            stop every fault on every agent of the fleet`,
    )
}
