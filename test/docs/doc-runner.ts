// Runs the `sh` examples of README.md and docs/*.md as written, in order, in one shell per page —
// as a reader pasting them into a root terminal would — against real agents and servers, and
// reports the first one that fails with its page and line.
//
// What the page says is what runs. Only what is specific to this machine is provided around it:
// - a network namespace of its own with a peer (10.200.0.1 <-> 10.200.0.2, default route through
//   the peer): the shell, the agents and the servers run there, so `--target host` network faults,
//   ports 7070/7071 and 0.0.0.0 stay inside it;
// - a private mount namespace: a tmpfs on /var/lib (the default state dirs, /var/lib/app/data.db,
//   a 256 MiB /var/lib/postgresql to fill), /etc and /usr as overlays whose writes land in the
//   test's directory (/etc/faultline/..., /etc/netns/..., faultline.example in /etc/hosts,
//   /usr/bin/redis-server): nothing the pages write reaches the host;
// - processes the pages name (postgres, nginx, redis-server, queue-worker: copies of sleep; the
//   postgres one in a memory cgroup of 256 MiB, so "75 %" is small), and for pages that need it a
//   docker container with /etc/app/app.conf and a /data tmpfs;
// - `faultline` on PATH: the CLI from the sources. A long-running `faultline agent`/`server` is
//   started in the background until it is ready (a second of the same kind stops the first, as a
//   reader would with Ctrl-C); a command that waits for a fault to end (`inject` without --detach,
//   `exp run`) gets Ctrl-C once the fault is active, and exit 130 from that counts as success;
// - `curl` with --fail-with-body, so an HTTP error fails the example;
// - three names the pages use for things of the reader's: /run/faultline (the agent's socket dir,
//   which the host's other agents may use) is a directory of the test's, `netns:app`/`netns:blue`
//   name the test's namespace and `container:name=web` the test's container.
//
// A block is run unless the line before its fence says otherwise:
//   <!-- doc-test: skip: REASON -->        not run (a reason is required)
//   <!-- doc-test: needs docker -->        run when docker is available (required in CI)
//   <!-- doc-test: instead: COMMAND -->    COMMAND is run in its place (npm start: the agent it starts)
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, copyFileSync, mkdirSync, readFileSync, readdirSync, rmdirSync, symlinkSync, writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { tmpdir } from 'node:os'
import { TEST_IMAGE, removeContainer, runtimeCli, runtimeUnavailable } from '../containers.js'
import { repoRoot, tmpDir, type TestLike } from '../helpers.js'
import { netnsPair } from '../net.js'

export interface DocBlock {
  file: string
  /** 1-based line of the first line of code (after the fence). */
  line: number
  code: string
  mode: 'run' | 'skip' | 'docker' | 'instead'
  /** The skip reason, or the command run instead. */
  note: string
}

const ANNOTATION = /^<!--\s*doc-test:\s*(skip|needs docker|instead)(?::\s*(.*?))?\s*-->$/

/** Every ```sh block of a markdown file, with how the test treats it. */
export function docBlocks(file: string): DocBlock[] {
  const lines = readFileSync(join(repoRoot, file), 'utf8').split('\n')
  const blocks: DocBlock[] = []
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(sh|bash)\s*$/.test(lines[i]!)) continue
    const start = i + 1
    let end = start
    while (end < lines.length && !lines[end]!.startsWith('```')) end++
    let before = i - 1
    while (before >= 0 && lines[before]!.trim() === '') before--
    const m = before >= 0 ? ANNOTATION.exec(lines[before]!.trim()) : null
    const kind = m?.[1]
    const mode = kind === 'skip' ? 'skip' : kind === 'needs docker' ? 'docker' : kind === 'instead' ? 'instead' : 'run'
    if ((mode === 'skip' || mode === 'instead') && !m?.[2]) throw new Error(`${file}:${before + 1}: doc-test ${kind} needs a reason or a command`)
    blocks.push({ file, line: start + 1, code: lines.slice(start, end).join('\n'), mode, note: m?.[2] ?? '' })
    i = end
  }
  return blocks
}

/** The markdown files whose examples the runner covers: README.md and every page of docs/. */
export function docFiles(): string[] {
  return ['README.md', ...readdirSync(join(repoRoot, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)]
}

const sh = (argv: string[]) => {
  const res = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' })
  if (res.status !== 0) throw new Error(`${argv.join(' ')}: ${res.stderr}`)
  return res.stdout
}

/** The `faultline` of the pages: the CLI from the sources, with long-running and waiting commands handled (see the header). */
function faultlineWrapper(sandbox: string): string {
  const cli = `${process.execPath} --import file://${repoRoot}/node_modules/tsx/dist/loader.mjs ${repoRoot}/cli/main.ts`
  return `#!/bin/bash
run="${sandbox}/procs"
mkdir -p "$run"
stop() { # stop the running agent or server of a kind, as Ctrl-C would: it recovers what it holds
  local f="$run/$1.pid"
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f"); rm -f "$f"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1500); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "faultline-doc-test: $1 $pid did not stop" >&2; return 1
}
case "$1" in
  --stop) stop agent && stop server; exit $? ;;
  agent|server)
    kind=$1
    stop "$kind" || exit 1
    args=("$@")
    if [ "$kind" = agent ] && ! printf '%s\\n' "$@" | grep -q -- '^--listen'; then args+=(--listen "unix:${sandbox}/run/faultline/agent.sock"); fi
    log="$run/$kind.$(date +%s%N).log"
    setsid ${cli} "\${args[@]}" > "$log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$run/$kind.pid"
    for _ in $(seq 600); do
      if grep -q '"msg":"faultline '"$kind"' ready"' "$log"; then echo "(faultline $kind running in the background, pid $pid)"; exit 0; fi
      if ! kill -0 "$pid" 2>/dev/null; then cat "$log" >&2; rm -f "$run/$kind.pid"; wait "$pid"; exit $?; fi
      sleep 0.1
    done
    echo "faultline-doc-test: $kind not ready after 60 s" >&2; cat "$log" >&2; exit 1 ;;
esac
waits=
if [ "$1" = inject ]; then waits=1; fi
if [ "$1 $2" = "exp run" ]; then waits=1; fi
for a in "$@"; do case "$a" in --detach|--dry-run|--help) waits= ;; esac; done
if [ -z "$waits" ]; then exec ${cli} "$@"; fi
# Waits until the fault ends: Ctrl-C once it is in place (or the command ended on its own).
out="$run/wait.$$.out"
: > "$out"
${cli} "$@" > >(tee "$out") 2>&1 &
pid=$!
for _ in $(seq 300); do
  kill -0 "$pid" 2>/dev/null || break
  if grep -Eq ' is active|  ends in|^  [0-9:]+  .* active' "$out"; then sleep 1; kill -INT "$pid"; break; fi
  sleep 0.1
done
wait "$pid"; rc=$?
[ "$rc" = 130 ] && rc=0
exit $rc
`
}

/** Which test file runs which pages (every page with an `sh` block is in one group; checked). */
export const pageGroups: Record<string, string[]> = {
  readme: ['README.md'],
  agent: ['docs/operations.md', 'docs/api.md', 'docs/benchmarks.md', 'docs/install.md', 'docs/chaos-mesh.md'],
  faults: ['docs/faults.md', 'docs/containers.md'],
  server: ['docs/server.md'],
}

export interface SessionResult {
  /** Per block: ok, skipped, or the failure. */
  outcomes: { block: DocBlock; outcome: 'ok' | 'skipped' | 'failed' | 'not-run'; detail?: string }[]
  output: string
}

/**
 * Runs the blocks of one page in one shell (so `export`, `$!` and files carry over, as in a
 * terminal), and stops at the first failure. Everything it made is removed at teardown.
 */
export async function runPage(t: TestLike, blocks: DocBlock[], opts: { docker: boolean }): Promise<SessionResult> {
  const sandbox = tmpDir(t, 'fl-doc-')
  const tag = `${process.pid.toString(36)}${randomBytes(2).toString('hex')}`
  const { a: host, b: peer } = netnsPair(t, 0)
  sh(['ip', '-n', host.name, 'route', 'add', 'default', 'via', peer.ip])

  // A memory cgroup (v1 or v2) of 256 MiB for the "postgres" the pages stress.
  const v1 = existsSync('/sys/fs/cgroup/memory/cgroup.procs')
  const memoryCgroup = v1 ? `/sys/fs/cgroup/memory/fl-doc-${tag}` : `/sys/fs/cgroup/fl-doc-${tag}`
  mkdirSync(memoryCgroup)
  t.teardown(() => {
    for (let i = 0; i < 50; i++) {
      try {
        for (const pid of readFileSync(join(memoryCgroup, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) spawnSync('kill', ['-KILL', pid])
        rmdirSync(memoryCgroup)
        return
      } catch {
        spawnSync('sleep', ['0.1'])
      }
    }
  })
  writeFileSync(join(memoryCgroup, v1 ? 'memory.limit_in_bytes' : 'memory.max'), String(256 * 1024 * 1024))

  // The container the pages call "web".
  let web = ''
  if (opts.docker) {
    web = `fl-doc-web-${tag}`
    t.teardown(() => removeContainer('docker', web))
    await runtimeCli(['docker', 'run', '-d', '--network', 'none', '--label', 'faultline-test=1', '--tmpfs', '/data:size=300m', '--name', web, TEST_IMAGE, 'sh', '-c', 'mkdir -p /etc/app && echo "port = 5432" > /etc/app/app.conf && exec sleep 3600'])
  }

  const bin = join(sandbox, 'bin')
  mkdirSync(bin)
  writeFileSync(join(bin, 'faultline'), faultlineWrapper(sandbox), { mode: 0o755 })
  writeFileSync(join(bin, 'curl'), '#!/bin/sh\nexec /usr/bin/curl --fail-with-body "$@"\n', { mode: 0o755 })
  const fakes = join(sandbox, 'fakes')
  mkdirSync(fakes)
  for (const name of ['postgres', 'nginx', 'queue-worker']) copyFileSync('/bin/sleep', join(fakes, name))
  const work = join(sandbox, 'work')
  mkdirSync(work)
  for (const name of ['examples', 'native']) symlinkSync(join(repoRoot, name), join(work, name))
  mkdirSync(join(sandbox, 'run', 'faultline'), { recursive: true })
  chmodSync(join(sandbox, 'run', 'faultline'), 0o755)
  for (const d of ['etc-up', 'etc-work', 'usr-up', 'usr-work']) mkdirSync(join(sandbox, d))

  const substitute = (code: string) =>
    code
      .replaceAll('/run/faultline', `${sandbox}/run/faultline`)
      .replace(/netns:(app|blue)\b/g, `netns:${host.name}`)
      .replaceAll('container:name=web', `container:name=${web}`)
      .replace(/(inspect -f '\{\{\.State\.Pid\}\}') web\b/g, `$1 ${web}`)

  const script: string[] = [
    'set -u',
    // The machine around the pages (see the header).
    'mount -t tmpfs -o size=256m,mode=755 tmpfs /var/lib',
    'mkdir -p /var/lib/postgresql /var/lib/app && mount -t tmpfs -o size=384m tmpfs /var/lib/postgresql',
    'head -c 1048576 /dev/urandom > /var/lib/app/data.db',
    `mount -t overlay overlay -o lowerdir=/etc,upperdir=${sandbox}/etc-up,workdir=${sandbox}/etc-work /etc`,
    `mount -t overlay overlay -o lowerdir=/usr,upperdir=${sandbox}/usr-up,workdir=${sandbox}/usr-work /usr`,
    `cp /bin/sleep /usr/bin/redis-server && /usr/bin/redis-server 3600 >/dev/null 2>&1 & echo $! > ${fakes}/redis-server.pid`,
    'echo "127.0.0.1 faultline.example" >> /etc/hosts',
    `mkdir -p /etc/netns/${host.name} && echo "nameserver ${peer.ip}" > /etc/netns/${host.name}/resolv.conf`,
    `for n in postgres nginx queue-worker; do ${fakes}/$n 3600 >/dev/null 2>&1 & echo $! > ${fakes}/$n.pid; done`,
    `echo "$(cat ${fakes}/postgres.pid)" > ${memoryCgroup}/cgroup.procs`,
    `export PATH=${bin}:$PATH FAULTLINE_AGENT=unix:${sandbox}/run/faultline/agent.sock NO_COLOR=1`,
    `cd ${work}`,
    // The agent a reader has running when a page starts with commands for it.
    'faultline agent >/dev/null || { echo "::setup failed: the agent did not start"; exit 1; }',
    'set -eo pipefail',
    'trap \'printf "\\n::failed %s %s %s\\n" "$BLOCK" "$LINENO" "$BASH_COMMAND"\' ERR',
    'BLOCK=-1',
  ]
  // Where each block's first line is in the script, to name the page's line that failed.
  const starts: number[] = []
  const linesSoFar = () => script.join('\n').split('\n').length
  blocks.forEach((block, i) => {
    if (block.mode === 'skip' || (block.mode === 'docker' && !opts.docker)) return
    script.push(`BLOCK=${i}; printf '\\n::begin ${i}\\n'`)
    starts[i] = linesSoFar() + 1
    script.push(block.mode === 'instead' ? block.note : substitute(block.code))
    script.push(`printf '\\n::ok ${i}\\n'`)
  })
  // The fake daemons go with the page, before the lock below is released.
  script.push('set +e', 'faultline --stop', `kill -KILL $(cat ${fakes}/*.pid) 2>/dev/null`, 'printf "\\n::done\\n"')
  const scriptFile = join(sandbox, 'page.sh')
  writeFileSync(scriptFile, script.join('\n') + '\n')

  // One page at a time on the machine, across test files: the pages share its PID namespace, and
  // a selector such as "process named postgres" or "cmdline ^/usr/bin/redis-server" would match
  // the fakes of a page running next to it (FAULTLINE_ERR_TOO_MANY_TARGETS).
  const lock = join(tmpdir(), 'faultline-doc-pages.lock')
  const child = spawn('flock', [lock, 'nsenter', `--net=${host.path}`, '--', 'unshare', '--mount', '--propagation', 'private', '--', 'bash', scriptFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    env: { ...process.env, FAULTLINE_DEBUG: '1' },
  })
  let output = ''
  // FAULTLINE_DOC_TEST_VERBOSE=1 shows the page's shell as it runs.
  const echo = process.env.FAULTLINE_DOC_TEST_VERBOSE === '1'
  const collect = (c: Buffer) => {
    output += c.toString()
    if (echo) process.stderr.write(c)
  }
  child.stdout.on('data', collect)
  child.stderr.on('data', collect)
  // 'exit', not 'close': processes a page leaves in the background (its `sleep 600 &`) hold the
  // pipes open until teardown kills them. What bash printed last is read before it is judged.
  const done = new Promise<void>((resolve) =>
    child.on('exit', () => {
      const settle = Date.now() + 2_000
      const poll = () => (output.includes('::done') || Date.now() > settle ? resolve() : setTimeout(poll, 20))
      poll()
    }),
  )
  t.teardown(async () => {
    // Whatever a failed page left running: its agents and servers (SIGTERM: they recover what
    // they hold), then every process of the page's shell.
    for (const kind of ['agent', 'server']) {
      try {
        const pid = Number(readFileSync(join(sandbox, 'procs', `${kind}.pid`), 'utf8'))
        process.kill(pid, 'SIGTERM')
        for (let i = 0; i < 1500; i++) {
          process.kill(pid, 0)
          await new Promise((r) => setTimeout(r, 100))
        }
      } catch {
        /* not running */
      }
    }
    try {
      process.kill(-child.pid!, 'SIGKILL')
    } catch {
      /* gone */
    }
    for (const name of ['postgres', 'nginx', 'redis-server', 'queue-worker']) {
      try {
        process.kill(Number(readFileSync(join(fakes, `${name}.pid`), 'utf8')), 'SIGKILL')
      } catch {
        /* gone */
      }
    }
    await done
  })
  await done

  const outcomes: SessionResult['outcomes'] = []
  const failed = /^::failed (-?\d+) (\d+) (.*)$/m.exec(output)
  blocks.forEach((block, i) => {
    if (block.mode === 'skip' || (block.mode === 'docker' && !opts.docker)) outcomes.push({ block, outcome: 'skipped', detail: block.mode === 'skip' ? block.note : 'docker is not available' })
    else if (output.includes(`::ok ${i}\n`)) outcomes.push({ block, outcome: 'ok' })
    else if (failed && Number(failed[1]) === i) {
      const line = block.mode === 'instead' ? block.line : block.line + Number(failed[2]) - starts[i]!
      outcomes.push({ block, outcome: 'failed', detail: `${block.file}:${line}: ${failed[3]}` })
    } else outcomes.push({ block, outcome: 'not-run', detail: failed ? 'an earlier block failed' : 'the page stopped before it' })
  })
  return { outcomes, output }
}

/** Why docker blocks cannot run here, or undefined. */
export function dockerUnavailable(): string | undefined {
  return runtimeUnavailable('docker')
}

/**
 * One tap test per page of a group: every runnable block must work as written; skipped ones are
 * listed with their reason. Needs root (namespaces, mounts, a cgroup).
 */
export function testPages(tap: typeof import('tap').default, group: string): void {
  if (process.getuid?.() !== 0) {
    tap.plan(0, 'needs root (network and mount namespaces, a cgroup)')
    return
  }
  for (const file of pageGroups[group]!) {
    tap.test(`${file}: every example works as written`, async (t) => {
      const blocks = docBlocks(file)
      const wantsDocker = blocks.some((b) => b.mode === 'docker')
      const noDocker = wantsDocker ? dockerUnavailable() : undefined
      if (noDocker && process.env.FAULTLINE_TEST_REQUIRE_RUNTIMES === '1') t.fail(`${file} has docker examples, and docker is not available: ${noDocker}`)
      const { outcomes, output } = await runPage(t, blocks, { docker: wantsDocker && !noDocker })
      for (const o of outcomes) {
        const where = `${file}:${o.block.line}`
        if (o.outcome === 'ok') t.pass(`${where} works as written`)
        else if (o.outcome === 'skipped') t.comment(`${where} not run: ${o.detail}`)
        else t.fail(`${where}: ${o.outcome === 'failed' ? `fails: ${o.detail}` : `not run: ${o.detail}`}`, { output: output.slice(-6000) })
      }
      t.match(output, /^::done$/m, 'the page ran to its end, and its agents and servers stopped')
    })
  }
}
