// native/nsexec against real containers: the host's `ip` runs inside a busybox container whose
// image has no `ip`, through the wrapper and through the LD_PRELOAD library; a namespace that
// cannot be joined stops everything before the program runs. Needs root and the runtimes of
// scripts/test-runtimes.sh (test/containers.ts); the failure cases need neither containers nor
// a runtime.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { findProgram } from '../../agent/exec.js'
import { notPreloadable, nsexecArgv, nsexecPath, nsexecPreloadEnv, nsexecPreloadPath } from '../../agent/native/nsexec.js'
import { netnsInodeOf, runContainer, skipUnlessRuntime, testRuntimes } from '../containers.js'
import { tmpDir } from '../helpers.js'

const ip = findProgram('ip')
const touch = findProgram('touch')
const ls = findProgram('ls')
const stat = findProgram('stat')
if (!ip || !touch || !ls || !stat) throw new Error('these tests need ip (iproute2), touch, ls and stat (coreutils) on the host')

interface Ran {
  status: number | null
  stdout: string
  stderr: string
}

function run(argv: string[], env: Record<string, string> = {}): Ran {
  const res = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20_000 })
  return { status: res.status, stdout: res.stdout, stderr: res.stderr }
}

/** Interface names in `ip -o addr show` output (the host's ip and busybox's print the same shape). */
const interfaces = (out: string) => [...new Set(out.split('\n').map((l) => /^\d+:\s+([^\s:@]+)/.exec(l)?.[1]).filter(Boolean))].sort()

const hostInterfaces = interfaces(run([ip, '-o', 'addr', 'show']).stdout)

for (const runtime of testRuntimes) {
  t.test(`${runtime}: the host's ip runs in a busybox container that has no ip`, { skip: skipUnlessRuntime(runtime) }, async (t) => {
    t.ok(hostInterfaces.some((i) => i !== 'lo'), `the host has more than lo (${hostInterfaces.join(', ')}), so "lo only" tells them apart`)
    const c = await runContainer(t, runtime)
    const net = `/proc/${c.pid}/ns/net`
    const mnt = `/proc/${c.pid}/ns/mnt`

    const noIp = run(nsexecArgv({ mnt }, ['ip', 'addr']))
    t.equal(noIp.status, 127, 'the image has no ip')
    t.match(noIp.stderr, /cannot run ip/)

    // The wrapper, net only: the host's ip, the container's interfaces.
    const wrapped = run(nsexecArgv({ net }, [ip, '-o', 'addr', 'show']))
    t.equal(wrapped.status, 0, wrapped.stderr)
    t.same(interfaces(wrapped.stdout), ['lo'], 'lo only: --network none')
    t.match(wrapped.stdout, /inet 127\.0\.0\.1\/8/)
    const inode = run(nsexecArgv({ net }, [stat, '-L', '-c', '%i', '/proc/self/ns/net']))
    t.equal(Number(inode.stdout.trim()), netnsInodeOf(c.pid), "the program's netns is the container's")

    // The wrapper, net + mnt: the program is looked up in the container's filesystem, so the
    // host's ip is gone and busybox's own ip applet (not linked in the image) does the job.
    const both = run(nsexecArgv({ net, mnt }, ['/bin/busybox', 'ip', '-o', 'addr', 'show']))
    t.equal(both.status, 0, both.stderr)
    t.same(interfaces(both.stdout), ['lo'])
    const root = run(nsexecArgv({ net, mnt }, ['/bin/ls', '/bin']))
    t.same(root.stdout.split('\n').filter(Boolean).sort(), ['busybox', 'cat', 'echo', 'kill', 'ls', 'ps', 'sh', 'sleep', 'true'], "the container's /bin")

    // The LD_PRELOAD library: the host's dynamically linked ip joins from its constructor.
    const preloaded = run([ip, '-o', 'addr', 'show'], nsexecPreloadEnv({ net }, ip))
    t.equal(preloaded.status, 0, preloaded.stderr)
    t.same(interfaces(preloaded.stdout), ['lo'])
    // ... with mnt too: the binary is the host's (loaded before the constructor), the files it
    // sees are the container's.
    const preloadedBoth = run([ip, '-o', 'addr', 'show'], nsexecPreloadEnv({ net, mnt }, ip))
    t.equal(preloadedBoth.status, 0, preloadedBoth.stderr)
    t.same(interfaces(preloadedBoth.stdout), ['lo'])
    const preloadedLs = run([ls, '/bin'], nsexecPreloadEnv({ mnt }, ls))
    t.match(preloadedLs.stdout.split('\n'), ['busybox', 'cat'], "the host's ls lists the container's /bin")
    t.notOk(preloadedLs.stdout.split('\n').includes('ip'))
  })
}

t.test('a namespace that cannot be joined: exit 126, and the program never runs', async (t) => {
  const dir = tmpDir(t)
  const marker = join(dir, 'ran')
  const self = `/proc/${process.pid}/ns`
  // A process that has exited: its namespace files are gone.
  const gone = spawn('true')
  await new Promise((r) => gone.on('exit', r))
  const cases: [string, Record<string, string>][] = [
    ['a missing file', { net: '/nonexistent/ns/net' }],
    ['an empty path (never "stay in the host\'s namespace")', { net: '' }],
    ['a process that has exited', { net: `/proc/${gone.pid}/ns/net` }],
    ['a file that is no namespace', { net: '/etc/hostname' }],
    ['a namespace of another kind', { net: `${self}/mnt` }],
    ['a good net namespace with a bad mnt one (all are opened before any is joined)', { net: `${self}/net`, mnt: '/nonexistent/ns/mnt' }],
  ]
  for (const [what, namespaces] of cases) {
    const wrapped = run(nsexecArgv(namespaces, [touch, marker]))
    t.equal(wrapped.status, 126, `wrapper, ${what}: exit 126`)
    t.match(wrapped.stderr, /^faultline-nsexec: cannot join FAULTLINE_NSEXEC_[A-Z]+=/)
    t.notOk(existsSync(marker), `wrapper, ${what}: touch never ran`)
    const preloaded = run([touch, marker], nsexecPreloadEnv(namespaces, touch))
    t.equal(preloaded.status, 126, `LD_PRELOAD, ${what}: exit 126`)
    t.match(preloaded.stderr, /^faultline-nsexec: cannot join /)
    t.notOk(existsSync(marker), `LD_PRELOAD, ${what}: touch never ran`)
  }
  // The control: the same program with joinable namespaces does run.
  const ok = run(nsexecArgv({ net: `${self}/net` }, [touch, marker]))
  t.equal(ok.status, 0, ok.stderr)
  t.ok(existsSync(marker), 'with a joinable namespace touch ran')
})

t.test('wrapper usage errors exit 2 before running anything', async (t) => {
  const wrapper = nsexecPath()
  t.equal(run([wrapper, '--nett=/proc/self/ns/net', '--', 'true']).status, 2, 'unknown namespace kind')
  t.equal(run([wrapper, '--net=/proc/self/ns/net', 'true']).status, 2, 'no -- before the program')
  t.equal(run([wrapper, '--net=/proc/self/ns/net', '--']).status, 2, 'no program')
})

t.test('LD_PRELOAD is refused for programs it cannot enter: static binaries would run on the host', async (t) => {
  const busybox = findProgram('busybox')
  t.throws(() => nsexecPreloadEnv({ net: '/proc/self/ns/net' }, '/nonexistent/tool'), { code: 'FAULTLINE_ERR_UNSUPPORTED', message: /cannot open it \(ENOENT\)/ })
  const script = findProgram('ldd')
  if (script) t.match(notPreloadable(script), /not an ELF executable/, 'a shell script')
  t.equal(notPreloadable(ip), undefined, 'a dynamically linked tool')
  if (!busybox || notPreloadable(busybox) === undefined) {
    t.comment('no static busybox on this host (Debian: busybox-static); skipping the static case')
    return
  }
  t.throws(() => nsexecPreloadEnv({ net: '/proc/self/ns/net' }, busybox), { code: 'FAULTLINE_ERR_UNSUPPORTED', message: /statically linked.*faultline-nsexec/ })
  // Why: the library never loads into a static binary, so the namespace variables are ignored.
  const unguarded = run([busybox, 'ip', '-o', 'addr', 'show'], {
    LD_PRELOAD: nsexecPreloadPath(),
    FAULTLINE_NSEXEC: '1',
    FAULTLINE_NSEXEC_NET: '/nonexistent/ns/net',
  })
  t.equal(unguarded.status, 0, 'a static program with an unjoinable namespace still runs: the library never loaded')
  t.same(interfaces(unguarded.stdout), hostInterfaces, "and it sees the host's interfaces")
})
