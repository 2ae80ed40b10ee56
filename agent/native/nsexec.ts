import { accessSync, closeSync, constants as fsConstants, openSync, readSync } from 'node:fs'
import { FaultlineError } from '../../protocol/errors.js'
import { nativePath } from './paths.js'

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
 * in the wrong namespace. The library only loads into dynamically linked programs: a static one
 * (busybox-static, say) would ignore LD_PRELOAD and run in the agent's namespaces, so
 * nsexecPreloadEnv refuses any program that is not a dynamically linked ELF.
 */
export type NamespaceKind = 'net' | 'mnt' | 'pid' | 'uts' | 'ipc' | 'cgroup' | 'time' | 'user'
export type NamespacePaths = Partial<Record<NamespaceKind, string>>

function locate(file: string): string | undefined {
  const path = nativePath('nsexec', 'build', file)
  try {
    accessSync(path, fsConstants.R_OK)
    return path
  } catch {
    return undefined
  }
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

const given = (namespaces: NamespacePaths) => Object.entries(namespaces).filter((e): e is [string, string] => e[1] !== undefined)

/** argv that runs `argv` inside the given namespaces through the wrapper. */
export function nsexecArgv(namespaces: NamespacePaths, argv: readonly string[]): string[] {
  const options = given(namespaces).map(([kind, path]) => `--${kind}=${path}`)
  return [nsexecPath(), ...options, '--', ...argv]
}

/**
 * Environment that makes `program` join the namespaces before its main(). Throws unless
 * `program` (a path) is a dynamically linked ELF: LD_PRELOAD does nothing to a static program,
 * which would then run in the agent's own namespaces. Use nsexecArgv for those.
 */
export function nsexecPreloadEnv(namespaces: NamespacePaths, program: string): Record<string, string> {
  const why = notPreloadable(program)
  if (why) {
    throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `cannot enter namespaces through LD_PRELOAD for ${program}: ${why}; run it through faultline-nsexec instead`)
  }
  const env: Record<string, string> = { LD_PRELOAD: nsexecPreloadPath(), FAULTLINE_NSEXEC: '1' }
  for (const [kind, path] of given(namespaces)) env[`FAULTLINE_NSEXEC_${kind.toUpperCase()}`] = path
  return env
}

const PT_INTERP = 3

/**
 * Why the dynamic loader would not load the preload library into this file, or undefined when
 * it would: the file must be an ELF executable with a PT_INTERP program header (see elf(5)).
 */
export function notPreloadable(path: string): string | undefined {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (err) {
    return `cannot open it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`
  }
  try {
    const header = Buffer.alloc(64)
    if (readSync(fd, header, 0, 64, 0) < 52 || header.readUInt32BE(0) !== 0x7f454c46) return 'it is not an ELF executable (a script, say)'
    const is64 = header[4] === 2
    const little = header[5] === 1
    const u16 = (b: Buffer, at: number) => (little ? b.readUInt16LE(at) : b.readUInt16BE(at))
    const u32 = (b: Buffer, at: number) => (little ? b.readUInt32LE(at) : b.readUInt32BE(at))
    const phoff = is64 ? Number(little ? header.readBigUInt64LE(0x20) : header.readBigUInt64BE(0x20)) : u32(header, 0x1c)
    const phentsize = u16(header, is64 ? 0x36 : 0x2a)
    const phnum = u16(header, is64 ? 0x38 : 0x2c)
    if (phentsize < 4 || phnum === 0 || phnum > 4096) return 'its ELF header has no program headers'
    const table = Buffer.alloc(phentsize * phnum)
    if (readSync(fd, table, 0, table.length, phoff) < table.length) return 'its ELF program headers are truncated'
    for (let i = 0; i < phnum; i++) if (u32(table, i * phentsize) === PT_INTERP) return undefined
    return 'it is statically linked'
  } finally {
    closeSync(fd)
  }
}

/** For the capability probe. */
export function nsexecAvailable(): { available: boolean; detail: string } {
  const path = locate('faultline-nsexec')
  const lib = locate('libfaultline-nsexec.so')
  return path && lib
    ? { available: true, detail: `${path} and ${lib}` }
    : { available: false, detail: 'native/nsexec is not built: run "npm run build" (needs gcc and make)' }
}
