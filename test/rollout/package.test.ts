// The .deb that `npm run package` builds, looked at from outside: what dpkg will install, what it
// depends on, which files are conffiles, and that lintian finds no error in it. That it installs
// and runs on a Debian 12 machine without Node.js, upgrades and purges cleanly is shown by
// rollout.test.ts on real systemd machines.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import t from 'tap'
import { repoRoot, tmpDir } from '../helpers.js'

t.setTimeout(900_000)

const missing = ['dpkg-deb', 'lintian', 'fakeroot'].filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0)
const required = process.env.FAULTLINE_TEST_REQUIRE_ROLLOUT === '1'
if (missing.length > 0 && required) t.fail(`${missing.join(', ')} missing, and FAULTLINE_TEST_REQUIRE_ROLLOUT=1: CI must install them`)
const skip = missing.length > 0 ? `${missing.join(', ')} not installed (apt-get install dpkg lintian fakeroot)` : false

function run(cmd: string, args: string[], opts: { timeout?: number } = {}): string {
  const res = spawnSync(cmd, args, { encoding: 'utf8', cwd: repoRoot, timeout: opts.timeout ?? 600_000, maxBuffer: 256 * 1024 * 1024 })
  if (res.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${res.status ?? res.signal}:\n${res.stdout}\n${res.stderr}`)
  return res.stdout
}

t.test('npm run package', { skip }, async (t) => {
  t.ok(existsSync(`${repoRoot}/dist/cli/main.js`), 'built (npm test builds first)')
  const out = tmpDir(t, 'fl-package-')
  const deb = run('bash', ['scripts/package.sh', '--no-build', '--fast', '--version', '0.1.0+pkgtest', '--out', out]).trim().split('\n').pop() ?? ''
  t.equal(deb, `${out}/faultline_0.1.0+pkgtest_amd64.deb`, 'prints the file it made')

  const info = run('dpkg-deb', ['--field', deb])
  t.match(info, /^Package: faultline$/m)
  t.match(info, /^Version: 0\.1\.0\+pkgtest$/m, '--version is the package version')
  t.match(info, /^Architecture: amd64$/m)
  const depends = /^Depends: (.*)$/m.exec(info)?.[1] ?? ''
  for (const dep of ['libc6', 'libstdc++6', 'libnetfilter-queue1', 'libfuse3-3', 'iproute2', 'nftables', 'procps', 'adduser']) {
    t.ok(depends.split(/,\s*/).some((d) => d.split(' ')[0] === dep), `Depends: ${dep}`)
  }
  t.notMatch(depends, /nodejs/, 'no Node.js from the host')

  const files = run('dpkg-deb', ['--contents', deb])
  for (const path of ['./usr/bin/faultline', './opt/faultline/bin/node', './opt/faultline/dist/cli/main.js', './opt/faultline/package.json',
    './opt/faultline/native/nsexec/build/faultline-nsexec', './opt/faultline/node_modules/better-sqlite3/build/Release/better_sqlite3.node',
    './lib/systemd/system/faultline-agent.service', './lib/systemd/system/faultline-server.service',
    './etc/faultline/agent.yaml', './etc/faultline/server.yaml', './usr/share/man/man1/faultline.1.gz', './usr/share/doc/faultline/copyright']) {
    t.match(files, new RegExp(` ${path.replace(/[.+]/g, '\\$&')}$`, 'm'), path)
  }
  // The dashboard the server serves at /: its page, and each script with the .gz copy sent to browsers that take gzip.
  t.match(files, / \.\/opt\/faultline\/dist\/web\/index\.html$/m, 'the dashboard: index.html')
  const scripts = [...files.matchAll(/ \.\/opt\/faultline\/dist\/web\/assets\/([^/\s]+\.js)$/gm)].map((m) => m[1]!)
  t.ok(scripts.length > 0, `the dashboard: scripts under assets/ (${scripts.join(', ')})`)
  for (const script of scripts) t.match(files, new RegExp(` \\./opt/faultline/dist/web/assets/${script.replace(/[.]/g, '\\.')}\\.gz$`, 'm'), `the dashboard: ${script}.gz`)
  t.notMatch(files, /\.ts$|\.d\.ts$|\/test\/|\/src\/.*\.c$/m, 'no sources, typings or tests')
  t.notMatch(files, /koffi-(?!linux-x64)|musl/, 'one platform of koffi')

  const control = tmpDir(t, 'fl-package-control-')
  run('dpkg-deb', ['--control', deb, control])
  t.equal(run('cat', [`${control}/conffiles`]), '/etc/faultline/agent.yaml\n/etc/faultline/server.yaml\n/etc/faultline/policy.yaml.example\n', 'conffiles: an upgrade keeps the edits')
  for (const script of ['postinst', 'prerm', 'postrm']) t.ok(existsSync(`${control}/${script}`), script)

  // lintian exits 1 on errors (and, in some versions, on warnings): read its tags instead.
  const lint = spawnSync('lintian', ['--no-tag-display-limit', deb], { encoding: 'utf8', timeout: 600_000, maxBuffer: 64 * 1024 * 1024 })
  t.equal(lint.signal, null, 'lintian finished')
  const errors = lint.stdout.split('\n').filter((line) => line.startsWith('E: '))
  t.same(errors, [], 'lintian: no error')
  t.comment(`lintian: ${lint.stdout.split('\n').filter((line) => line.startsWith('W: ')).length} warnings, ${errors.length} errors`)
})
