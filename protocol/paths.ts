import { posix } from 'node:path'

/**
 * What is wrong with a path a fault names, or undefined when it is fine: it must be absolute and
 * already in normal form (no ".", "..", "//" or trailing "/"), so that what the plan shows is
 * what is used. The agent checks it before it acts, and every body is checked before that.
 */
export function pathProblem(path: string): string | undefined {
  if (!path.startsWith('/')) return `path "${path}" is not an absolute path (it must start with /)`
  if (path.includes('\0')) return 'path contains a NUL byte'
  const normal = path === '/' ? '/' : posix.normalize(path).replace(/\/+$/, '') || '/'
  if (normal !== path) return `path "${path}" is not in normal form (no ".", "..", "//" or trailing "/"); write it as "${normal}"`
  return undefined
}
