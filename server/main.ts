import closeWithGrace from 'close-with-grace'
import { parseListen, readSecretFile, readTlsFiles } from '../common/config.js'
import { createLogger } from '../common/logger.js'
import { FAULTLINE_VERSION } from '../common/version.js'
import { buildServer } from './app.js'
import { checkLease, checkServerExposure, type ServerConfig } from './config.js'

export type { ServerConfig } from './config.js'

/**
 * The server process: the only place that listens and handles signals. Stopping it closes the
 * agents' links; agents keep their injections for one lease, then recover them on their own,
 * so a restart within the lease loses nothing and a server that stays down leaves no fault.
 */
export async function startServer(config: ServerConfig): Promise<void> {
  const listen = parseListen(config.listen)
  checkServerExposure(config, listen)
  const leaseMs = checkLease(config.lease)
  const adminToken = config.adminTokenFile ? readSecretFile(config.adminTokenFile, 'admin token file') : undefined
  const enrolToken = config.enrolTokenFile ? readSecretFile(config.enrolTokenFile, 'enrolment token file') : undefined
  const tls = readTlsFiles(config)

  const log = createLogger(config.logLevel)
  log.info({ version: FAULTLINE_VERSION, pid: process.pid, stateDir: config.stateDir, leaseMs }, 'faultline server starting')
  const app = await buildServer({
    stateDir: config.stateDir,
    leaseMs,
    logger: log,
    ...(adminToken ? { adminToken } : {}),
    ...(enrolToken ? { enrolToken } : {}),
    ...(tls ? { tls } : {}),
  })
  closeWithGrace({ delay: 10_000, logger: log }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'fatal error; stopping')
    else log.info({ signal }, 'stopping; agents recover server injections when their lease runs out')
    await app.close()
  })
  const url = await app.listen({ host: listen.host, port: listen.port })
  log.info({ url, auth: adminToken ? 'tokens' : 'none (loopback)', enrolment: enrolToken ? 'token' : 'open (loopback)' }, 'faultline server ready')
}
