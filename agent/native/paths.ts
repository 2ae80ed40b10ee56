import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

let root: string | undefined

/**
 * The package root (where package.json names "faultline" and native/ sits), found by climbing
 * from this module, so it is the same from the sources (agent/native/) and from dist/.
 */
function packageRoot(): string {
  if (root) return root
  const start = dirname(fileURLToPath(import.meta.url))
  for (let dir = start; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json')
    if (existsSync(pkg) && existsSync(join(dir, 'native'))) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'faultline') return (root = dir)
      } catch {
        /* not ours: keep climbing */
      }
    }
    if (dirname(dir) === dir) return (root = join(start, '..', '..'))
  }
}

/** A file of the native helpers, e.g. nativePath('netdelay', 'faultline-netdelay'); it may not be built. */
export function nativePath(...parts: string[]): string {
  return join(packageRoot(), 'native', ...parts)
}
