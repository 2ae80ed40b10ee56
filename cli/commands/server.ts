import { Command, Option } from 'commander'
import { mergeConfigFile } from '../../common/config.js'
import type { ServerConfig } from '../../server/main.js'

const examples = `
Examples:
  # on this host, state in a local folder; the admin and enrolment tokens are made there at the
  # first start (admin.token, enrol.token, readable by their owner only) and their paths printed
  faultline server --listen 127.0.0.1:7071 --state-dir ./.faultline-server
  FAULTLINE_SERVER_TOKEN_FILE=./.faultline-server/admin.token faultline agents ls

  # for a fleet: TLS, an admin token for the API, an enrolment token for agents
  faultline server --listen 0.0.0.0:7071 --state-dir /var/lib/faultline-server \\
                   --tls-cert server.crt --tls-key server.key \\
                   --admin-token-file /etc/faultline/admin-token --enrol-token-file /etc/faultline/enrol-token

Every flag can also be set as an environment variable named FAULTLINE_SERVER_ and the flag
(FAULTLINE_SERVER_LISTEN, FAULTLINE_SERVER_LEASE, ...; --tls-ca is FAULTLINE_SERVER_CLIENT_CA).
Precedence: flag, then environment, then config file, then default.

Agents recover the server's injections on their own when they hear nothing for --lease: a server
that is stopped, killed or cut off leaves no fault behind for longer than that.`

export function serverCommand(): Command {
  return new Command('server')
    .description('run the control plane: experiments across the fleet, halt-all, audit')
    .addOption(new Option('--config <file>', 'YAML or JSON file with any of the flags below').env('FAULTLINE_SERVER_CONFIG'))
    .addOption(new Option('--listen <host:port>', 'address of the API and the agent link').env('FAULTLINE_SERVER_LISTEN').default('127.0.0.1:7071'))
    .addOption(new Option('--state-dir <dir>', 'the SQLite database lives here').env('FAULTLINE_SERVER_STATE_DIR').default('/var/lib/faultline-server'))
    .addOption(new Option('--lease <duration>', "agents recover the server's injections after this long without hearing from it").env('FAULTLINE_SERVER_LEASE').default('30s'))
    .addOption(new Option('--admin-token-file <file>', 'bearer token with the admin role (default <state-dir>/admin.token, made at first start; required off loopback)').env('FAULTLINE_SERVER_ADMIN_TOKEN_FILE'))
    .addOption(new Option('--enrol-token-file <file>', 'token agents present to enrol (default <state-dir>/enrol.token, made at first start; required off loopback)').env('FAULTLINE_SERVER_ENROL_TOKEN_FILE'))
    .addOption(new Option('--tls-cert <file>', 'serve HTTPS and wss with this certificate (PEM)').env('FAULTLINE_SERVER_TLS_CERT'))
    .addOption(new Option('--tls-key <file>', 'private key of --tls-cert (PEM)').env('FAULTLINE_SERVER_TLS_KEY'))
    .addOption(new Option('--tls-ca <file>', 'verify client certificates signed by this CA when presented (PEM)').env('FAULTLINE_SERVER_CLIENT_CA'))
    .addOption(new Option('--log-level <level>', 'log level').env('FAULTLINE_SERVER_LOG_LEVEL').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'))
    .addHelpText('after', examples)
    .action(async (_opts, command: Command) => {
      const { startServer } = await import('../../server/main.js')
      await startServer(resolveServerConfig(command))
    })
}

const configKeys = ['listen', 'stateDir', 'lease', 'adminTokenFile', 'enrolTokenFile', 'tlsCert', 'tlsKey', 'tlsCa', 'logLevel'] as const

/** Flags and environment win over the config file; the file wins over defaults. */
export function resolveServerConfig(command: Command): ServerConfig {
  const merged = mergeConfigFile(command, configKeys)
  const config: ServerConfig = { listen: merged.listen!, stateDir: merged.stateDir!, lease: merged.lease!, logLevel: merged.logLevel! }
  for (const key of ['adminTokenFile', 'enrolTokenFile', 'tlsCert', 'tlsKey', 'tlsCa'] as const) {
    if (merged[key]) config[key] = merged[key]
  }
  return config
}
