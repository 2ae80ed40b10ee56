// Shell completion and the man page are both generated from the CLI's command tree. The
// completion script is sourced in a real bash (and zsh, when installed) and asked what it offers;
// the man page must name every command path and render without a single groff warning.
import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { commandPaths } from '../../cli/commands/completion.js'
import { buildProgram } from '../../cli/program.js'
import { repoRoot, runCli, tmpDir } from '../helpers.js'

const installed = (program: string) => spawnSync(program, ['--version'], { stdio: 'ignore' }).error === undefined

/**
 * What `_faultline` offers with the cursor at the end of the last word, called as bash calls it:
 * COMP_WORDS and COMP_CWORD, and COMP_LINE/COMP_POINT when `line` is given (bash splits
 * COMP_WORDS at ":" and "=" too, so a line with them has more words than blanks).
 */
function complete(script: string, words: string[], line?: string): string[] {
  const run = [
    'source "$1"; line=$2; shift 2',
    'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))',
    '[[ -n $line ]] && { COMP_LINE=$line; COMP_POINT=${#line}; }',
    '_faultline',
    'printf "%s\\n" "${COMPREPLY[@]}"',
  ].join('\n')
  const out = execFileSync('bash', ['--norc', '--noprofile', '-c', run, 'bash', script, line ?? '', ...words], { encoding: 'utf8' })
  return out.split('\n').filter((w) => w !== '')
}

t.test('bash completion', async (t) => {
  const { code, stdout, stderr } = await runCli(['completion', 'bash'])
  t.equal(code, 0, stderr)
  const script = join(tmpDir(t), 'faultline.bash')
  writeFileSync(script, stdout)
  const offers = (line: string) => complete(script, line.split(' '))

  t.same(offers('faultline inj'), ['inject'], 'a command')
  t.same(offers('faultline inject process-s'), ['process-stop'], 'a subcommand')
  t.same(offers('faultline inject process-kill --sig'), ['--signal'], "a subcommand's option")
  const signals = offers('faultline inject process-kill --signal ')
  t.ok(signals.includes('KILL') && signals.includes('TERM'), `the choices of --signal: ${signals.join(' ')}`)
  t.same(offers('faultline agent --log-level '), ['fatal', 'error', 'warn', 'info', 'debug', 'trace'], 'the choices of --log-level')
  t.same(offers('faultline tokens create --role ').sort(), ['admin', 'operator', 'viewer'], 'the choices of --role')
  const agents = offers('faultline agents ')
  for (const sub of ['ls', 'rm', 'admit']) t.ok(agents.includes(sub), `faultline agents ${sub}`)
  t.notOk(agents.some((w) => w.startsWith('-')), 'subcommands, not options, for an empty word')
  const exp = offers('faultline exp ')
  t.ok(exp.includes('apply') && exp.includes('plan'), `faultline exp: ${exp.join(' ')}`)
  t.ok(offers('faultline exp apply -f x --dr').includes('--dry-run'), 'the value of -f is skipped')

  t.same(
    offers('faultline inject process-stop --target '),
    ['host', 'process:', 'process:name=', 'process:cmdline=', 'netns:', 'container:', 'container:name=', 'container:labels=', 'container:image='],
    'the target selectors',
  )
  t.same(offers('faultline inject process-stop -t container:l'), ['labels='], 'after -t too, without what bash keeps before the ":"')
  t.same(
    complete(script, ['faultline', 'inject', 'process-stop', '--target', 'process', ':', 'n'], 'faultline inject process-stop --target process:n'),
    ['name='],
    'the line as bash splits it at ":"',
  )
  t.same(offers('faultline inject process-stop --duration '), [], 'nothing for a free value')

  const dir = tmpDir(t)
  writeFileSync(join(dir, 'experiment.yaml'), 'name: x\n')
  t.same(offers(`faultline exp apply -f ${dir}/exp`), [`${dir}/experiment.yaml`], 'file names after -f')
  t.same(offers(`faultline agent --config ${dir}/e`), [`${dir}/experiment.yaml`], 'file names after --config')
  t.same(offers(`faultline agent --state-dir ${dir.slice(0, -2)}`), [dir], 'directories after --state-dir')
})

t.test('zsh completion', async (t) => {
  const { code, stdout, stderr } = await runCli(['completion', 'zsh'])
  t.equal(code, 0, stderr)
  t.ok(stdout.startsWith('autoload -U +X bashcompinit && bashcompinit\n'), 'bashcompinit first')
  t.equal(stdout.slice(stdout.indexOf('\n') + 1), (await runCli(['completion', 'bash'])).stdout, 'then the bash script')

  t.test('in a real zsh', { skip: !installed('zsh') && 'zsh is not installed' }, async (t) => {
    const script = join(tmpDir(t), 'faultline.zsh')
    writeFileSync(script, stdout)
    // bashcompinit's compgen -F calls _faultline as a completion would, with COMP_LINE set
    const run = [
      'autoload -U compinit && compinit -u -D',
      'source "$1"',
      'local -x COMP_LINE=$2 COMP_POINT=${#2}',
      'words=(${(z)2} ""); CURRENT=${#words}',
      'compgen -F _faultline -- ""',
      'print -r -- "PATH=$PATH"',
    ].join('\n')
    const out = execFileSync('zsh', ['-f', '-c', run, 'zsh', script, 'faultline inject process-kill --signal '], { encoding: 'utf8' }).split('\n')
    t.ok(out.includes('KILL') && out.includes('TERM'), `the choices of --signal: ${out.join(' ')}`)
    t.ok(out.includes(`PATH=${process.env.PATH}`), 'PATH untouched (zsh ties $path to it)')
  })
})

t.test('completion --help says how to install it; other shells are refused', async (t) => {
  const help = await runCli(['completion', '--help'])
  for (const line of ['faultline completion bash > /etc/bash_completion.d/faultline', 'source <(faultline completion bash)', 'source <(faultline completion zsh)']) {
    t.ok(help.stdout.includes(line), line)
  }
  const fish = await runCli(['completion', 'fish'])
  t.equal(fish.code, 1)
  t.match(fish.stderr, /Allowed choices are bash, zsh/)
})

t.test('man page', async (t) => {
  const out = join(tmpDir(t), 'man', 'faultline.1')
  execFileSync(process.execPath, ['--import', 'tsx', join(repoRoot, 'scripts', 'make-man.ts'), out], { cwd: repoRoot })
  const page = readFileSync(out, 'utf8')
  const roff = (text: string) => text.replaceAll('-', '\\-')
  t.match(page, /^\.TH FAULTLINE 1 /, 'a man(7) page')
  for (const section of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'COMMANDS', 'ENVIRONMENT', 'FILES', '"EXIT STATUS"', '"SEE ALSO"']) {
    t.ok(page.includes(`\n.SH ${section}\n`), `section ${section}`)
  }

  const paths = commandPaths(buildProgram()).slice(1)
  for (const required of ['faultline inject process-stop', 'faultline exp plan', 'faultline agents admit']) {
    t.ok(paths.some((p) => p.words.join(' ') === required), `${required} is in the tree`)
  }
  for (const { words } of paths) t.ok(page.includes(`\n.SS "${roff(words.join(' '))}"\n`), words.join(' '))

  const agent = paths.find((p) => p.words.join(' ') === 'faultline agent')!.command
  const section = page.slice(page.indexOf('\n.SS "faultline agent"\n'), page.indexOf('\n.SS', page.indexOf('\n.SS "faultline agent"\n') + 1))
  t.ok(agent.options.length > 10, 'faultline agent has its options')
  for (const o of agent.options) t.ok(section.includes(`\\fB${roff(o.long!)}\\fR`), `faultline agent ${o.long}`)
  t.ok(page.includes('\\fBFAULTLINE_AGENT_STATE_DIR\\fR'), 'the variables options read')
  t.ok(page.includes('\\fB/var/lib/faultline\\-server\\fR'), 'the files')

  t.test('groff renders it without a warning', { skip: !installed('groff') && 'groff is not installed' }, async (t) => {
    const groff = spawnSync('groff', ['-man', '-Tutf8', '-ww', out], { encoding: 'utf8' })
    t.equal(groff.status, 0)
    t.equal(groff.stderr, '', 'no warnings')
    t.match(groff.stdout, /faultline inject process.stop/)
  })
})
