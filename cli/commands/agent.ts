import { Command, Option } from 'commander'
import { mergeConfigFile } from '../../common/config.js'
import { DEFAULT_AGENT_STATE_DIR } from '../../common/locations.js'
import type { AgentConfig } from '../../agent/main.js'

const examples = `
Examples:
  # as root: the API on /run/faultline/agent.sock (0660 root:faultline, or 0600), state in a local folder
  faultline agent --state-dir ./.faultline

  # as a service, settings from a file (keys are the long flag names), limits from the host's owner
  faultline agent --config /etc/faultline/agent.yaml --policy /etc/faultline/policy.yaml

  # on a loopback TCP port: callers send the bearer token made in the state dir at first start
  faultline agent --listen 127.0.0.1:7070

  # exposed to the network: TLS plus a bearer token (or --tls-ca for client certificates)
  faultline agent --listen 0.0.0.0:7070 --tls-cert agent.crt --tls-key agent.key --token-file /etc/faultline/token

  # part of a fleet: dial out to the server, enrol once with its enrolment token
  faultline agent --server wss://faultline.example:7071 --enrol-token-file /etc/faultline/enrol \\
                  --server-ca /etc/faultline/ca.crt --labels role=db,zone=a

  # driven by Chaos Mesh's PhysicalMachineChaos: chaosd's API over mutual TLS (docs/chaos-mesh.md)
  faultline agent --chaosd-tls-listen 0.0.0.0:31768 --chaosd-tls-cert chaosd.crt --chaosd-tls-key chaosd.key \\
                  --chaosd-tls-ca chaos-mesh-ca.crt

  # a runtime socket somewhere else (containers are found through cgroupfs without any socket;
  # the sockets only add names, labels and images)
  faultline agent --docker-socket /srv/docker/docker.sock

Every flag can also be set as an environment variable named FAULTLINE_AGENT_ and the flag
(FAULTLINE_AGENT_LISTEN, FAULTLINE_AGENT_STATE_DIR, ...; --tls-ca is FAULTLINE_AGENT_CLIENT_CA).
FAULTLINE_SERVER is the CLI's: the agent joins a server only with --server or FAULTLINE_AGENT_SERVER.
Precedence: flag, then environment, then config file, then default.

Stopping the agent (SIGTERM, SIGINT) recovers every injection before it exits; after a crash or
kill -9, the next start recovers them before the API answers. With --server, injections the
server asked for are also bound to its lease: when the server is unreachable for longer than the
lease (the server's --lease, default 30s), the agent recovers them on its own.`

export function agentCommand(): Command {
  const cmd = new Command('agent')
    .description('run the host agent (HTTP API, journal, deadlines)')
    .addOption(new Option('--config <file>', 'YAML or JSON file with any of the flags below').env('FAULTLINE_AGENT_CONFIG'))
    .addOption(
      new Option('--listen <unix:path|host:port>', 'where the HTTP API listens (default unix:/run/faultline/agent.sock as root, else unix:<state-dir>/agent.sock); TCP always needs a token or client certificates').env(
        'FAULTLINE_AGENT_LISTEN',
      ),
    )
    .addOption(new Option('--state-dir <dir>', 'journal, backups and the generated token live here').env('FAULTLINE_AGENT_STATE_DIR').default(DEFAULT_AGENT_STATE_DIR))
    .addOption(new Option('--policy <file>', "host policy (YAML): the kinds, targets, paths, limits and networks this host's owner allows, whoever asks").env('FAULTLINE_AGENT_POLICY'))
    .addOption(new Option('--max-duration <duration>', 'longest duration an injection may ask for').env('FAULTLINE_AGENT_MAX_DURATION').default('1h'))
    .addOption(new Option('--token-file <file>', 'on TCP, require "Authorization: Bearer <token>" with the token in this file (default: <state-dir>/agent.token, made at first start)').env('FAULTLINE_AGENT_TOKEN_FILE'))
    .addOption(new Option('--tls-cert <file>', 'serve HTTPS with this certificate (PEM)').env('FAULTLINE_AGENT_TLS_CERT'))
    .addOption(new Option('--tls-key <file>', 'private key of --tls-cert (PEM)').env('FAULTLINE_AGENT_TLS_KEY'))
    .addOption(new Option('--tls-ca <file>', 'require client certificates signed by this CA (PEM)').env('FAULTLINE_AGENT_CLIENT_CA'))
    .addOption(new Option('--server <url>', 'Faultline server to join: wss://HOST:7071').env('FAULTLINE_AGENT_SERVER'))
    .addOption(new Option('--enrol-token-file <file>', "file with the server's enrolment token (needed until the agent has its own credential)").env('FAULTLINE_AGENT_ENROL_TOKEN_FILE'))
    .addOption(new Option('--labels <k=v,...>', 'labels experiments select this host by, e.g. role=db,zone=a').env('FAULTLINE_AGENT_LABELS'))
    .addOption(new Option('--server-ca <file>', "CA that signed the server's certificate (PEM)").env('FAULTLINE_AGENT_SERVER_CA'))
    .addOption(new Option('--name <name>', 'id to enrol under (default: the hostname)').env('FAULTLINE_AGENT_NAME'))
    .addOption(new Option('--docker-socket <path>', 'Docker Engine API socket, used for container names, labels and images (default /run/docker.sock, then /var/run/docker.sock)').env('FAULTLINE_AGENT_DOCKER_SOCKET'))
    .addOption(new Option('--containerd-socket <path>', 'containerd gRPC socket (default /run/containerd/containerd.sock)').env('FAULTLINE_AGENT_CONTAINERD_SOCKET'))
    .addOption(new Option('--podman-socket <path>', "podman's Docker-compatible API socket (default /run/podman/podman.sock)").env('FAULTLINE_AGENT_PODMAN_SOCKET'))
    .addOption(new Option('--crio-socket <path>', 'CRI-O socket (default /run/crio/crio.sock, then /var/run/crio/crio.sock)').env('FAULTLINE_AGENT_CRIO_SOCKET'))
    .addOption(new Option('--chaosd-listen <host:port>', "also answer chaosd's HTTP API here (plain HTTP, no authentication, as chaosd: trusted networks only; chaosd's port is 31767), for Chaos Mesh's PhysicalMachineChaos; with --chaosd-tls-listen it serves only /api/system/*").env('FAULTLINE_AGENT_CHAOSD_LISTEN'))
    .addOption(new Option('--chaosd-tls-listen <host:port>', "answer chaosd's HTTP API over HTTPS here (Chaos Mesh's security mode)").env('FAULTLINE_AGENT_CHAOSD_TLS_LISTEN'))
    .addOption(new Option('--chaosd-tls-cert <file>', 'certificate of --chaosd-tls-listen (PEM; Chaos Mesh expects the name chaosd.chaos-mesh.org)').env('FAULTLINE_AGENT_CHAOSD_TLS_CERT'))
    .addOption(new Option('--chaosd-tls-key <file>', 'private key of --chaosd-tls-cert (PEM)').env('FAULTLINE_AGENT_CHAOSD_TLS_KEY'))
    .addOption(new Option('--chaosd-tls-ca <file>', 'require client certificates signed by this CA on --chaosd-tls-listen (PEM)').env('FAULTLINE_AGENT_CHAOSD_TLS_CA'))
    .addOption(new Option('--chaosd-default-duration <duration>', 'deadline of a chaosd attack that names no duration (Chaos Mesh never does; default: --max-duration)').env('FAULTLINE_AGENT_CHAOSD_DEFAULT_DURATION'))
    .addOption(
      new Option('--log-level <level>', 'log level')
        .env('FAULTLINE_AGENT_LOG_LEVEL')
        .choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace'])
        .default('info'),
    )
    .addHelpText('after', examples)
    .action(async (_opts, command: Command) => {
      const { startAgent } = await import('../../agent/main.js')
      const config = resolveAgentConfig(command)
      if (!config.server && process.env.FAULTLINE_SERVER) {
        process.stderr.write('faultline: note: FAULTLINE_SERVER is the CLI\'s server; this agent joins a server only with --server or FAULTLINE_AGENT_SERVER\n')
      }
      await startAgent(config)
    })
  return cmd
}

const configKeys = ['listen', 'stateDir', 'maxDuration', 'policy', 'tokenFile', 'tlsCert', 'tlsKey', 'tlsCa', 'logLevel', 'server', 'enrolTokenFile', 'labels', 'serverCa', 'name', 'dockerSocket', 'containerdSocket', 'podmanSocket', 'crioSocket', 'chaosdListen', 'chaosdTlsListen', 'chaosdTlsCert', 'chaosdTlsKey', 'chaosdTlsCa', 'chaosdDefaultDuration'] as const

/** Flags and environment win over the config file; the file wins over defaults. */
export function resolveAgentConfig(command: Command): AgentConfig {
  const merged = mergeConfigFile(command, configKeys)
  const config: AgentConfig = {
    stateDir: merged.stateDir!,
    maxDuration: merged.maxDuration!,
    logLevel: merged.logLevel!,
  }
  for (const key of configKeys) {
    if (key === 'stateDir' || key === 'maxDuration' || key === 'logLevel') continue
    if (merged[key]) config[key] = merged[key]
  }
  return config
}
