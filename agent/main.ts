import { hostname } from 'node:os'
import { setFlagsFromString } from 'node:v8'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import closeWithGrace from 'close-with-grace'
import { ConfigError, StartupError, checkTlsPair, listenError, readFileOrFail, readSecretFile, readTlsFiles } from '../common/config.js'
import { agentTokenFile, defaultAgentSocket } from '../common/locations.js'
import { createLogger } from '../common/logger.js'
import { notifyReady, notifyStopping } from '../common/sd-notify.js'
import { ensureTokenFile } from '../common/tokens.js'
import { FAULTLINE_VERSION } from '../common/version.js'
import { buildAgent } from './app.js'
import { type AgentConfig, type ChaosdListeners, checkChaosdConfig, checkExposure, checkMaxDuration, checkServerUrl, parseAgentListen, parseLabels } from './config.js'
import { defaultRuntimeSockets } from './host-paths.js'
import { listenOnSocket, prepareSocket } from './listen.js'
import { HostPolicyCheck } from './policy.js'

export type { AgentConfig } from './config.js'

/**
 * The agent process: the only place that listens and handles signals. On SIGTERM/SIGINT it
 * stops taking requests and recovers every injection before exiting; after SIGKILL or a crash,
 * the next start recovers them before the API answers.
 */
export async function startAgent(config: AgentConfig): Promise<void> {
  keepYoungGenerationSmall()
  const listen = parseAgentListen(config.listen ?? `unix:${defaultAgentSocket(config.stateDir)}`)
  checkTlsPair(config)
  if ('unix' in listen) {
    if (config.tlsCert || config.tokenFile) throw new ConfigError('--tls-cert and --token-file are for a TCP --listen; on the Unix socket the file permissions decide who may connect')
  } else {
    checkExposure(config, listen)
  }
  const maxDurationMs = checkMaxDuration(config.maxDuration)
  const chaosd = checkChaosdConfig(config, maxDurationMs)
  const chaosdTls = chaosd?.tls ? readTlsFiles({ tlsCert: chaosd.tls.cert, tlsKey: chaosd.tls.key, ...(chaosd.tls.ca ? { tlsCa: chaosd.tls.ca } : {}) }) : undefined
  const policy = config.policy ? HostPolicyCheck.load(config.policy) : undefined
  if ('unix' in listen) await prepareSocket(listen.unix)
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
  const tls = readTlsFiles(config)
  // On TCP a caller always proves who it is: the configured token, or client certificates, or
  // else a token made at the first start (0600 in the state dir, where root's CLI finds it).
  const tokenFile = 'unix' in listen || (!config.tokenFile && tls?.ca) ? undefined : (config.tokenFile ?? agentTokenFile(config.stateDir))
  const made = tokenFile && !config.tokenFile ? ensureTokenFile(tokenFile, 'agent token file') : undefined
  const token = config.tokenFile ? readSecretFile(config.tokenFile, 'token file') : made?.token

  const log = createLogger(config.logLevel)
  const warn = (err: unknown, message: string) => log.warn({ err }, message)
  log.info({ version: FAULTLINE_VERSION, pid: process.pid, stateDir: config.stateDir }, 'faultline agent starting')
  if (made?.generated) log.info({ tokenFile }, 'made a bearer token for the TCP API (send it as "Authorization: Bearer <token>")')
  if (policy) log.info({ policy: policy.inForce() }, 'host policy in force')
  const app = await buildAgent({
    stateDir: config.stateDir,
    maxDurationMs,
    logger: log,
    ...(token ? { token } : {}),
    ...(tls ? { tls } : {}),
    ...(link ? { link } : {}),
    ...(policy ? { policy } : {}),
    // Network faults never cut the chaosd ports either: Chaos Mesh must be able to recover.
    ...(chaosd ? { protectTcpPorts: [22, ...[chaosd.plain?.port, chaosd.tls?.port].filter((p): p is number => Boolean(p))] } : {}),
    runtimeSockets: {
      docker: config.dockerSocket ? [config.dockerSocket] : defaultRuntimeSockets.docker,
      containerd: config.containerdSocket ? [config.containerdSocket] : defaultRuntimeSockets.containerd,
      podman: config.podmanSocket ? [config.podmanSocket] : defaultRuntimeSockets.podman,
      crio: config.crioSocket ? [config.crioSocket] : defaultRuntimeSockets.crio,
    },
  })

  // Recovering every injection can take a while (nft pays per table already in a namespace);
  // what is not recovered within the grace period is recovered at the next start.
  const chaosdApps: FastifyInstance[] = []
  const closeAll = async () => {
    // The chaosd listeners first: no new attack while every injection is recovered.
    await Promise.allSettled(chaosdApps.map((a) => a.close()))
    await app.close()
  }
  const grace = closeWithGrace({ delay: 120_000, logger: log }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'fatal error; recovering every injection before exit')
    else log.info({ signal }, 'stopping; recovering every injection before exit')
    notifyStopping('recovering every injection before exit', warn)
    await closeAll()
  })

  const where = 'unix' in listen ? `unix:${listen.unix}` : `${listen.host}:${listen.port}`
  try {
    if ('unix' in listen) {
      const socket = await listenOnSocket(app, listen.unix)
      log.info({ url: where, auth: `socket mode ${socket.mode}${socket.group ? ` root:${socket.group}` : ''}`, server: app.link?.url }, 'faultline agent ready')
    } else {
      const url = await app.listen({ host: listen.host, port: listen.port })
      log.info({ url, auth: token ? `token (${tokenFile})` : 'client certificates', server: app.link?.url }, 'faultline agent ready')
    }
    if (chaosd) await listenChaosd(chaosd, chaosdTls, app, log, chaosdApps)
  } catch (err) {
    // Nothing was applied yet (the journal was only reconciled): close, unlock, and say why.
    grace.uninstall()
    await closeAll()
    throw err instanceof ConfigError || err instanceof StartupError ? err : listenError(err, where)
  }
  notifyReady(`listening on ${where}`, warn)
  // Dial out only once the API answers: the agent works (locally) whether or not a server is there.
  app.link?.start()
}

/**
 * The chaosd-compatible listeners (agent/chaosd): HTTPS when configured, and plain HTTP, which
 * then answers only /api/system/* as chaosd's does. Both share the agent's Injector.
 */
/**
 * The agent idles for hours between short bursts of requests. In a burst V8 doubles its young
 * generation up to 2 × 16 MiB and keeps it committed for good (no idle GC gives it back), which
 * was most of the agent's RSS growth after 1000 inject/recover pairs. With a growth factor of 1
 * the semi-spaces stay at their initial 1 MiB: a burst costs more scavenges of a small live set
 * instead (docs/benchmarks.md, "Agent idle footprint", measures both sides). Set at run time, so
 * it holds however the agent is started (unit, package, npm start); V8 reads the flag each time
 * it considers growing the young generation. A Node whose V8 froze its flags keeps its default.
 */
function keepYoungGenerationSmall(): void {
  try {
    setFlagsFromString('--semi-space-growth-factor=1')
  } catch {
    /* flags frozen: V8's default growth */
  }
}

async function listenChaosd(
  chaosd: ChaosdListeners,
  tls: ReturnType<typeof readTlsFiles>,
  app: FastifyInstance,
  log: Logger,
  started: FastifyInstance[],
): Promise<void> {
  // Loaded only when a chaosd listener is configured: most agents never serve that API.
  const { buildChaosdApi } = await import('./chaosd/app.js')
  const common = { injector: app.injector, log, defaultDurationMs: chaosd.defaultDurationMs }
  if (chaosd.tls && tls) {
    const api = await buildChaosdApi({ ...common, tls, routes: 'all' })
    started.push(api)
    const where = `${chaosd.tls.host}:${chaosd.tls.port}`
    const url = await api.listen({ host: chaosd.tls.host, port: chaosd.tls.port }).catch((err: unknown) => {
      throw listenError(err, where, '--chaosd-tls-listen')
    })
    log.info({ url, auth: tls.ca ? 'client certificates' : 'none (TLS without --chaosd-tls-ca: anyone who reaches the port may inject)' }, 'chaosd-compatible API ready')
  }
  if (chaosd.plain) {
    const routes = chaosd.tls ? 'system' : 'all'
    const api = await buildChaosdApi({ ...common, routes })
    started.push(api)
    const where = `${chaosd.plain.host}:${chaosd.plain.port}`
    const url = await api.listen({ host: chaosd.plain.host, port: chaosd.plain.port }).catch((err: unknown) => {
      throw listenError(err, where, '--chaosd-listen')
    })
    if (routes === 'all') {
      log.warn({ url }, 'chaosd-compatible API on plain HTTP without authentication, as chaosd does: anyone who reaches this port can inject faults as root. Use it on a trusted network only, or --chaosd-tls-listen with --chaosd-tls-ca')
    }
    log.info({ url, routes: routes === 'all' ? 'attacks and /api/system' : '/api/system only (attacks on the TLS listener)' }, 'chaosd-compatible API ready')
  }
}
