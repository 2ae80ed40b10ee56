import { readFileSync, statSync } from 'node:fs'
import type { Command } from 'commander'
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
  /** The Faultline server to dial out to (wss://HOST:7071); without it the agent runs alone. */
  server?: string
  enrolTokenFile?: string
  /** "role=db,zone=a": how experiments select this host. */
  labels?: string
  /** CA that signed the server's certificate. */
  serverCa?: string
  /** The id to enrol under (default: the hostname). */
  name?: string
  /** Runtime API sockets, each replacing that runtime's default paths (agent/capabilities/probe.ts). */
  dockerSocket?: string
  containerdSocket?: string
  podmanSocket?: string
  crioSocket?: string
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

/**
 * --config FILE: fills every option that neither a flag nor the environment set from the file
 * (flags and environment win over the file, the file over defaults); a key not in `known` is
 * refused, so a typo never silently falls back to a default. Returns the merged options.
 */
export function mergeConfigFile(command: Command, known: readonly string[]): Record<string, string | undefined> {
  const path = command.opts<{ config?: string }>().config
  if (path) {
    const file = readConfigFile(path)
    for (const key of Object.keys(file)) {
      if (!known.includes(key)) throw new ConfigError(`config file ${path}: unknown setting "${key}"; known: ${known.join(', ')}`)
      const source = command.getOptionValueSource(key)
      if (source === undefined || source === 'default') command.setOptionValueWithSource(key, file[key], 'config')
    }
  }
  return command.opts<Record<string, string | undefined>>()
}

/** The certificate, key and (optional) client CA named by --tls-cert, --tls-key and --tls-ca; undefined without a pair. */
export function readTlsFiles(config: { tlsCert?: string; tlsKey?: string; tlsCa?: string }): { cert: Buffer; key: Buffer; ca?: Buffer } | undefined {
  if (!config.tlsCert || !config.tlsKey) return undefined
  return {
    cert: readFileOrFail(config.tlsCert, 'TLS certificate'),
    key: readFileOrFail(config.tlsKey, 'TLS key'),
    ...(config.tlsCa ? { ca: readFileOrFail(config.tlsCa, 'TLS client CA') } : {}),
  }
}
