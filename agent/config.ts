import { readFileSync, statSync } from 'node:fs'
import { isIP } from 'node:net'
import { parse as parseYaml } from 'yaml'
import { parseDuration } from '../protocol/duration.js'

/** The agent's settings after flags, FAULTLINE_* variables and the config file are merged. */
export interface AgentConfig {
  listen: string
  stateDir: string
  maxDuration: string
  tokenFile?: string
  tlsCert?: string
  tlsKey?: string
  tlsCa?: string
  logLevel: string
}

export interface ListenAddress {
  host: string
  port: number
}

/** "127.0.0.1:7070", "[::1]:7070", "0.0.0.0:7070", "localhost:7070". */
export function parseListen(text: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):([0-9]{1,5})$/.exec(text.trim())
  const host = m?.[1] ?? m?.[2]
  const port = Number(m?.[3])
  if (!m || !host || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError(`--listen ${JSON.stringify(text)} is not HOST:PORT (e.g. 127.0.0.1:7070 or [::1]:7070)`)
  }
  return { host, port }
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true
  if (isIP(host) === 4) return host.startsWith('127.')
  if (isIP(host) === 6) return host === '::1' || /^::ffff:127\./i.test(host)
  return false
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** Reads a secret file: trimmed, non-empty, and not readable by everyone. */
export function readSecretFile(path: string, what: string): string {
  let text: string
  try {
    text = readFileSync(path, 'utf8').trim()
  } catch (err) {
    throw new ConfigError(`cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  if (text.length < 16) throw new ConfigError(`${what} ${path} holds fewer than 16 characters; use a long random token (e.g. openssl rand -hex 32)`)
  if ((statSync(path).mode & 0o004) !== 0) throw new ConfigError(`${what} ${path} is readable by every user; chmod 600 it`)
  return text
}

export function readFileOrFail(path: string, what: string): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    throw new ConfigError(`cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
}

/**
 * Security by default: a listen address other than loopback needs TLS, and a caller must prove
 * who it is with a bearer token or a client certificate.
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

export function checkTlsPair(config: AgentConfig): void {
  if (Boolean(config.tlsCert) !== Boolean(config.tlsKey)) throw new ConfigError('--tls-cert and --tls-key go together')
  if (config.tlsCa && !config.tlsCert) throw new ConfigError('--tls-ca (client certificates) needs --tls-cert and --tls-key')
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

/** A YAML or JSON config file: keys are the long flag names, in kebab-case or camelCase. */
export function readConfigFile(path: string): Record<string, string> {
  let doc: unknown
  try {
    doc = parseYaml(readFileSync(path, 'utf8'))
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`)
  }
  if (doc === null || doc === undefined) return {}
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(`config file ${path} must be a mapping of flag names to values`)
  const out: Record<string, string> = {}
  for (const [key, value] of Object.entries(doc as Record<string, unknown>)) {
    const camel = key.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
    if (typeof value !== 'string' && typeof value !== 'number') throw new ConfigError(`config file ${path}: "${key}" must be a string`)
    out[camel] = String(value)
  }
  return out
}
