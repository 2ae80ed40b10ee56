// Every example in `faultline inject <kind> --help` is a request the agent's schema accepts: the
// flags parse, the target shorthand reads, and the body validates (no agent needed).
import { Command } from 'commander'
import t from 'tap'
import { Value } from 'typebox/value'
import { injectCommand, requestFromOptions } from '../../cli/commands/inject.js'
import { faultKinds } from '../../agent/faults/registry.js'
import type { FaultKind } from '../../agent/faults/types.js'
import { CreateInjectionBodySchema } from '../../protocol/injection.js'

/** Splits an example line as a POSIX shell would (single quotes only, which is all they use). */
function shellWords(line: string): string[] {
  const words: string[] = []
  for (const m of line.matchAll(/'([^']*)'|(\S+)/g)) words.push(m[1] ?? m[2]!)
  return words
}

function helpOf(cmd: Command): string {
  let out = ''
  cmd.configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) })
  cmd.outputHelp()
  return out
}

for (const kind of faultKinds) {
  t.test(kind.kind, async (t) => {
    const sub = injectCommand().commands.find((c) => c.name() === kind.kind)!
    const examples = helpOf(sub)
      .split('\n')
      .filter((l) => l.trimStart().startsWith('faultline inject '))
    t.ok(examples.length >= 1, 'the help has examples')
    for (const line of examples) {
      const fresh = injectCommand().commands.find((c) => c.name() === kind.kind)!
      let opts: Record<string, unknown> | undefined
      fresh.exitOverride().action((o: Record<string, unknown>) => void (opts = o))
      await fresh.parseAsync(shellWords(line).slice(3), { from: 'user' })
      const body = requestFromOptions(kind as unknown as FaultKind, opts!)
      const errors = [...Value.Errors(CreateInjectionBodySchema, body)].map((e) => `${e.instancePath} ${e.message}`)
      t.same(errors, [], `valid request: ${line.trim()}`)
      t.ok((kind.targets as readonly string[]).includes(body.target.type), `${body.target.type} is a target ${kind.kind} takes`)
    }
  })
}
