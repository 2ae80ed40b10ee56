// The Ansible collection passes ansible-lint's strictest profile and both playbooks parse against
// the example inventory. That they work is shown by rollout.test.ts on real machines.
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { repoRoot, tmpDir } from '../helpers.js'

t.setTimeout(600_000)

const has = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0
const missing = ['ansible-lint', 'ansible-playbook'].filter((tool) => !has(tool))
if (missing.length > 0 && process.env.FAULTLINE_TEST_REQUIRE_ROLLOUT === '1') {
  t.fail(`${missing.join(', ')} missing, and FAULTLINE_TEST_REQUIRE_ROLLOUT=1: CI must install them`)
}
const skip = missing.length > 0 ? `${missing.join(', ')} not installed (apt-get install ansible-core ansible-lint)` : false
const ansible = `${repoRoot}/ansible`
// No user or system configuration changes what is checked (an empty ansible.cfg of the test's
// own: ansible-core refuses /dev/null for its extension), and nothing is fetched from Galaxy.
const emptyCfg = join(tmpDir(t, 'fl-ansible-lint-'), 'ansible.cfg')
writeFileSync(emptyCfg, '[defaults]\n')
const env = { ...process.env, ANSIBLE_CONFIG: emptyCfg, ANSIBLE_NOCOLOR: '1', NO_COLOR: '1', HOME: process.env.HOME ?? '/root' }

t.test('ansible-lint --profile production finds nothing', { skip }, async (t) => {
  const res = spawnSync('ansible-lint', ['--offline', '--profile', 'production', '--nocolor'], { cwd: ansible, env, encoding: 'utf8', timeout: 540_000 })
  const output = `${res.stdout}\n${res.stderr}`.trim()
  t.equal(res.status, 0, output)
  t.notMatch(res.stdout, /\S/, 'no violation listed')
})

for (const playbook of ['site.yml', 'uninstall.yml']) {
  t.test(`${playbook} parses`, { skip }, async (t) => {
    const res = spawnSync('ansible-playbook', ['--syntax-check', '-i', 'inventory/example.ini', `playbooks/${playbook}`], { cwd: ansible, env, encoding: 'utf8', timeout: 120_000 })
    t.equal(res.status, 0, `${res.stdout}\n${res.stderr}`)
  })
}
