// Shared by the io-* tests: directories under a tmp dir of the test (removed at teardown, after
// any of our FUSE mounts left under it were detached), a Python process that measures per-read
// times or counts open errors, and mount checks.
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestLike } from '../../../helpers.js'

export const iofaultHelper = join(import.meta.dirname, '../../../../native/iofault/faultline-iofault')

export const canRun = (): string | false => {
  if (process.getuid?.() !== 0) return 'needs root (mounts FUSE)'
  if (!existsSync('/dev/fuse')) return 'needs /dev/fuse'
  if (!existsSync(iofaultHelper)) return 'native/iofault is not built (libfuse3-dev)'
  return false
}

/** Our mounts ("faultline-iofault-*") in a mountinfo file, as [mount point, source]. */
export function iofaultMounts(mountinfo = '/proc/self/mountinfo'): { mountPoint: string; source: string }[] {
  return readFileSync(mountinfo, 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f.includes('fuse.faultline-iofault'))
    .map((f) => ({ mountPoint: f[4]!.replace(/\\040/g, ' '), source: f[f.indexOf('-', 6) + 2]! }))
}

/**
 * A fresh tmp dir for the test. Teardown: every mount of ours under it (in the agent's own
 * mount namespace) is detached, its helpers killed, then the tree removed.
 */
export function ioTmp(t: TestLike): string {
  const dir = mkdtempSync(join(tmpdir(), 'fl-io-'))
  t.teardown(() => {
    for (const m of iofaultMounts()) if (m.mountPoint.startsWith(dir)) execFileSync(iofaultHelper, ['--umount', m.mountPoint], { stdio: 'ignore' })
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

export function makeDir(parent: string, name: string, files: Record<string, string | Buffer> = {}): string {
  const dir = join(parent, name)
  mkdirSync(dir, { recursive: true })
  for (const [f, content] of Object.entries(files)) execFileSync('sh', ['-c', 'cat > "$1"', 'sh', join(dir, f)], { input: content })
  return dir
}

/** Runs a Python program with args; resolves with its stdout as JSON. */
export function python<T>(program: string, args: string[], opts: { nsenterPid?: number } = {}): Promise<T> {
  const argv = opts.nsenterPid ? ['nsenter', '-t', String(opts.nsenterPid), '-m', '--', 'python3', '-c', program, ...args] : ['python3', '-c', program, ...args]
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (c: Buffer) => (out += c.toString()))
    child.stderr.on('data', (c: Buffer) => (err += c.toString()))
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out) as T) : reject(new Error(`python exited ${code}: ${err}`))))
  })
}

/** Opens FILE once, then times COUNT preads of 4 KiB at offset 0; prints the times in ms. */
export const READ_TIMES = `
import os, sys, time, json
fd = os.open(sys.argv[1], os.O_RDONLY)
times = []
for i in range(int(sys.argv[2])):
    t = time.perf_counter()
    os.pread(fd, 4096, 0)
    times.append((time.perf_counter() - t) * 1000)
os.close(fd)
print(json.dumps(times))
`

/** COUNT opens of FILE: how many succeeded, and the errno names of those that failed. */
export const OPEN_RESULTS = `
import os, sys, json, errno
ok = 0; errs = {}
for i in range(int(sys.argv[2])):
    try:
        os.close(os.open(sys.argv[1], os.O_RDONLY))
        ok += 1
    except OSError as e:
        n = errno.errorcode.get(e.errno, str(e.errno)); errs[n] = errs.get(n, 0) + 1
print(json.dumps({"ok": ok, "errors": errs}))
`

/** Reads FILE whole (opened now); prints it as hex. */
export const READ_HEX = `
import sys, json
with open(sys.argv[1], 'rb') as f: print(json.dumps(f.read().hex()))
`

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
