import { Type, type Static } from 'typebox'
import { FaultlineError } from './errors.js'

/**
 * Target selectors: what a client asks for. The agent resolves a selector to concrete facts
 * (ResolvedTarget) at injection time and records them, so recovery never has to re-resolve.
 */
const strict = { additionalProperties: false } as const

export const HostSelectorSchema = Type.Object(
  { type: Type.Literal('host') },
  { ...strict, title: 'host', description: 'The host itself (its own namespaces)' },
)

export const ProcessSelectorSchema = Type.Union(
  [
    Type.Object(
      { type: Type.Literal('process'), pid: Type.Integer({ minimum: 1, maximum: 4_194_304, description: 'Process id, as the host sees it (1 to 4194304; pid 1 is never faulted)' }) },
      { ...strict, title: 'process by pid' },
    ),
    Type.Object(
      {
        type: Type.Literal('process'),
        name: Type.String({
          minLength: 1,
          maxLength: 15,
          pattern: '^[^/\\u0000]+$',
          description: 'Exact process name (comm, at most 15 characters)',
        }),
      },
      { ...strict, title: 'process by name' },
    ),
    Type.Object(
      {
        type: Type.Literal('process'),
        cmdline: Type.String({
          minLength: 1,
          maxLength: 256,
          description: 'Regular expression matched against the command line (arguments joined by spaces)',
        }),
      },
      { ...strict, title: 'process by command line' },
    ),
  ],
  { title: 'process' },
)

export const NetnsSelectorSchema = Type.Object(
  {
    type: Type.Literal('netns'),
    name: Type.String({
      pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$',
      description: 'A named network namespace: a file under /var/run/netns (ip netns add NAME)',
    }),
  },
  { ...strict, title: 'netns' },
)

export const containerRuntimes = ['docker', 'containerd', 'podman', 'crio', 'lxc', 'nspawn'] as const
const RuntimeField = Type.Optional(
  Type.Enum(containerRuntimes, { description: 'Only containers of this runtime (default: any; the agent finds out which runtimes the host has)' }),
)

export const ContainerSelectorSchema = Type.Union(
  [
    Type.Object(
      {
        type: Type.Literal('container'),
        id: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{2,127}$', description: 'Container id, or a prefix of it (at least 3 characters)' }),
        runtime: RuntimeField,
      },
      { ...strict, title: 'container by id' },
    ),
    Type.Object(
      {
        type: Type.Literal('container'),
        name: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$', description: 'Container name (as the runtime reports it)' }),
        runtime: RuntimeField,
      },
      { ...strict, title: 'container by name' },
    ),
    Type.Object(
      {
        type: Type.Literal('container'),
        labels: Type.Record(Type.String({ minLength: 1, maxLength: 253 }), Type.String({ maxLength: 1024 }), {
          minProperties: 1,
          maxProperties: 32,
          description: 'Every label given must be present with this value',
        }),
        runtime: RuntimeField,
      },
      { ...strict, title: 'container by labels' },
    ),
    Type.Object(
      {
        type: Type.Literal('container'),
        image: Type.String({ minLength: 1, maxLength: 512, pattern: '^[^\\s]+$', description: 'Image reference; without a tag, any tag of that repository matches' }),
        runtime: RuntimeField,
      },
      { ...strict, title: 'container by image' },
    ),
  ],
  { title: 'container' },
)

export const TargetSelectorSchema = Type.Union([HostSelectorSchema, ProcessSelectorSchema, NetnsSelectorSchema, ContainerSelectorSchema], {
  title: 'TargetSelector',
  description: 'What the fault acts on',
})
export type TargetSelector = Static<typeof TargetSelectorSchema>
export type TargetType = TargetSelector['type']
export const targetTypes = ['host', 'process', 'netns', 'container'] as const satisfies readonly TargetType[]

const NetnsInode = Type.Integer({ description: 'Inode of the network namespace (nsfs): with it, a namespace is recognised even under another name' })

export const ResolvedHostSchema = Type.Object(
  { type: Type.Literal('host'), hostname: Type.String(), netnsInode: NetnsInode },
  { ...strict, title: 'resolved host' },
)

export const ResolvedProcessSchema = Type.Object(
  {
    type: Type.Literal('process'),
    pid: Type.Integer(),
    startTime: Type.Integer({
      description: 'Start time in clock ticks since boot (/proc/<pid>/stat field 22): with the pid, it names one process for ever',
    }),
    comm: Type.String(),
    cmdline: Type.String(),
    state: Type.String({ description: 'Process state letter at resolution time (R, S, D, T, ...)' }),
    uid: Type.Optional(Type.Integer({ description: 'Real uid of the process' })),
    user: Type.Optional(Type.String({ description: "Its user name, from the host's /etc/passwd" })),
  },
  { ...strict, title: 'resolved process' },
)

export const ResolvedNetnsSchema = Type.Object(
  { type: Type.Literal('netns'), name: Type.String(), path: Type.String(), netnsInode: NetnsInode },
  { ...strict, title: 'resolved netns' },
)

export const ResolvedContainerSchema = Type.Object(
  {
    type: Type.Literal('container'),
    id: Type.String(),
    runtime: Type.Enum(containerRuntimes),
    namespace: Type.Optional(Type.String({ description: 'containerd namespace' })),
    name: Type.Optional(Type.String()),
    image: Type.Optional(Type.String()),
    labels: Type.Record(Type.String(), Type.String()),
    initPid: Type.Integer({ description: "The container's first process, as the host sees it" }),
    initStartTime: Type.Integer(),
    netnsInode: NetnsInode,
    cgroupPaths: Type.Record(Type.String(), Type.String(), { description: 'Cgroup of the container per hierarchy ("unified" for v2)' }),
  },
  { ...strict, title: 'resolved container' },
)

export const ResolvedTargetSchema = Type.Union([ResolvedHostSchema, ResolvedProcessSchema, ResolvedNetnsSchema, ResolvedContainerSchema], {
  title: 'ResolvedTarget',
})
export type ResolvedTarget = Static<typeof ResolvedTargetSchema>
export type ResolvedProcess = Static<typeof ResolvedProcessSchema>
export type ResolvedNetns = Static<typeof ResolvedNetnsSchema>
export type ResolvedHost = Static<typeof ResolvedHostSchema>
export type ResolvedContainer = Static<typeof ResolvedContainerSchema>

/** A stable key for the keyed lock and for conflict checks: one key per concrete target. */
export function targetKey(target: ResolvedTarget): string {
  switch (target.type) {
    case 'host':
      return 'host'
    case 'process':
      return `process:${target.pid}:${target.startTime}`
    case 'netns':
      return `netns:${target.netnsInode}`
    case 'container':
      return `container:${target.runtime}:${target.namespace ?? ''}:${target.id}`
  }
}

/** One line for humans: "process 4242 (sleep)". */
export function describeTarget(target: ResolvedTarget): string {
  switch (target.type) {
    case 'host':
      return `host ${target.hostname}`
    case 'process':
      return `process ${target.pid} (${target.comm}${target.user !== undefined ? `, user ${target.user}` : target.uid !== undefined ? `, uid ${target.uid}` : ''})`
    case 'netns':
      return `netns ${target.name}`
    case 'container':
      return `container ${target.name ?? target.id.slice(0, 12)} (${target.runtime})`
  }
}

/**
 * The CLI's short form: "host", "process:4242", "process:pid=4242", "process:name=sleep",
 * "process:cmdline=^sleep 3[0-9]+$", "netns:blue". Everything after the first "=" is the value, verbatim.
 */
export function parseTargetShorthand(text: string): TargetSelector {
  const colon = text.indexOf(':')
  const type = colon === -1 ? text : text.slice(0, colon)
  const rest = colon === -1 ? '' : text.slice(colon + 1)
  const usage =
    'use host, process:<pid>, process:pid=<pid>, process:name=<comm>, process:cmdline=<regex>, netns:<name>, container:<id>, container:name=<name>, container:labels=<k=v,...> or container:image=<ref>'
  if (type === 'host') {
    if (rest !== '') throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `target "host" takes no value; ${usage}`)
    return { type: 'host' }
  }
  if (type === 'process') {
    if (/^[0-9]+$/.test(rest)) return { type: 'process', pid: Number(rest) }
    const eq = rest.indexOf('=')
    const key = eq === -1 ? '' : rest.slice(0, eq)
    const value = eq === -1 ? '' : rest.slice(eq + 1)
    if (key === 'pid' && /^[0-9]+$/.test(value)) return { type: 'process', pid: Number(value) }
    if (key === 'name' && value !== '') return { type: 'process', name: value }
    if (key === 'cmdline' && value !== '') return { type: 'process', cmdline: value }
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `cannot read target "${text}"; ${usage}`)
  }
  if (type === 'container') {
    const eq = rest.indexOf('=')
    const key = eq === -1 ? 'id' : rest.slice(0, eq)
    const value = eq === -1 ? rest : rest.slice(eq + 1)
    if (value === '') throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `target "${text}" has no value; ${usage}`)
    if (key === 'id' || key === 'name' || key === 'image') return { type: 'container', [key]: value } as TargetSelector
    if (key === 'label' || key === 'labels') {
      const labels: Record<string, string> = {}
      for (const pair of value.split(',')) {
        const at = pair.indexOf('=')
        if (at <= 0) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `label "${pair}" is not key=value; ${usage}`)
        labels[pair.slice(0, at)] = pair.slice(at + 1)
      }
      return { type: 'container', labels }
    }
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `cannot read target "${text}"; ${usage}`)
  }
  if (type === 'netns') {
    const name = rest.startsWith('name=') ? rest.slice(5) : rest
    if (name !== '') return { type: 'netns', name }
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `target "${text}" names no namespace; ${usage}`)
  }
  throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `unknown target type "${type}"; ${usage}`)
}
