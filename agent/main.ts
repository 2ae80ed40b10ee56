import closeWithGrace from 'close-with-grace'
import pino, { type Logger } from 'pino'
import { buildAgent } from './app.js'
import { defaultRuntimeSockets } from './capabilities/probe.js'
import { hostname } from 'node:os'
import {
  type AgentConfig,
  checkExposure,
  checkMaxDuration,
  checkServerUrl,
  checkTlsPair,
  parseLabels,
  parseListen,
  readFileOrFail,
  readTlsFiles,
  readSecretFile,
} from './config.js'
import { AGENT_VERSION } from './version.js'

export function createLogger(level: string): Logger {
  // Pretty output only for a person at a terminal; JSON lines for journald and collectors.
  if (process.stdout.isTTY) {
    return pino({ level, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l' } } })
  }
  return pino({ level })
}

/**
 * The agent process: the only place that listens and handles signals. On SIGTERM/SIGINT it
 * stops taking requests and recovers every injection before exiting; after SIGKILL or a crash,
 * the next start recovers them before the API answers.
 */
export async function startAgent(config: AgentConfig): Promise<void> {
  const listen = parseListen(config.listen)
  checkTlsPair(config)
  checkExposure(config, listen)
  const maxDurationMs = checkMaxDuration(config.maxDuration)
  checkServerUrl(config)
  const link = config.server
    ? {
        server: config.server,
        name: config.name ?? hostname(),
        labels: parseLabels(config.labels),
        ...(config.enrolTokenFile ? { enrolToken: readSecretFile(config.enrolTokenFile, 'enrolment token file') } : {}),
        ...(config.serverCa ? { ca: readFileOrFail(config.serverCa, 'server CA') } : {}),
      }
    : undefined
  const token = config.tokenFile ? readSecretFile(config.tokenFile, 'token file') : undefined
  const tls = readTlsFiles(config)

  const log = createLogger(config.logLevel)
  log.info({ version: AGENT_VERSION, pid: process.pid, stateDir: config.stateDir }, 'faultline agent starting')
  const app = await buildAgent({
    stateDir: config.stateDir,
    maxDurationMs,
    logger: log,
    ...(token ? { token } : {}),
    ...(tls ? { tls } : {}),
    ...(link ? { link } : {}),
    runtimeSockets: {
      docker: config.dockerSocket ? [config.dockerSocket] : defaultRuntimeSockets.docker,
      containerd: config.containerdSocket ? [config.containerdSocket] : defaultRuntimeSockets.containerd,
      podman: config.podmanSocket ? [config.podmanSocket] : defaultRuntimeSockets.podman,
      crio: config.crioSocket ? [config.crioSocket] : defaultRuntimeSockets.crio,
    },
  })

  // Recovering every injection can take a while (nft pays per table already in a namespace);
  // what is not recovered within the grace period is recovered at the next start.
  closeWithGrace({ delay: 120_000, logger: log }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'fatal error; recovering every injection before exit')
    else log.info({ signal }, 'stopping; recovering every injection before exit')
    await app.close()
  })

  const url = await app.listen({ host: listen.host, port: listen.port })
  // Network faults on the agent's own namespace never cut its API (see docs/faults.md).
  const bound = app.server.address()
  if (bound && typeof bound === 'object') app.injector.control.apiPort = bound.port
  log.info({ url, auth: token ? 'token' : tls?.ca ? 'client-cert' : 'none (loopback)', server: app.link?.url }, 'faultline agent ready')
  // Dial out only once the API answers: the agent works (locally) whether or not a server is there.
  app.link?.start()
}
