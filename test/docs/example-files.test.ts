// The example files in examples/ are what a newcomer copies to /etc/faultline: each one must be
// read by the code that reads the real thing, as it is, with no error.
import { copyFileSync, chmodSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { Value } from 'typebox/value'
import { parse as parseYaml } from 'yaml'
import { agentCommand, resolveAgentConfig } from '../../cli/commands/agent.js'
import { resolveServerConfig, serverCommand } from '../../cli/commands/server.js'
import { HostPolicyCheck } from '../../agent/policy.js'
import { ExperimentSchema, type Experiment } from '../../protocol/experiment.js'
import { explainRequest } from '../../protocol/explain.js'
import { checkExperiment } from '../../server/experiment-checks.js'
import { repoRoot, tmpDir } from '../helpers.js'

const examples = join(repoRoot, 'examples')

t.test('examples/agent.yaml is read by faultline agent --config', async (t) => {
  const cmd = agentCommand()
  cmd.action(() => undefined)
  await cmd.parseAsync(['--config', join(examples, 'agent.yaml')], { from: 'user' })
  t.same(resolveAgentConfig(cmd), { stateDir: '/var/lib/faultline', maxDuration: '1h', logLevel: 'info' })
})

t.test('examples/server.yaml is read by faultline server --config', async (t) => {
  const cmd = serverCommand()
  cmd.action(() => undefined)
  await cmd.parseAsync(['--config', join(examples, 'server.yaml')], { from: 'user' })
  t.same(resolveServerConfig(cmd), { listen: '127.0.0.1:7071', stateDir: '/var/lib/faultline-server', lease: '30s', logLevel: 'info' })
})

t.test('examples/policy.yaml loads as a host policy', async (t) => {
  // Copied to a file of our own with the mode the agent requires (owner-writable only).
  const file = join(tmpDir(t), 'policy.yaml')
  copyFileSync(join(examples, 'policy.yaml'), file)
  chmodSync(file, 0o644)
  const policy = HostPolicyCheck.load(file)
  t.match(policy.inForce().rules, { maxDuration: '15m', kinds: ['process-stop', 'process-kill', 'network-delay', 'network-loss', 'network-partition', 'stress-cpu', 'stress-memory'] })
})

for (const name of readdirSync(join(examples, 'experiments'))) {
  t.test(`examples/experiments/${name} is an experiment the server accepts`, async (t) => {
    const spec = parseYaml(readFileSync(join(examples, 'experiments', name), 'utf8')) as Experiment
    t.same(explainRequest(spec, 'server'), [], 'no field issues')
    t.same([...Value.Errors(ExperimentSchema, spec)].map((e) => `${e.instancePath} ${e.message}`), [], 'valid against the schema')
    t.same(checkExperiment(spec, []), [], 'and the checks made at apply pass')
  })
}
