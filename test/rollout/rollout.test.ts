// The Ansible collection (ansible/) on real Debian 12 machines with systemd (machines.ts): a
// server and two agents rolled out from the .deb, faults through the server and locally, a kill -9
// of an agent, a second run that changes nothing, an upgrade one agent at a time with faults
// active, a check run, and the uninstall playbook, after which nothing of Faultline is left.
// Needs root, systemd-nspawn, debootstrap and ansible-core (skipped without them, unless
// FAULTLINE_TEST_REQUIRE_ROLLOUT=1). Takes several minutes: the timings are printed as comments.
import { spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { repoRoot, tmpDir } from '../helpers.js'
import { createLab, leftovers, skipUnlessRollout, type Lab, type Machine } from './machines.js'

t.setTimeout(60 * 60_000)

const skip = skipUnlessRollout()
const baseVersion = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version
const newVersion = `${baseVersion}+rollout1`
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function run(argv: string[], cwd = repoRoot): string {
  const res = spawnSync(argv[0]!, argv.slice(1), { cwd, encoding: 'utf8', timeout: 600_000, maxBuffer: 64 * 1024 * 1024 })
  if (res.status !== 0) throw new Error(`${argv.join(' ')} exited ${res.status ?? res.signal}:\n${res.stdout}\n${res.stderr}`)
  return res.stdout
}

interface Recap {
  ok: number
  changed: number
  unreachable: number
  failed: number
}

/** The PLAY RECAP lines of an ansible-playbook run, by host. */
function recap(output: string): Record<string, Recap> {
  const hosts: Record<string, Recap> = {}
  for (const m of output.matchAll(/^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)/gm)) {
    hosts[m[1]!] = { ok: Number(m[2]), changed: Number(m[3]), unreachable: Number(m[4]), failed: Number(m[5]) }
  }
  return hosts
}

/** The state letter of a process on a machine (R, S, T, ...), or '' when it is gone. */
async function procState(m: Machine, pid: number): Promise<string> {
  const res = await m.run(`cat /proc/${pid}/stat`)
  if (res.code !== 0) return ''
  const stat = res.stdout
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? ''
}

async function waitFor(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await probe()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(250)
  }
}

/** A `sleep 1000` in a transient unit of its own on the machine; returns its pid. */
async function victim(m: Machine, unit: string): Promise<number> {
  await m.check(`systemd-run --quiet --unit ${unit} sleep 1000`)
  return Number((await m.check(`systemctl show -p MainPID --value ${unit}`)).trim())
}

/** Journal lines of faultline-agent since an epoch second, as [time in ms, message]. */
async function agentJournal(m: Machine, sinceEpoch: number): Promise<[number, string][]> {
  const out = await m.check(`journalctl -u faultline-agent.service --since @${sinceEpoch} -o short-iso-precise --no-pager`)
  return out
    .split('\n')
    .map((line) => /^(\S+)\s+\S+\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && !Number.isNaN(Date.parse(m[1]!)))
    .map((m) => [Date.parse(m[1]!), m[2]!])
}

t.test('the Ansible collection on real machines', { skip }, async (t) => {
  // 1. Two packages of the same code: the release and a newer version of it.
  const pkgDir = tmpDir(t, 'fl-rollout-pkg-')
  let started = Date.now()
  const deb = run(['bash', 'scripts/package.sh', '--no-build', '--fast', '--out', pkgDir]).trim().split('\n').pop()!
  const debNew = run(['bash', 'scripts/package.sh', '--no-build', '--fast', '--version', newVersion, '--out', pkgDir]).trim().split('\n').pop()!
  t.comment(`two packages (--fast) in ${Date.now() - started} ms: ${(statSync(deb).size / 2 ** 20).toFixed(1)} MiB each`)

  const lab: Lab = await createLab(t)
  started = Date.now()
  const srv = await lab.boot('srv')
  const agent1 = await lab.boot('agent1')
  const agent2 = await lab.boot('agent2')
  const machines = [srv, agent1, agent2]
  const agents = [agent1, agent2]
  t.comment(`3 machines booted in ${Date.now() - started} ms`)

  // 2. A throwaway PKI, tokens, the inventory and the variables.
  const pki = join(lab.dir, 'pki')
  mkdirSync(pki)
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  run(['openssl', 'req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=rollout-ca'], pki)
  run(['openssl', 'req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=srv'], pki)
  writeFileSync(join(pki, 'san.ext'), `subjectAltName=IP:${srv.ip},DNS:srv\n`)
  run(['openssl', 'x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'san.ext'], pki)
  const token = () => run(['openssl', 'rand', '-hex', '32']).trim()
  const vars = {
    faultline_package_file: deb,
    faultline_admin_token: token(),
    faultline_enrol_token: token(),
    faultline_server_tls_cert_file: join(pki, 'server.crt'),
    faultline_server_tls_key_file: join(pki, 'server.key'),
    faultline_ca_file: join(pki, 'ca.crt'),
    faultline_upgrade_batch: 1,
  }
  const varsFile = join(lab.dir, 'vars.json')
  const varsNewFile = join(lab.dir, 'vars-new.json')
  writeFileSync(varsFile, JSON.stringify(vars), { mode: 0o600 })
  writeFileSync(varsNewFile, JSON.stringify({ ...vars, faultline_package_file: debNew }), { mode: 0o600 })
  const invDir = join(lab.dir, 'inventory')
  mkdirSync(join(invDir, 'host_vars'), { recursive: true })
  mkdirSync(join(invDir, 'group_vars'), { recursive: true })
  const inventory = lab.writeInventory({ faultline_servers: [srv], faultline_agents: agents }, join(invDir, 'hosts.ini'))
  // The machines let root in over SSH and have no sudo: the playbooks' become is not needed.
  writeFileSync(join(invDir, 'group_vars', 'all.yml'), 'ansible_become: false\n')
  writeFileSync(join(invDir, 'host_vars', 'agent1.yml'), 'faultline_agent_labels: {role: db, zone: a}\n')
  writeFileSync(join(invDir, 'host_vars', 'agent2.yml'), 'faultline_agent_labels: {role: web, zone: b}\n')
  const env = lab.ansibleEnv()

  let playbookRuns = 0
  async function playbook(name: string, extra: string[] = []): Promise<{ output: string; ms: number; hosts: Record<string, Recap> }> {
    const begin = Date.now()
    const res = await lab.exec(['ansible-playbook', '-i', inventory, `ansible/playbooks/${name}`, ...extra], { env, cwd: repoRoot, timeoutMs: 20 * 60_000 })
    const output = `${res.stdout}\n${res.stderr}`
    writeFileSync(join(lab.dir, `playbook-${++playbookRuns}-${name}.log`), output)
    if (res.code !== 0) t.comment(`ansible-playbook ${name} ${extra.join(' ')} exited ${res.code}:\n${output.split('\n').slice(-80).join('\n')}`)
    return { output, ms: Date.now() - begin, hosts: recap(output) }
  }
  function recapClean(t: Test, hosts: Record<string, Recap>, changedNone = false): void {
    for (const m of machines) {
      const r = hosts[m.name]
      t.ok(r, `${m.name} in the recap`)
      if (!r) continue
      t.equal(r.failed, 0, `${m.name}: failed=0`)
      t.equal(r.unreachable, 0, `${m.name}: unreachable=0`)
      if (changedNone) t.equal(r.changed, 0, `${m.name}: changed=0`)
    }
  }

  const cli = `env FAULTLINE_SERVER=https://${srv.ip}:7071 FAULTLINE_SERVER_TOKEN_FILE=/etc/faultline/admin-token FAULTLINE_SERVER_CA=/etc/faultline/ca.crt faultline`
  interface AgentRow {
    id: string
    connected: boolean
    labels: Record<string, string>
    version: string
  }
  const agentsLs = async (): Promise<AgentRow[]> => (JSON.parse(await srv.check(`${cli} agents ls --json`)) as { agents: AgentRow[] }).agents

  // A check run on machines that have nothing yet: it says what it would do and changes nothing.
  await t.test('--check --diff on fresh machines', async (t) => {
    const { hosts, output } = await playbook('site.yml', ['-e', `@${varsFile}`, '--check', '--diff'])
    recapClean(t, hosts)
    t.match(output, /\+server: "wss:\/\/10\.200\.240\.\d+:7071"/, 'the diff shows agent.yaml as it would be')
    t.notMatch(output, new RegExp(`${vars.faultline_admin_token}|${vars.faultline_enrol_token}`), 'no token in the output')
    for (const m of machines) t.not((await m.run('test -e /usr/bin/faultline || test -e /etc/faultline')).code, 0, `nothing written on ${m.name}`)
  })

  // 3. A fresh rollout. The steps after it need it: they are skipped when it failed.
  let freshOk = false
  await t.test('fresh rollout with site.yml', async (t) => {
    const { hosts, ms } = await playbook('site.yml', ['-e', `@${varsFile}`])
    t.comment(`fresh rollout (server + 2 agents): ${(ms / 1000).toFixed(1)} s`)
    recapClean(t, hosts)
    for (const a of agents) {
      t.equal((await a.check('faultline --version')).trim(), baseVersion, `faultline --version on ${a.name}`)
      t.not((await a.run('command -v node')).code, 0, `no node on ${a.name}`)
      t.equal((await a.run('systemctl is-active faultline-agent')).stdout.trim(), 'active', `faultline-agent active on ${a.name}`)
      t.equal((await a.run('systemctl is-enabled faultline-agent')).stdout.trim(), 'enabled', `faultline-agent enabled on ${a.name}`)
    }
    t.equal((await srv.run('systemctl is-active faultline-server')).stdout.trim(), 'active', 'faultline-server active')
    const list = await agentsLs()
    t.match(list.find((a) => a.id === 'agent1'), { connected: true, labels: { role: 'db', zone: 'a' }, version: baseVersion }, 'agent1 connected, with its labels')
    t.match(list.find((a) => a.id === 'agent2'), { connected: true, labels: { role: 'web', zone: 'b' }, version: baseVersion }, 'agent2 connected, with its labels')
    const pid = (await srv.check('systemctl show -p MainPID --value faultline-server')).trim()
    const uid = /^Uid:\s+(\d+)/m.exec(await srv.check(`cat /proc/${pid}/status`))?.[1]
    t.ok(uid !== undefined && uid !== '0', `the server runs as uid ${uid}, not root`)
    const modes = await srv.check('stat -c "%n %a %U:%G" /etc/faultline/admin-token /etc/faultline/enrol-token /etc/faultline/server.key /etc/faultline/server.crt /etc/faultline/ca.crt')
    t.match(modes, /admin-token 600 root:root/)
    t.match(modes, /enrol-token 600 root:root/)
    t.match(modes, /server\.key 600 root:root/)
    t.match(modes, /server\.crt 644 root:root/)
    t.match(modes, /ca\.crt 644 root:root/)
    freshOk = t.passing()
  })
  const later = () => (freshOk ? false : 'the fresh rollout failed')

  // 4. The units, as systemd judges them on a real machine.
  await t.test('systemd-analyze security and verify', { skip: later() }, async (t) => {
    for (const [m, unit] of [[agent1, 'faultline-agent.service'], [srv, 'faultline-server.service']] as const) {
      const out = (await m.run(`systemd-analyze security --no-pager ${unit}`)).stdout
      const score = /Overall exposure level for \S+: ([\d.]+) (\S+)/.exec(out)
      t.ok(score, `${unit}: an exposure score`)
      t.comment(`systemd-analyze security ${unit}: ${score?.[1]} ${score?.[2]}`)
      // --man=no: the machines have no man(1) to look up the Documentation= page with.
      const verify = await m.run(`systemd-analyze verify --man=no ${unit}`)
      t.equal(verify.code, 0, `systemd-analyze verify ${unit}`)
      t.equal(`${verify.stdout}${verify.stderr}`.trim(), '', `${unit} (with its drop-ins) verifies without a word`)
    }
  })

  // 5. An experiment through the server, and a halt.
  await t.test('process-stop through the server, then halt --all', { skip: later() }, async (t) => {
    const pid = await victim(agent1, 'fl-victim')
    const experiment = `name: rollout-stop\nhosts: { names: [agent1] }\ntarget: { type: process, pid: ${pid} }\nfault: { kind: process-stop }\nduration: 10m\n`
    await srv.check(`${cli} exp apply -f -`, { input: experiment })
    const runId = (await srv.check(`${cli} exp run rollout-stop --detach`)).trim()
    t.ok(runId, `run ${runId}`)
    await waitFor('the victim to be stopped', 30_000, async () => (await procState(agent1, pid)) === 'T')
    t.equal(await procState(agent1, pid), 'T', 'stopped on agent1')
    await srv.check(`${cli} halt --all`)
    await waitFor('the victim to run again', 30_000, async () => (await procState(agent1, pid)) === 'S')
    t.equal(await procState(agent1, pid), 'S', 'halt --all resumed it')
    await agent1.run('systemctl stop fl-victim')
  })

  // 6. kill -9 of an agent that holds a fault: systemd restarts it, and it recovers the fault.
  await t.test('systemctl kill -s KILL faultline-agent recovers the injection', { skip: later() }, async (t) => {
    const pid = await victim(agent2, 'fl-victim')
    await agent2.check(`faultline inject process-stop --target process:${pid} --duration 30m --detach`)
    t.equal(await procState(agent2, pid), 'T', 'stopped')
    const before = (await agent2.check('systemctl show -p MainPID --value faultline-agent')).trim()
    await agent2.check('systemctl kill -s KILL faultline-agent')
    await waitFor('a new agent', 60_000, async () => {
      const now = (await agent2.run('systemctl show -p MainPID --value faultline-agent')).stdout.trim()
      return now !== before && now !== '0' && (await agent2.run('systemctl is-active faultline-agent')).stdout.trim() === 'active'
    })
    t.pass(`restarted by systemd (MainPID ${before} -> ${(await agent2.check('systemctl show -p MainPID --value faultline-agent')).trim()})`)
    await waitFor('the victim to run again', 30_000, async () => (await procState(agent2, pid)) === 'S')
    t.equal(await procState(agent2, pid), 'S', 'the new agent recovered it')
    await agent2.run('systemctl stop fl-victim')
  })

  // 7. File faults act on the host's files, not on a private /tmp or /home.
  await t.test('file-delete acts on the host', { skip: later() }, async (t) => {
    await agent1.check('echo rollout > /tmp/x && echo rollout > /home/x')
    for (const path of ['/tmp/x', '/home/x']) {
      await agent1.check(`faultline inject file-delete --target host --path ${path} --duration 10m --detach`)
      t.not((await agent1.run(`test -e ${path}`)).code, 0, `${path} gone from the host`)
    }
    await agent1.check('faultline recover --all')
    for (const path of ['/tmp/x', '/home/x']) t.equal((await agent1.check(`cat ${path}`)).trim(), 'rollout', `${path} restored`)
    await agent1.run('rm -f /tmp/x /home/x')
  })

  // 8. Nothing to do the second time.
  await t.test('a second run changes nothing', { skip: later() }, async (t) => {
    const { hosts, ms } = await playbook('site.yml', ['-e', `@${varsFile}`])
    t.comment(`second run: ${(ms / 1000).toFixed(1)} s`)
    recapClean(t, hosts, true)
  })

  // 9. Upgrade, one agent at a time, each holding a fault.
  await t.test('upgrade one agent at a time', { skip: later() }, async (t) => {
    const victims = new Map<Machine, number>()
    for (const a of agents) {
      const pid = await victim(a, 'fl-upgrade-victim')
      await a.check(`faultline inject process-stop --target process:${pid} --duration 30m --detach`)
      t.equal(await procState(a, pid), 'T', `stopped on ${a.name}`)
      victims.set(a, pid)
    }
    const since = Number((await srv.check('date +%s')).trim()) - 1
    const { hosts, ms } = await playbook('site.yml', ['-e', `@${varsNewFile}`, '-e', 'faultline_upgrade_batch=1'])
    t.comment(`upgrade (server + 2 agents, batch 1): ${(ms / 1000).toFixed(1)} s`)
    recapClean(t, hosts)
    for (const m of machines) t.equal((await m.check('faultline --version')).trim(), newVersion, `${m.name} runs ${newVersion}`)
    for (const [a, pid] of victims) t.equal(await procState(a, pid), 'S', `the injection on ${a.name} was recovered`)
    const list = await agentsLs()
    for (const a of agents) t.match(list.find((row) => row.id === a.name), { connected: true, version: newVersion }, `${a.name} connected with ${newVersion}`)

    const windows: [number, number][] = []
    for (const a of agents) {
      const journal = await agentJournal(a, since)
      const stopping = journal.find(([, msg]) => /Stopping faultline-agent\.service/.test(msg))?.[0]
      const startedAt = journal.filter(([, msg]) => /Started faultline-agent\.service/.test(msg)).pop()?.[0]
      t.ok(stopping !== undefined && startedAt !== undefined && startedAt > stopping, `${a.name}: stopped and started again by the upgrade`)
      if (stopping === undefined || startedAt === undefined) continue
      windows.push([stopping, startedAt])
      t.comment(`${a.name}: agent down for the upgrade ${((startedAt - stopping) / 1000).toFixed(2)} s (${new Date(stopping).toISOString()} .. ${new Date(startedAt).toISOString()})`)
    }
    if (windows.length === 2) {
      const [[s1, e1], [s2, e2]] = windows as [[number, number], [number, number]]
      t.ok(e1 < s2 || e2 < s1, 'the two agents were never down at the same time')
      t.comment(`the second agent's upgrade began ${((Math.max(s1, s2) - Math.min(s1, s2)) / 1000).toFixed(1)} s after the first's (one batch: install, restart, seen connected)`)
    }
    for (const a of agents) await a.run('systemctl stop fl-upgrade-victim')
  })

  // 10. A check run on the upgraded fleet finds nothing to do.
  await t.test('--check --diff on the installed fleet', { skip: later() }, async (t) => {
    const { hosts } = await playbook('site.yml', ['-e', `@${varsNewFile}`, '--check', '--diff'])
    recapClean(t, hosts, true)
  })

  // 11. Uninstall leaves nothing.
  await t.test('uninstall.yml leaves nothing of Faultline', { skip: later() }, async (t) => {
    const { hosts, ms } = await playbook('uninstall.yml')
    t.comment(`uninstall: ${(ms / 1000).toFixed(1)} s`)
    recapClean(t, hosts)
    for (const m of machines) {
      t.equal((await m.run(`systemctl list-unit-files --no-legend 'faultline*'`)).stdout.trim(), '', `${m.name}: no faultline unit`)
      t.equal((await m.run(`systemctl list-units --all --no-legend 'faultline*'`)).stdout.trim(), '', `${m.name}: no faultline unit loaded`)
      const paths = '/opt/faultline /etc/faultline /usr/bin/faultline /var/lib/faultline /var/lib/faultline-server /var/lib/private/faultline-server /var/cache/faultline /etc/systemd/system/faultline-server.service.d /run/faultline'
      t.equal((await m.run(`ls -d ${paths} 2>/dev/null`)).stdout.trim(), '', `${m.name}: no file left`)
      t.not((await m.run('getent group faultline')).code, 0, `${m.name}: no faultline group`)
      t.match((await m.run(`dpkg-query -W -f '\${db:Status-Status}' faultline 2>/dev/null`)).stdout.trim(), /^(not-installed)?$/, `${m.name}: package purged`)
      t.equal((await m.run(`nft list tables | grep -i faultline`)).stdout.trim(), '', `${m.name}: no faultline nft table`)
      // The machines see the host's cgroup v1 hierarchies, where the container tests running
      // next to this one keep containerd's "faultline-test" namespace: not the machine's.
      t.equal((await m.run(`find /sys/fs/cgroup -name '*faultline*' ! -name faultline-test`)).stdout.trim(), '', `${m.name}: no faultline cgroup`)
      t.equal((await m.run(`pgrep -a -f '[f]aultline'`)).stdout.trim(), '', `${m.name}: no faultline process`)
    }
  })
})

t.test('no lab state is left on this host', { skip }, async (t) => {
  t.same(leftovers(), [])
})
