import { accessSync, constants as fsConstants } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { FaultlineError } from '../../protocol/errors.js'

/**
 * native/nsexec: the one primitive for entering namespaces. The agent never calls setns(2)
 * itself: it spawns a fresh process that joins the namespaces before it runs anything.
 *
 *  - `faultline-nsexec --net=PATH [--mnt=PATH ...] -- PROGRAM ARGS` joins, then execs PROGRAM
 *    (same pid: a tracked helper started this way is the process that runs);
 *  - `libfaultline-nsexec.so` (LD_PRELOAD, with FAULTLINE_NSEXEC=1 and FAULTLINE_NSEXEC_<KIND>
 *    variables) joins from the constructor of a dynamically linked host tool, before its main().
 *
 * Both exit 126 before the program runs if a namespace cannot be joined, so a tool never runs
 * in the wrong namespace.
 */
export type NamespaceKind = 'net' | 'mnt' | 'pid' | 'uts' | 'ipc' | 'cgroup' | 'time' | 'user'
export type NamespacePaths = Partial<Record<NamespaceKind, string>>

// native/ sits at the repository root; this file runs from agent/native/ or dist/agent/native/.
const here = dirname(fileURLToPath(import.meta.url))
const candidates = [join(here, '..', '..', 'native', 'nsexec', 'build'), join(here, '..', '..', '..', 'native', 'nsexec', 'build')]

function locate(file: string): string | undefined {
  for (const dir of candidates) {
    const path = join(dir, file)
    try {
      accessSync(path, fsConstants.R_OK)
      return path
    } catch {
      /* next */
    }
  }
  return undefined
}

let wrapper: string | undefined
let preload: string | undefined

export function nsexecPath(): string {
  wrapper ??= locate('faultline-nsexec')
  if (!wrapper) throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', 'native/nsexec is not built: run "npm run build" (needs gcc and make)')
  return wrapper
}

export function nsexecPreloadPath(): string {
  preload ??= locate('libfaultline-nsexec.so')
  if (!preload) throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', 'native/nsexec is not built: run "npm run build" (needs gcc and make)')
  return preload
}

/** argv that runs `argv` inside the given namespaces through the wrapper. */
export function nsexecArgv(namespaces: NamespacePaths, argv: readonly string[]): string[] {
  const options = Object.entries(namespaces).map(([kind, path]) => `--${kind}=${path}`)
  return [nsexecPath(), ...options, '--', ...argv]
}

/** Environment that makes a dynamically linked program join the namespaces before main(). */
export function nsexecPreloadEnv(namespaces: NamespacePaths): Record<string, string> {
  const env: Record<string, string> = { LD_PRELOAD: nsexecPreloadPath(), FAULTLINE_NSEXEC: '1' }
  for (const [kind, path] of Object.entries(namespaces)) env[`FAULTLINE_NSEXEC_${kind.toUpperCase()}`] = path
  return env
}

/** For the capability probe. */
export function nsexecAvailable(): { available: boolean; detail: string } {
  const path = locate('faultline-nsexec')
  const lib = locate('libfaultline-nsexec.so')
  return path && lib
    ? { available: true, detail: `${path} and ${lib}` }
    : { available: false, detail: 'native/nsexec is not built: run "npm run build" (needs gcc and make)' }
}
