import closeWithGrace from 'close-with-grace'
import { listenError, parseListen, readSecretFile, readTlsFiles } from '../common/config.js'
import { adminTokenFile, enrolTokenFile } from '../common/locations.js'
import { createLogger } from '../common/logger.js'
import { notifyReady, notifyStopping } from '../common/sd-notify.js'
import { ensureTokenFile } from '../common/tokens.js'
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
  // No unauthenticated mode: without token files, tokens are made at the first start (0600 in the
  // state dir) and their paths printed, so trying the server out needs no setup.
  const admin = config.adminTokenFile
    ? { token: readSecretFile(config.adminTokenFile, 'admin token file'), file: config.adminTokenFile, generated: false }
    : { ...ensureTokenFile(adminTokenFile(config.stateDir), 'admin token file', 'fla_'), file: adminTokenFile(config.stateDir) }
  const enrol = config.enrolTokenFile
    ? { token: readSecretFile(config.enrolTokenFile, 'enrolment token file'), file: config.enrolTokenFile, generated: false }
    : { ...ensureTokenFile(enrolTokenFile(config.stateDir), 'enrolment token file', 'fle_'), file: enrolTokenFile(config.stateDir) }
  const tls = readTlsFiles(config)

  const log = createLogger(config.logLevel)
  log.info({ version: FAULTLINE_VERSION, pid: process.pid, stateDir: config.stateDir, leaseMs }, 'faultline server starting')
  for (const [what, t] of [['admin', admin], ['enrolment', enrol]] as const) {
    if (t.generated) {
      log.info({ file: t.file }, `made the ${what} token`)
      process.stderr.write(`faultline server: the ${what} token is in ${t.file} (readable by its owner only)\n`)
    }
  }
  const app = await buildServer({
    stateDir: config.stateDir,
    leaseMs,
    logger: log,
    adminToken: admin.token,
    enrolToken: enrol.token,
    ...(tls ? { tls } : {}),
  })
  const grace = closeWithGrace({ delay: 10_000, logger: log }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'fatal error; stopping')
    else log.info({ signal }, 'stopping; agents recover server injections when their lease runs out')
    notifyStopping('stopping', (e, m) => log.warn({ err: e }, m))
    await app.close()
  })
  let url: string
  try {
    url = await app.listen({ host: listen.host, port: listen.port })
  } catch (err) {
    // Nothing may keep running without a port: close the store, the hub and the timers.
    grace.uninstall()
    await app.close()
    throw listenError(err, `${listen.host}:${listen.port}`)
  }
  log.info({ url, adminTokenFile: admin.file, enrolTokenFile: enrol.file }, 'faultline server ready')
  notifyReady(`listening on ${url}`, (e, m) => log.warn({ err: e }, m))
}
