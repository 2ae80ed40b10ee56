// The systemd unit passes `systemd-analyze verify` (offline). Warnings exit 0, so any output
// at all counts as a failure. ExecStart is pointed at an executable that exists here.
import { spawnSync } from 'node:child_process'
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import t from 'tap'
import { repoRoot, tmpDir } from '../helpers.js'

const analyze = spawnSync('systemd-analyze', ['--version']).status === 0

t.test('faultline-agent.service verifies cleanly', { skip: analyze ? false : 'systemd-analyze is not installed (apt-get install systemd)' }, async (t) => {
  const dir = tmpDir(t)
  const unit = readFileSync(`${repoRoot}/systemd/faultline-agent.service`, 'utf8')
  t.match(unit, /ExecStart=\/usr\/local\/bin\/faultline agent /)
  const fakeBin = `${dir}/faultline`
  writeFileSync(fakeBin, '#!/bin/sh\nexit 0\n')
  chmodSync(fakeBin, 0o755)
  writeFileSync(`${dir}/faultline-agent.service`, unit.replace('/usr/local/bin/faultline', fakeBin))
  const res = spawnSync('systemd-analyze', ['verify', '--man=no', `${dir}/faultline-agent.service`], { encoding: 'utf8' })
  const output = (res.stdout + res.stderr).trim()
  t.equal(res.status, 0)
  t.equal(output, '', 'no warnings at all')
})
