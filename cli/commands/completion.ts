import { Argument, Command, Help, type Option } from 'commander'

/** A command as the user reaches it: the words from the root ("faultline exp apply"). */
export interface CommandPath {
  words: string[]
  command: Command
}

/**
 * Every command the user can type, the root first, then depth first in the order of --help.
 * Hidden commands and commander's implicit `help` command are left out (the latter is no
 * command of ours: it only prints another command's --help). The man page
 * (scripts/make-man.ts) describes the same list, so the two never disagree about the tree.
 */
export function commandPaths(root: Command, words: string[] = [root.name()]): CommandPath[] {
  const children = new Help().visibleCommands(root).filter((c) => root.commands.includes(c))
  return [{ words, command: root }, ...children.flatMap((c) => commandPaths(c, [...words, c.name()]))]
}

/**
 * The target selectors `--target` starts with: the rest (a pid, a name) is the user's. Kept in
 * step with protocol/target.ts's shorthand by hand, as the parser has no list to read.
 */
const targetPrefixes = ['host', 'process:', 'process:name=', 'process:cmdline=', 'netns:', 'container:', 'container:name=', 'container:labels=', 'container:image=']

/** What an option's value is, to the completion: a file name, one of its choices, a target, or free text. */
function valueKind(option: Option): 'file' | 'dir' | 'choice' | 'target' | 'any' | undefined {
  if (!option.required && !option.optional) return undefined
  if (option.argChoices) return 'choice'
  if (option.long === '--target') return 'target'
  // The placeholder says it: --config <file>, -f, --file <file>, --state-dir <dir>, --docker-socket <path>.
  const placeholder = /[<[]([^>\]]*)[>\]]/.exec(option.flags)?.[1]
  if (placeholder === 'dir') return 'dir'
  if (placeholder === 'file' || placeholder === 'path') return 'file'
  return 'any'
}

/** A word for bash in single quotes: nothing in it is expanded, whatever it holds. */
const quote = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`
const quoteAll = (words: string[]) => words.map(quote).join(' ')

/** The `_faultline_spec` case of one command path: what follows it, and what each of its flags takes. */
function specCase({ words, command }: CommandPath): string {
  const help = new Help()
  const options = help.visibleOptions(command)
  const lines = [`  ${quote(words.join(' '))})`]
  const commands = help.visibleCommands(command).map((c) => c.name())
  if (commands.length > 0) lines.push(`    spec_commands=(${quoteAll(commands)})`)
  lines.push(`    spec_options=(${quoteAll(options.flatMap((o) => (o.long ? [o.long] : [])))})`)
  const flags = (o: Option) => [o.short, o.long].filter((f): f is string => f !== undefined)
  const flagCases: string[] = []
  for (const kind of ['file', 'dir', 'target', 'any'] as const) {
    const these = options.filter((o) => valueKind(o) === kind).flatMap(flags)
    if (these.length > 0) flagCases.push(`    ${these.map(quote).join(' | ')}) spec_value=${kind} ;;`)
  }
  for (const o of options.filter((o) => valueKind(o) === 'choice')) {
    flagCases.push(`    ${flags(o).map(quote).join(' | ')}) spec_value=choice; spec_choices=(${quoteAll(o.argChoices!)}) ;;`)
  }
  if (flagCases.length > 0) lines.push('    case $2 in', ...flagCases, '    esac')
  lines.push('    ;;')
  return lines.join('\n')
}

/**
 * The bash completion script: `_faultline_spec` holds the command tree as data (one case per
 * command path), `_faultline` reads the line and picks from it. Every word taken from the tree is
 * single-quoted and candidates are matched with [[ ]], never passed through `compgen -W`, which
 * would expand $(...) in them. It also runs under zsh's bashcompinit, which calls it with
 * COMP_LINE set, in sh emulation (arrays from 0) and without compopt.
 */
function bashCompletion(root: Command): string {
  return `# bash completion for faultline, generated from its command tree by "faultline completion bash".

# For the command path $1 ("faultline exp apply"): its subcommands and long options, and what its
# flag $2 takes as value: file, dir, target, choice (one of spec_choices), any (free text);
# nothing for a flag without a value or one it does not have.
_faultline_spec() {
  spec_commands=()
  spec_options=()
  spec_choices=()
  spec_value=
  case $1 in
${commandPaths(root).map(specCase).join('\n')}
  esac
}

_faultline() {
  local line token cur prev= command_path=${quote(root.name())} head= keep= breaks spec_value word i
  local -a line_words spec_commands spec_options spec_choices candidates
  COMPREPLY=()
  # The line up to the cursor, split at blanks only: bash also cuts COMP_WORDS at ":" and "="
  # (COMP_WORDBREAKS), which would make four words of --target process:name=nginx.
  if [[ -n \${COMP_LINE+set} ]]; then
    line=\${COMP_LINE:0:$COMP_POINT}
  else
    line="\${COMP_WORDS[*]:0:$((COMP_CWORD + 1))}"
  fi
  # The "_" makes a last word even after a blank (the word is then empty), which read would drop.
  if [[ -n \${ZSH_VERSION-} ]]; then read -rA line_words <<<"\${line}_"; else read -ra line_words <<<"\${line}_"; fi
  token=\${line_words[\${#line_words[@]}-1]}
  token=\${token%_}
  ((\${#line_words[@]} > 1)) && prev=\${line_words[\${#line_words[@]}-2]}

  # The command path: the words that name a subcommand of the path so far, skipping flag values.
  for ((i = 1; i < \${#line_words[@]} - 1; i++)); do
    word=\${line_words[i]}
    _faultline_spec "$command_path" "$word"
    if [[ $word == -* ]]; then
      [[ -n $spec_value ]] && i=$((i + 1))
    elif [[ " \${spec_commands[*]} " == *" $word "* ]]; then
      command_path="$command_path $word"
    fi
  done

  # The word under the cursor is the value of the flag before it, or of its own --flag=.
  cur=$token
  if [[ $token == --*=* ]]; then
    head=\${token%%=*}=
    cur=\${token#*=}
    _faultline_spec "$command_path" "\${head%=}"
  else
    _faultline_spec "$command_path" "$prev"
  fi
  case $spec_value in
  choice) candidates=("\${spec_choices[@]}") ;;
  target) candidates=(${quoteAll(targetPrefixes)}) ;;
  file | dir)
    # one name a line, read whole: names with blanks stay one reply
    while IFS= read -r word; do COMPREPLY+=("$word"); done < <(compgen -"\${spec_value:0:1}" -- "$cur")
    compopt -o filenames 2>/dev/null
    return 0
    ;;
  any) return 0 ;;
  *)
    if [[ $cur == -* || \${#spec_commands[@]} -eq 0 ]]; then candidates=("\${spec_options[@]}"); else candidates=("\${spec_commands[@]}"); fi
    ;;
  esac

  # bash replaces only what follows the word's last ":" or "=" (when they are in COMP_WORDBREAKS),
  # so the replies leave out what comes before it.
  breaks=\${COMP_WORDBREAKS-}
  breaks=\${breaks//[!:=]/}
  [[ -n $breaks && $token == *[$breaks]* ]] && keep=\${token%"\${token##*[$breaks]}"}
  for word in "\${candidates[@]}"; do
    [[ $word == "$cur"* ]] || continue
    word=$head$word
    word=\${word#"$keep"}
    [[ -n $word ]] && COMPREPLY+=("$word")
  done
  # A selector's prefix (process:, container:name=) goes on with a name, not a space.
  # (zsh's bashcompinit has no compopt: there the space stays.)
  [[ \${#COMPREPLY[@]} -eq 1 && \${COMPREPLY[0]} == *[:=] ]] && compopt -o nospace 2>/dev/null
  return 0
}

complete -F _faultline ${quote(root.name())}
`
}

/** zsh runs the same function through its bash completion emulation. */
function zshCompletion(root: Command): string {
  return `autoload -U +X bashcompinit && bashcompinit\n${bashCompletion(root)}`
}

export function completionCommand(): Command {
  return new Command('completion')
    .description('print a shell completion script (bash or zsh) for faultline')
    .addArgument(new Argument('<shell>', 'the shell to complete in').choices(['bash', 'zsh']))
    .addHelpText(
      'after',
      `
Install for bash (needs the bash-completion package for the directory to be read):
  faultline completion bash > /etc/bash_completion.d/faultline     for every user, as root
  source <(faultline completion bash)                              in ~/.bashrc, for yourself

Install for zsh, in ~/.zshrc after compinit ("autoload -U compinit && compinit"):
  source <(faultline completion zsh)

It completes commands, options, the choices of options such as --signal and --log-level, file
names after options that take a file, and the target selectors of --target.`,
    )
    .action((shell: 'bash' | 'zsh', _o, cmd: Command) => {
      // The tree the user runs: from the root, whatever program this command was added to.
      let root = cmd
      while (root.parent) root = root.parent
      process.stdout.write(shell === 'bash' ? bashCompletion(root) : zshCompletion(root))
    })
}
