// Both units pass `systemd-analyze verify` (offline). Warnings exit 0, so any output at all
// counts as a failure. ExecStart is pointed at an executable that exists here. That they start,
// become ready, stop and are as hardened as `systemd-analyze security` says is shown on real
// systemd machines (test/rollout/).
import { spawnSync } from 'node:child_process'
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import t from 'tap'
import { repoRoot, tmpDir } from '../helpers.js'

const analyze = spawnSync('systemd-analyze', ['--version']).status === 0

for (const name of ['faultline-agent.service', 'faultline-server.service']) {
  t.test(`${name} verifies cleanly`, { skip: analyze ? false : 'systemd-analyze is not installed (apt-get install systemd)' }, async (t) => {
    const dir = tmpDir(t)
    const unit = readFileSync(`${repoRoot}/systemd/${name}`, 'utf8')
    t.match(unit, /^ExecStart=\/usr\/bin\/faultline (agent|server) --config \/etc\/faultline\/(agent|server)\.yaml$/m)
    t.match(unit, /^Type=notify$/m, 'ready when the API answers')
    const fakeBin = `${dir}/faultline`
    writeFileSync(fakeBin, '#!/bin/sh\nexit 0\n')
    chmodSync(fakeBin, 0o755)
    writeFileSync(`${dir}/${name}`, unit.replace('/usr/bin/faultline', fakeBin))
    const res = spawnSync('systemd-analyze', ['verify', '--man=no', `${dir}/${name}`], { encoding: 'utf8' })
    const output = (res.stdout + res.stderr).trim()
    t.equal(res.status, 0)
    t.equal(output, '', 'no warnings at all')
  })
}

t.test('the agent sees the host as it is: nothing in its unit gives it a namespace of its own', async (t) => {
  const unit = readFileSync(`${repoRoot}/systemd/faultline-agent.service`, 'utf8')
  const settings = unit.split('\n').filter((l) => /^[A-Z]\w+=/.test(l)).map((l) => l.split('=')[0]!)
  const namespacing = [
    'PrivateTmp', 'ProtectHome', 'ProtectSystem', 'PrivateDevices', 'PrivateNetwork', 'PrivateUsers', 'PrivateMounts',
    'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectKernelLogs', 'ProtectControlGroups', 'ProtectProc', 'ProcSubset',
    'ProtectClock', 'ProtectHostname', 'ReadOnlyPaths', 'InaccessiblePaths', 'TemporaryFileSystem', 'BindPaths', 'RootDirectory',
    'RestrictNamespaces', 'NetworkNamespacePath', 'JoinsNamespaceOf', 'DynamicUser', 'User',
  ]
  t.same(settings.filter((s) => namespacing.includes(s)), [], 'none of them')
  t.match(unit, /^CapabilityBoundingSet=CAP_SYS_ADMIN /m, 'a bounding set, not every capability')
  t.notMatch(unit, /CAP_SYS_MODULE|CAP_SYS_TIME|CAP_SYS_BOOT/)
})
