import { parseDuration } from '../protocol/duration.js'
import { ConfigError, checkTlsPair, isLoopback, type ListenAddress, type TlsFlags } from '../common/config.js'

/** The server's settings after flags, FAULTLINE_* variables and the config file are merged. */
export interface ServerConfig extends TlsFlags {
  listen: string
  stateDir: string
  lease: string
  adminTokenFile?: string
  enrolTokenFile?: string
  logLevel: string
}

/**
 * Security by default, as for the agent: every caller authenticates (main.ts makes the tokens
 * at the first start when none are given); anything but loopback also needs TLS and token files
 * chosen on purpose.
 */
export function checkServerExposure(config: ServerConfig, listen: ListenAddress): void {
  checkTlsPair(config)
  if (isLoopback(listen.host)) return
  const missing = [
    ...(config.tlsCert && config.tlsKey ? [] : ['--tls-cert and --tls-key']),
    ...(config.adminTokenFile ? [] : ['--admin-token-file']),
    ...(config.enrolTokenFile ? [] : ['--enrol-token-file']),
  ]
  if (missing.length > 0) {
    throw new ConfigError(`refusing to listen on ${listen.host}, which is not loopback, without TLS and authentication: give ${missing.join(', ')}`)
  }
}

export function checkLease(text: string): number {
  let ms: number
  try {
    ms = parseDuration(text)
  } catch {
    ms = 0
  }
  if (ms < 1000 || ms > 3_600_000) throw new ConfigError(`--lease ${JSON.stringify(text)} must be a duration between 1s and 1h, e.g. 30s`)
  return ms
}
