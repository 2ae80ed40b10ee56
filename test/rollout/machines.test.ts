// The rollout test bed itself (machines.ts): real Debian 12 machines with systemd as PID 1,
// reachable over SSH and Ansible from the lab's namespace, that reach each other, carry nothing
// of this host (no Node.js), and leave nothing behind: after a teardown, after SIGTERM to the
// test process, and after SIGKILL (the next lab removes what a killed process left).
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import t from 'tap'
import { repoRoot } from '../helpers.js'
import { createLab, leftovers, skipUnlessRollout } from './machines.js'

// A cold rootfs build (debootstrap) takes about a minute; each boot a second or two.
t.setTimeout(900_000)

const skip = skipUnlessRollout()

t.test('two machines boot with systemd as PID 1 and reach each other', { skip }, async (t) => {
  const lab = await createLab(t)
  // Booted in parallel, as the rollout tests will.
  const [alpha, beta] = await Promise.all([lab.boot('alpha'), lab.boot('beta')])
  t.equal(alpha.ip, '10.200.240.11')
  t.equal(beta.ip, '10.200.240.12')

  for (const m of [alpha, beta]) {
    t.equal((await m.check('readlink /proc/1/exe')).trim(), '/usr/lib/systemd/systemd', `${m.name}: PID 1 is systemd`)
    t.equal((await m.check('ps -p 1 -o comm=')).trim(), 'systemd', `${m.name}: ps agrees`)
    t.equal((await m.check('systemctl is-active multi-user.target')).trim(), 'active', `${m.name}: multi-user.target reached`)
    t.equal((await m.check('systemctl is-active ssh.service')).trim(), 'active', `${m.name}: sshd is a systemd service`)
    t.equal((await m.check('hostname')).trim(), m.name, `${m.name}: hostname`)
    t.match(await m.check('cat /etc/os-release'), /^VERSION_ID="12"$/m, `${m.name}: Debian 12`)
    const node = await m.run('command -v node')
    t.not(node.code, 0, `${m.name}: no node (${node.stdout.trim() || 'not found'})`)
    // What the .deb depends on is there already: the machines have no mirror.
    await m.check('dpkg-query -W libc6 libgcc-s1 libstdc++6 libnetfilter-queue1 adduser iproute2 nftables procps python3')
    // The agent changes its own network namespace: nft and tc must work as root inside.
    await m.check('nft add table inet fl_probe && nft list table inet fl_probe && nft delete table inet fl_probe')
    await m.check('tc qdisc add dev lo root tbf rate 1mbit burst 32kbit latency 400ms && tc qdisc del dev lo root')
  }

  // Each reaches the other by address and by name (/etc/hosts), on sshd's port.
  t.match(await alpha.check(`timeout 5 bash -c 'exec 3<>/dev/tcp/${beta.ip}/22 && head -c 8 <&3'`), /^SSH-2\.0/, 'alpha reaches beta:22 by address')
  t.match(await beta.check(`timeout 5 bash -c 'exec 3<>/dev/tcp/alpha/22 && head -c 8 <&3'`), /^SSH-2\.0/, 'beta reaches alpha:22 by name')
  t.match(await alpha.check('getent hosts beta'), new RegExp(`^${beta.ip.replace(/\./g, '\\.')}\\s+beta`), 'alpha resolves beta')

  // The lab's namespace reaches sshd directly too (what Ansible does), and the host does not.
  const banner = await lab.exec(['bash', '-c', `exec 3<>/dev/tcp/${alpha.ip}/22 && head -c 8 <&3`], { timeoutMs: 10_000 })
  t.match(banner.stdout, /^SSH-2\.0/, 'sshd answers in the lab netns')

  // run: exit codes, stdin, environment of the remote shell.
  t.equal((await alpha.run('exit 3')).code, 3, 'run returns the exit code')
  t.equal(await alpha.check('cat', { input: 'through stdin' }), 'through stdin', 'input reaches stdin')
  await t.rejects(alpha.check('echo out; echo err >&2; exit 4'), /exited 4[\s\S]*out[\s\S]*err/, 'check throws with code, stdout and stderr')

  // copyTo
  const local = join(lab.dir, 'payload.txt')
  writeFileSync(local, 'copied\n')
  await alpha.copyTo(local, '/root/payload.txt')
  t.equal(await alpha.check('cat /root/payload.txt'), 'copied\n', 'copyTo')

  // The machines have no mirror: a package with the .deb's relations installs from what is there.
  const stubDeb = buildStubDeb(lab.dir)
  await alpha.copyTo(stubDeb, '/root/faultline-stub.deb')
  await alpha.check('apt-get install -y ./faultline-stub.deb && dpkg-query -W -f "\\${Status}" faultline-stub')
  t.pass('apt-get installs a package with the Depends of packaging/deb/control.in offline')

  // Ansible, as the rollout tests run it: from the lab netns with ansibleEnv() and an inventory.
  const inventory = lab.writeInventory({ faultline_agents: [alpha, beta], faultline_servers: [alpha] })
  const playbook = join(lab.dir, 'probe.yml')
  writeFileSync(
    playbook,
    [
      '- name: Probe',
      '  hosts: faultline_agents',
      '  gather_facts: true',
      '  tasks:',
      '    - name: Facts say systemd and Debian 12',
      '      ansible.builtin.assert:',
      '        that:',
      '          - ansible_facts.service_mgr == "systemd"',
      '          - ansible_facts.distribution_major_version == "12"',
      '          - ansible_facts.hostname == inventory_hostname',
      '',
    ].join('\n'),
  )
  const play = await lab.exec(['ansible-playbook', '-i', inventory, playbook], { env: lab.ansibleEnv(), cwd: lab.dir })
  t.equal(play.code, 0, `ansible-playbook succeeds:\n${play.stdout}\n${play.stderr}`)
  t.match(play.stdout, /alpha\s+: ok=2\s+changed=0\s+unreachable=0\s+failed=0/, 'alpha: ok')
  t.match(play.stdout, /beta\s+: ok=2\s+changed=0\s+unreachable=0\s+failed=0/, 'beta: ok')

  // reboot: systemd reboots, the lab starts the machine again; /run is new, the disk is kept.
  await beta.check('touch /run/before-reboot /root/before-reboot')
  await beta.reboot()
  t.equal((await beta.run('test -e /run/before-reboot')).code, 1, 'after reboot: a fresh /run')
  t.equal((await beta.run('test -e /root/before-reboot')).code, 0, 'after reboot: the disk kept')
  t.equal((await beta.check('systemctl is-active multi-user.target')).trim(), 'active', 'after reboot: multi-user.target again')

  // stop: powered off, idempotent, gone from the network.
  await beta.stop()
  await beta.stop()
  t.not((await beta.run('true', { timeoutMs: 15_000 })).code, 0, 'a stopped machine does not answer')
  t.equal((await alpha.check('hostname')).trim(), 'alpha', 'the other machine still runs')
})

t.test('every machine starts from the pristine image', { skip }, async (t) => {
  const lab = await createLab(t)
  const m = await lab.boot('gamma')
  t.equal((await m.run('test -e /root/payload.txt')).code, 1, 'nothing from the earlier lab')
  t.equal((await m.check('hostname')).trim(), 'gamma')
  const [first, second] = [await m.check('cat /etc/machine-id'), await m.check('cat /etc/ssh/ssh_host_ed25519_key.pub')]
  t.match(first, /^[0-9a-f]{32}\n$/, 'its own machine-id')
  t.match(second, /^ssh-ed25519 /, 'its own host key')
})

t.test('a torn-down lab leaves nothing behind', { skip }, async (t) => {
  await t.test('a lab with a machine', async (t) => {
    const lab = await createLab(t)
    await lab.boot('delta')
    const state = leftovers()
    for (const kind of ['netns', 'mount', 'cgroup', 'process', 'dir']) {
      t.ok(state.some((line) => line.startsWith(`${kind}: `)), `while it runs, leftovers() lists its ${kind}`)
    }
  })
  t.same(leftovers(), [], 'after its teardown: nothing')
})

/** An empty .deb with the Depends and Recommends of the real one (packaging/deb/control.in). */
function buildStubDeb(dir: string): string {
  const control = readFileSync(join(repoRoot, 'packaging', 'deb', 'control.in'), 'utf8')
  const relations = control.split('\n').filter((line) => /^(Pre-)?Depends:|^Recommends:/.test(line))
  const root = join(dir, 'stub-deb')
  mkdirSync(join(root, 'DEBIAN'), { recursive: true })
  writeFileSync(
    join(root, 'DEBIAN', 'control'),
    ['Package: faultline-stub', 'Version: 0.0.1', 'Architecture: amd64', 'Maintainer: Faultline tests <tests@example.invalid>', ...relations, 'Description: relations of faultline, nothing else', ''].join('\n'),
  )
  const deb = join(dir, 'faultline-stub.deb')
  execFileSync('dpkg-deb', ['--root-owner-group', '--build', root, deb], { stdio: 'ignore' })
  return deb
}

/** A separate Node process that makes a lab with one machine, says "ready" and waits. */
function labInChildProcess() {
  const code = [
    `const { createLab } = await import(${JSON.stringify(pathToFileURL(join(repoRoot, 'test', 'rollout', 'machines.ts')).href)})`,
    'const lab = await createLab({ teardown() {}, comment() {} })',
    "await lab.boot('orphan')",
    "console.log('ready')",
    'setInterval(() => {}, 1000)',
  ].join('\n')
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '--eval', code], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => c.toString().includes('ready') && resolve())
    void exited.then(({ code }) => reject(new Error(`the child exited ${code} before it was ready: ${stderr}`)))
  })
  return { child, ready, exited }
}

t.test('SIGTERM to the test process removes its labs', { skip }, async (t) => {
  const proc = labInChildProcess()
  t.teardown(() => proc.child.kill('SIGKILL'))
  await proc.ready
  t.ok(leftovers({ all: true }).some((line) => line.includes(`fl-roll-${proc.child.pid}-`)), 'the child has a lab')
  proc.child.kill('SIGTERM')
  const { signal } = await proc.exited
  t.equal(signal, 'SIGTERM', 'it still dies of the signal')
  t.same(leftovers(), [], 'its lab is gone')
})

t.test('the next lab removes what a killed process left', { skip }, async (t) => {
  const proc = labInChildProcess()
  t.teardown(() => proc.child.kill('SIGKILL'))
  await proc.ready
  proc.child.kill('SIGKILL')
  await proc.exited
  // (A lab that another test process creates just now may have removed it already.)
  const orphaned = leftovers().filter((line) => line.includes(`fl-roll-${proc.child.pid}-`))
  if (orphaned.length > 0) t.pass(`SIGKILL left its lab behind: ${orphaned.length} items`)
  else t.comment('a concurrent lab removed the killed process\'s lab already')
  await t.test('a new lab', async (t) => {
    await createLab(t)
    t.notOk(leftovers().some((line) => line.includes(`fl-roll-${proc.child.pid}-`)), 'the orphaned lab is gone')
  })
  t.same(leftovers(), [], 'nothing left')
})
