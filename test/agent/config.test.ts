// Configuration: flags, FAULTLINE_* variables and a config file, in that order of precedence.
import { writeFileSync } from 'node:fs'
import t from 'tap'
import { agentCommand, resolveAgentConfig } from '../../cli/commands/agent.js'
import { tmpDir } from '../helpers.js'

async function parse(args: string[], env: Record<string, string> = {}) {
  const saved = { ...process.env }
  Object.assign(process.env, env)
  try {
    const cmd = agentCommand()
    cmd.action(() => undefined)
    await cmd.parseAsync(args, { from: 'user' })
    return resolveAgentConfig(cmd)
  } finally {
    for (const k of Object.keys(env)) delete process.env[k]
    Object.assign(process.env, saved)
  }
}

t.test('defaults', async (t) => {
  // No listen: the agent picks its Unix socket (/run/faultline/agent.sock as root, else in the state dir).
  t.same(await parse([]), { stateDir: '/var/lib/faultline', maxDuration: '1h', logLevel: 'info' })
})

t.test('flag > environment > config file > default', async (t) => {
  const dir = tmpDir(t)
  const file = `${dir}/agent.yaml`
  writeFileSync(file, 'listen: 127.0.0.1:7100\nstate-dir: /from/file\nmaxDuration: 2h\ntoken-file: /etc/token\n')
  const fromFile = await parse(['--config', file])
  t.same(fromFile, { listen: '127.0.0.1:7100', stateDir: '/from/file', maxDuration: '2h', logLevel: 'info', tokenFile: '/etc/token' })
  const envWins = await parse(['--config', file], { FAULTLINE_STATE_DIR: '/from/env', FAULTLINE_MAX_DURATION: '3h' })
  t.equal(envWins.stateDir, '/from/env')
  t.equal(envWins.maxDuration, '3h')
  t.equal(envWins.listen, '127.0.0.1:7100', 'the file still fills what env does not set')
  const flagWins = await parse(['--config', file, '--state-dir', '/from/flag'], { FAULTLINE_STATE_DIR: '/from/env' })
  t.equal(flagWins.stateDir, '/from/flag')
  const configFromEnv = await parse([], { FAULTLINE_CONFIG: file })
  t.equal(configFromEnv.stateDir, '/from/file', 'the config file itself can come from FAULTLINE_CONFIG')
})

t.test('config file errors are clear', async (t) => {
  const dir = tmpDir(t)
  writeFileSync(`${dir}/unknown.yaml`, 'listne: 127.0.0.1:1\n')
  await t.rejects(parse(['--config', `${dir}/unknown.yaml`]), /unknown setting "listne"/)
  writeFileSync(`${dir}/list.yaml`, '- a\n- b\n')
  await t.rejects(parse(['--config', `${dir}/list.yaml`]), /must be a mapping/)
  await t.rejects(parse(['--config', `${dir}/missing.yaml`]), /cannot read config file/)
})

t.test('runtime socket paths: flag, environment or config file', async (t) => {
  const dir = tmpDir(t)
  const file = `${dir}/agent.yaml`
  writeFileSync(file, 'docker-socket: /srv/docker.sock\ncrioSocket: /srv/crio.sock\n')
  const config = await parse(['--config', file, '--containerd-socket', '/srv/containerd.sock'], { FAULTLINE_PODMAN_SOCKET: '/srv/podman.sock' })
  t.match(config, { dockerSocket: '/srv/docker.sock', containerdSocket: '/srv/containerd.sock', podmanSocket: '/srv/podman.sock', crioSocket: '/srv/crio.sock' })
  t.notOk('dockerSocket' in (await parse([])), 'unset: the defaults of agent/capabilities/probe.ts apply')
})
