import { createRequire } from 'node:module'

/** The package version (agent, server and CLI are one package), read from package.json both from sources and from dist/. */
function readVersion(): string {
  const require = createRequire(import.meta.url)
  for (const candidate of ['../package.json', '../../package.json']) {
    try {
      const pkg = require(candidate) as { name?: string; version?: string }
      if (pkg.name === 'faultline' && pkg.version) return pkg.version
    } catch {
      /* try the next location */
    }
  }
  return '0.0.0'
}

export const FAULTLINE_VERSION = readVersion()
