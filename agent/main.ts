import closeWithGrace from 'close-with-grace'
import { checkTlsPair, parseListen, readFileOrFail, readSecretFile, readTlsFiles } from '../common/config.js'
import { createLogger } from '../common/logger.js'
import { FAULTLINE_VERSION } from '../common/version.js'
import { buildAgent } from './app.js'
import { defaultRuntimeSockets } from './host-paths.js'
import { hostname } from 'node:os'
import { type AgentConfig, checkExposure, checkMaxDuration, checkServerUrl, parseLabels } from './config.js'

export type { AgentConfig } from './config.js'

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
  log.info({ version: FAULTLINE_VERSION, pid: process.pid, stateDir: config.stateDir }, 'faultline agent starting')
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
  log.info({ url, auth: token ? 'token' : tls?.ca ? 'client-cert' : 'none (loopback)', server: app.link?.url }, 'faultline agent ready')
  // Dial out only once the API answers: the agent works (locally) whether or not a server is there.
  app.link?.start()
}
