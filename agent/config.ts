import { isAbsolute } from 'node:path'
import { ConfigError, isLoopback, parseListen, type ListenAddress, type TlsFlags } from '../common/config.js'
import { parseDuration } from '../protocol/duration.js'

/** The agent's settings after flags, FAULTLINE_* variables and the config file are merged. */
export interface AgentConfig extends TlsFlags {
  /** unix:PATH or HOST:PORT; default unix:/run/faultline/agent.sock (root) or unix:<state dir>/agent.sock. */
  listen?: string
  stateDir: string
  maxDuration: string
  tokenFile?: string
  logLevel: string
  /** The Faultline server to dial out to (wss://HOST:7071); without it the agent runs alone. */
  server?: string
  enrolTokenFile?: string
  /** "role=db,zone=a": how experiments select this host. */
  labels?: string
  /** CA that signed the server's certificate. */
  serverCa?: string
  /** The id to enrol under (default: the hostname). */
  name?: string
  /** The host policy file (YAML): what the host's owner allows, whoever asks. */
  policy?: string
  /** Runtime API sockets, each replacing that runtime's default paths (defaultRuntimeSockets, agent/host-paths.ts). */
  dockerSocket?: string
  containerdSocket?: string
  podmanSocket?: string
  crioSocket?: string
  /** chaosd-compatible API (agent/chaosd), plain HTTP: HOST:PORT (chaosd's default port is 31767). */
  chaosdListen?: string
  /** chaosd-compatible API over HTTPS: HOST:PORT, with chaosdTlsCert and chaosdTlsKey. */
  chaosdTlsListen?: string
  chaosdTlsCert?: string
  chaosdTlsKey?: string
  /** CA that signs the callers' client certificates: with it, a certificate is required. */
  chaosdTlsCa?: string
  /** Deadline of a chaosd attack whose body has no duration (default: --max-duration). */
  chaosdDefaultDuration?: string
}

/** The chaosd-compatible listeners to start, checked before anything else starts. */
export interface ChaosdListeners {
  plain?: ListenAddress
  tls?: ListenAddress & { cert: string; key: string; ca?: string }
  defaultDurationMs: number
}

/**
 * The chaosd flags, checked together: TLS needs its certificate and key, a CA needs TLS, the
 * default duration fits in --max-duration. Undefined when neither listener is asked for.
 */
export function checkChaosdConfig(config: AgentConfig, maxDurationMs: number): ChaosdListeners | undefined {
  const tlsFlags = [config.chaosdTlsCert, config.chaosdTlsKey, config.chaosdTlsCa].some(Boolean)
  if (!config.chaosdListen && !config.chaosdTlsListen) {
    if (tlsFlags || config.chaosdDefaultDuration) throw new ConfigError('--chaosd-tls-cert, --chaosd-tls-key, --chaosd-tls-ca and --chaosd-default-duration need --chaosd-listen or --chaosd-tls-listen')
    return undefined
  }
  const address = (flag: string, text: string) => {
    try {
      return parseListen(text)
    } catch {
      throw new ConfigError(`${flag} ${JSON.stringify(text)} is not HOST:PORT (chaosd's port is 31767, e.g. 0.0.0.0:31767)`)
    }
  }
  if (config.chaosdTlsListen && !(config.chaosdTlsCert && config.chaosdTlsKey)) throw new ConfigError('--chaosd-tls-listen needs --chaosd-tls-cert and --chaosd-tls-key')
  if (!config.chaosdTlsListen && tlsFlags) throw new ConfigError('--chaosd-tls-cert, --chaosd-tls-key and --chaosd-tls-ca need --chaosd-tls-listen')
  let defaultDurationMs = maxDurationMs
  if (config.chaosdDefaultDuration) {
    try {
      defaultDurationMs = parseDuration(config.chaosdDefaultDuration)
    } catch {
      throw new ConfigError(`--chaosd-default-duration ${JSON.stringify(config.chaosdDefaultDuration)} must be a duration, e.g. 30m or 1h`)
    }
    if (defaultDurationMs < 1000 || defaultDurationMs > maxDurationMs) throw new ConfigError(`--chaosd-default-duration ${config.chaosdDefaultDuration} must be between 1s and --max-duration`)
  }
  return {
    ...(config.chaosdListen ? { plain: address('--chaosd-listen', config.chaosdListen) } : {}),
    ...(config.chaosdTlsListen
      ? { tls: { ...address('--chaosd-tls-listen', config.chaosdTlsListen), cert: config.chaosdTlsCert!, key: config.chaosdTlsKey!, ...(config.chaosdTlsCa ? { ca: config.chaosdTlsCa } : {}) } }
      : {}),
    defaultDurationMs,
  }
}

/** Where the agent's API listens: a Unix socket (the default) or a TCP address. */
export type AgentListen = { unix: string } | ListenAddress

/** "unix:/run/faultline/agent.sock", "127.0.0.1:7070", "[::1]:7070". */
export function parseAgentListen(text: string): AgentListen {
  if (text.startsWith('unix:')) {
    const path = text.slice('unix:'.length)
    if (!isAbsolute(path)) throw new ConfigError(`--listen ${JSON.stringify(text)}: the socket needs an absolute path, e.g. unix:/run/faultline/agent.sock`)
    return { unix: path }
  }
  try {
    return parseListen(text)
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}, or unix:PATH for a Unix socket (the default)`)
  }
}

/**
 * Security by default: on TCP a caller always proves who it is (a bearer token, generated when
 * none is configured, or a client certificate); a listen address other than loopback also needs
 * TLS and a credential configured on purpose (--token-file or --tls-ca).
 */
export function checkExposure(config: AgentConfig, listen: ListenAddress): void {
  if (isLoopback(listen.host)) return
  const tls = Boolean(config.tlsCert && config.tlsKey)
  const auth = Boolean(config.tokenFile || config.tlsCa)
  if (!tls || !auth) {
    throw new ConfigError(
      `refusing to listen on ${listen.host}, which is not loopback, without TLS and authentication: ` +
        'give --tls-cert and --tls-key, plus --token-file or --tls-ca (client certificates)',
    )
  }
}

export function checkMaxDuration(text: string): number {
  try {
    const ms = parseDuration(text)
    if (ms < 1000) throw new Error('too short')
    return ms
  } catch {
    throw new ConfigError(`--max-duration ${JSON.stringify(text)} must be a duration of at least 1s, e.g. 1h or 30m`)
  }
}

/** "role=db,zone=a" -> { role: 'db', zone: 'a' }; keys and values as the link protocol allows. */
export function parseLabels(text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {}
  if (!text) return labels
  for (const pair of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = pair.indexOf('=')
    const key = eq === -1 ? '' : pair.slice(0, eq).trim()
    const value = eq === -1 ? '' : pair.slice(eq + 1).trim()
    if (!/^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/.test(key) || value.length > 63) {
      throw new ConfigError(`--labels: "${pair}" is not key=value (keys: letters, digits, ".", "_", "-", "/", at most 63 characters; values at most 63)`)
    }
    labels[key] = value
  }
  if (Object.keys(labels).length > 64) throw new ConfigError('--labels: at most 64 labels')
  return labels
}

/**
 * The link to the server is encrypted unless the server is on this host: wss://, or ws:// to
 * a loopback address.
 */
export function checkServerUrl(config: AgentConfig): void {
  if (!config.server) {
    for (const [flag, value] of [['--enrol-token-file', config.enrolTokenFile], ['--server-ca', config.serverCa], ['--labels', config.labels]] as const) {
      if (value) throw new ConfigError(`${flag} needs --server`)
    }
    return
  }
  let url: URL
  try {
    // https:// is read as wss:// (and http:// as ws://): the same FAULTLINE_SERVER serves the CLI.
    url = new URL(config.server.replace(/^http(s?):/i, 'ws$1:'))
  } catch {
    throw new ConfigError(`--server ${JSON.stringify(config.server)} is not a URL; use wss://HOST:7071`)
  }
  const host = url.hostname.replace(/^\[|\]$/g, '')
  if (url.protocol === 'ws:' && !isLoopback(host)) {
    throw new ConfigError(`--server ${config.server} is not encrypted; use wss:// (ws:// is accepted only for a server on this host)`)
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new ConfigError(`--server ${config.server} must be a wss:// URL, e.g. wss://faultline.example:7071`)
  if (config.name !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(config.name)) {
    throw new ConfigError(`--name ${JSON.stringify(config.name)}: letters, digits, ".", "_" and "-", at most 63 characters`)
  }
}
