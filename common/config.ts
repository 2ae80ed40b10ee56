import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs'
import { isIP } from 'node:net'
import type { Command } from 'commander'
import { parse as parseYaml } from 'yaml'

/**
 * What the agent and the server share as processes when they read their settings: listen
 * addresses, secret and TLS files, and the --config file merged under flags and environment.
 * Errors are ConfigError: the CLI prints their message alone and exits 2.
 */
export class ConfigError extends Error {
  override name = 'ConfigError'
}

/**
 * A process that could not start (its port taken, say): one line for the person or for systemd,
 * a non-zero exit, and nothing left running (the agent or server closed itself first).
 */
export class StartupError extends Error {
  override name = 'StartupError'
}

/** The startup error for a listen that failed, in the words of what to do about it. */
export function listenError(err: unknown, where: string, flag = '--listen'): StartupError {
  const code = (err as NodeJS.ErrnoException).code
  const why: Record<string, string> = {
    EADDRINUSE: `the address is in use (another agent or server? stop it, or choose another ${flag})`,
    EACCES: `permission denied (ports below 1024 need root; or choose another ${flag})`,
    EADDRNOTAVAIL: `no interface of this host has that address (choose another ${flag})`,
  }
  return new StartupError(`cannot listen on ${where}: ${(code && why[code]) ?? (err as Error).message}`)
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

/** A certificate and key to serve HTTPS with, and optionally the CA that signs client certificates. */
export interface TlsFiles {
  cert: string | Buffer
  key: string | Buffer
  /** CA for client certificates: when set, clients present certificates it signed (see hardenedFastifyOptions). */
  ca?: string | Buffer
}

/** The TLS flags every listener takes. */
export interface TlsFlags {
  tlsCert?: string
  tlsKey?: string
  tlsCa?: string
}

export function checkTlsPair(config: TlsFlags): void {
  if (Boolean(config.tlsCert) !== Boolean(config.tlsKey)) throw new ConfigError('--tls-cert and --tls-key go together')
  if (config.tlsCa && !config.tlsCert) throw new ConfigError('--tls-ca (client certificates) needs --tls-cert and --tls-key')
}

/** The certificate, key and (optional) client CA named by --tls-cert, --tls-key and --tls-ca; undefined without a pair. */
export function readTlsFiles(config: TlsFlags): { cert: Buffer; key: Buffer; ca?: Buffer } | undefined {
  if (!config.tlsCert || !config.tlsKey) return undefined
  return {
    cert: readFileOrFail(config.tlsCert, 'TLS certificate'),
    key: readFileOrFail(config.tlsKey, 'TLS key'),
    ...(config.tlsCa ? { ca: readFileOrFail(config.tlsCa, 'TLS client CA') } : {}),
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

/** Whether this process may read `path` (a token file that may be root's only). */
export function isReadable(path: string): boolean {
  try {
    accessSync(path, fsConstants.R_OK)
    return true
  } catch {
    return false
  }
}
