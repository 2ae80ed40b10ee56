// Configuration: flags, FAULTLINE_AGENT_* variables and a config file, in that order of precedence;
// each process its own variable names (issue 13, item 10).
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
  const envWins = await parse(['--config', file], { FAULTLINE_AGENT_STATE_DIR: '/from/env', FAULTLINE_AGENT_MAX_DURATION: '3h' })
  t.equal(envWins.stateDir, '/from/env')
  t.equal(envWins.maxDuration, '3h')
  t.equal(envWins.listen, '127.0.0.1:7100', 'the file still fills what env does not set')
  const flagWins = await parse(['--config', file, '--state-dir', '/from/flag'], { FAULTLINE_AGENT_STATE_DIR: '/from/env' })
  t.equal(flagWins.stateDir, '/from/flag')
  const configFromEnv = await parse([], { FAULTLINE_AGENT_CONFIG: file })
  t.equal(configFromEnv.stateDir, '/from/file', 'the config file itself can come from FAULTLINE_AGENT_CONFIG')
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
  const config = await parse(['--config', file, '--containerd-socket', '/srv/containerd.sock'], { FAULTLINE_AGENT_PODMAN_SOCKET: '/srv/podman.sock' })
  t.match(config, { dockerSocket: '/srv/docker.sock', containerdSocket: '/srv/containerd.sock', podmanSocket: '/srv/podman.sock', crioSocket: '/srv/crio.sock' })
  t.notOk('dockerSocket' in (await parse([])), 'unset: the defaults of agent/capabilities/probe.ts apply')
})

t.test("the CLI's variables do not configure the agent, nor the agent's the server", async (t) => {
  // As reported: FAULTLINE_SERVER exported for the CLI made `faultline agent` join that server;
  // FAULTLINE_TLS_CA meant "trust this CA" to the CLI and "require client certificates" to the agent.
  const cli = { FAULTLINE_SERVER: 'https://fleet.example:7071', FAULTLINE_SERVER_CA: '/etc/ca.crt', FAULTLINE_AGENT_CA: '/etc/agent-ca.crt', FAULTLINE_SERVER_TOKEN_FILE: '/etc/token' }
  t.same(await parse([], cli), { stateDir: '/var/lib/faultline', maxDuration: '1h', logLevel: 'info' }, 'the agent reads none of them')
  const own = await parse([], { FAULTLINE_AGENT_SERVER: 'wss://fleet.example:7071', FAULTLINE_AGENT_CLIENT_CA: '/etc/clients.crt', FAULTLINE_AGENT_SERVER_CA: '/etc/ca.crt' })
  t.match(own, { server: 'wss://fleet.example:7071', tlsCa: '/etc/clients.crt', serverCa: '/etc/ca.crt' }, 'its own names')

  const { serverCommand, resolveServerConfig } = await import('../../cli/commands/server.js')
  const parseServer = async (env: Record<string, string>) => {
    const saved = { ...process.env }
    Object.assign(process.env, env)
    try {
      const cmd = serverCommand()
      cmd.action(() => undefined)
      await cmd.parseAsync([], { from: 'user' })
      return resolveServerConfig(cmd)
    } finally {
      for (const k of Object.keys(env)) delete process.env[k]
      Object.assign(process.env, saved)
    }
  }
  const server = await parseServer({ FAULTLINE_AGENT_LISTEN: '0.0.0.0:1', FAULTLINE_AGENT_STATE_DIR: '/x', FAULTLINE_SERVER_LISTEN: '127.0.0.1:7999' })
  t.match(server, { listen: '127.0.0.1:7999', stateDir: '/var/lib/faultline-server' }, "the server reads FAULTLINE_SERVER_*, not the agent's")
})

t.test('a variable no command reads any more is named with its replacement', async (t) => {
  const { runCli } = await import('../helpers.js')
  const res = await runCli(['caps', '--agent', 'unix:/nonexistent/agent.sock'], { env: { FAULTLINE_TLS_CA: '/etc/ca.crt', FAULTLINE_LISTEN: '127.0.0.1:1' } })
  t.match(res.stderr, /warning: FAULTLINE_TLS_CA is not read any more; use FAULTLINE_AGENT_CLIENT_CA or FAULTLINE_SERVER_CLIENT_CA \(require client certificates\), FAULTLINE_AGENT_CA/)
  t.match(res.stderr, /warning: FAULTLINE_LISTEN is not read any more; use FAULTLINE_AGENT_LISTEN or FAULTLINE_SERVER_LISTEN/)
  const agent = await runCli(['agent', '--listen', 'unix:relative.sock'], { env: { FAULTLINE_SERVER: 'http://127.0.0.1:1' } })
  t.match(agent.stderr, /FAULTLINE_SERVER is the CLI's server; this agent joins a server only with --server or FAULTLINE_AGENT_SERVER/)
})
