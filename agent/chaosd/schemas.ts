import { Type, type Static, type TObject, type TProperties } from 'typebox'

/**
 * Request bodies of chaosd's HTTP API (github.com/chaos-mesh/chaosd, pkg/core/*.go), as Chaos
 * Mesh's PhysicalMachineChaos controller sends them: spec.<action> flattened to the top level,
 * plus `uid` and the sub-action in `action` (absent for process and clock). Field names are
 * chaosd's (kebab-case). One strict schema per action: a field this agent would not honour is
 * refused (400) rather than silently ignored.
 */

/** The experiment id Chaos Mesh assigns (a UUID); it becomes the id of the request in the journal. */
export const CHAOSD_UID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'

const common = {
  uid: Type.Optional(
    Type.String({ pattern: CHAOSD_UID_PATTERN, description: 'Experiment id (Chaos Mesh sends a UUID); absent: the agent makes one. Letters, digits, ".", "_", "-"; at most 64' }),
  ),
  kind: Type.Optional(Type.String({ maxLength: 32, description: "chaosd's own kind field (ignored: the route names the kind)" })),
  duration: Type.Optional(Type.String({ maxLength: 32, description: 'Go duration ("90s", "1h30m"); default: --chaosd-default-duration' })),
  schedule: Type.Optional(Type.String({ maxLength: 0, description: 'chaosd cron schedules are not supported: Chaos Mesh schedules (empty only)' })),
}

const strict = { additionalProperties: false } as const

function action<const A extends string, P extends TProperties>(name: A, props: P, absentAllowed = false) {
  const actionField = absentAllowed ? Type.Optional(Type.Union([Type.Literal(name), Type.Literal('')])) : Type.Literal(name)
  return Type.Object({ ...common, action: actionField, ...props }, { ...strict, title: name })
}

const text = (maxLength: number, description: string) => Type.Optional(Type.String({ maxLength, description }))
const percentText = (what: string) => Type.Optional(Type.String({ maxLength: 16, description: `Percent of packets to ${what}, as a string ("10" is 10 %)` }))

// ---- process ---------------------------------------------------------------------------------

export const ProcessBodySchema = action(
  'process',
  {
    process: Type.String({ minLength: 1, maxLength: 64, description: 'Process name (comm, every process of that name) or pid' }),
    signal: Type.Integer({ minimum: 1, maximum: 64, description: 'Signal number: 19 (SIGSTOP) stops and DELETE resumes; 9, 15, ... end the process (not recoverable)' }),
    recoverCmd: Type.Optional(Type.String({ maxLength: 0, description: 'Shell commands at recovery are not supported (empty only)' })),
  },
  true,
)

// ---- network ---------------------------------------------------------------------------------

const filterFields = {
  device: text(15, 'Interface'),
  'ip-address': text(4096, 'Comma-separated IPs or CIDRs'),
  hostname: text(253, 'Host name (resolved by the agent at injection time)'),
  'ip-protocol': Type.Optional(Type.Enum(['tcp', 'udp', 'icmp', 'all', ''])),
  'source-port': text(512, 'Local ports: "80,8001:8010"'),
  'egress-port': text(512, 'Remote ports: "80,8001:8010"'),
  'accept-tcp-flags': Type.Optional(Type.String({ maxLength: 0, description: 'Not supported (empty only)' })),
}

export const networkActions = {
  delay: action('delay', {
    ...filterFields,
    latency: Type.String({ minLength: 1, maxLength: 32, description: 'Go duration, e.g. "100ms"' }),
    jitter: text(32, 'Go duration'),
    correlation: percentText('correlate'),
  }),
  loss: action('loss', { ...filterFields, percent: Type.String({ minLength: 1, maxLength: 16 }), correlation: percentText('correlate') }),
  corrupt: action('corrupt', { ...filterFields, percent: Type.String({ minLength: 1, maxLength: 16 }), correlation: percentText('correlate') }),
  duplicate: action('duplicate', { ...filterFields, percent: Type.String({ minLength: 1, maxLength: 16 }), correlation: percentText('correlate') }),
  partition: action('partition', {
    device: filterFields.device,
    'ip-address': filterFields['ip-address'],
    hostname: filterFields.hostname,
    'ip-protocol': filterFields['ip-protocol'],
    'accept-tcp-flags': filterFields['accept-tcp-flags'],
    direction: Type.Optional(Type.Enum(['to', 'from', 'both', ''], { description: 'to: packets to the peers; from: packets from them; both (default)' })),
  }),
  dns: action('dns', {
    'dns-server': text(45, 'Resolver for every other name (IP)'),
    'dns-ip': Type.String({ minLength: 1, maxLength: 45, description: 'Address dns-domain-name resolves to' }),
    'dns-domain-name': Type.String({ minLength: 1, maxLength: 253, description: 'Name to answer with dns-ip' }),
  }),
  bandwidth: action('bandwidth', {
    rate: Type.String({ minLength: 1, maxLength: 24, description: 'tc rate: "1mbit" (bits/s) or "1mbps" (BYTES/s, as tc reads it)' }),
    limit: Type.Integer({ minimum: 1, maximum: 4_294_967_295, description: 'Queue size, bytes' }),
    buffer: Type.Integer({ minimum: 1, maximum: 4_294_967_295, description: 'Bucket size (burst), bytes' }),
    peakrate: Type.Optional(Type.Null()),
    minburst: Type.Optional(Type.Null()),
    device: filterFields.device,
    'ip-address': filterFields['ip-address'],
    hostname: filterFields.hostname,
  }),
} satisfies Record<string, TObject>

// ---- stress ----------------------------------------------------------------------------------

const noOptions = Type.Optional(Type.Array(Type.String(), { maxItems: 0, description: 'Extra stress-ng options are not supported (empty only)' }))

export const stressActions = {
  cpu: action('cpu', {
    load: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, description: 'Percent per worker (0 or absent: 100)' })),
    workers: Type.Optional(Type.Integer({ minimum: 0, maximum: 256, description: 'Workers (0 or absent: 1)' })),
    options: noOptions,
  }),
  mem: action('mem', {
    size: Type.String({ minLength: 1, maxLength: 32, description: 'stress-ng size: "512MB", "1GB", "50%"' }),
    workers: Type.Optional(Type.Integer({ minimum: 0, maximum: 1, description: 'Only one memory worker' })),
    options: noOptions,
  }),
} satisfies Record<string, TObject>

// ---- disk ------------------------------------------------------------------------------------

const diskFields = {
  path: Type.String({ minLength: 2, maxLength: 4096, pattern: '^/', description: 'Absolute path: a directory, or a file that does not exist yet (its directory is used)' }),
  size: text(32, 'dd size: c=1, w=2, b=512, kB=1000, K=1024, MB, M, GB, G (e.g. "1G", "512M")'),
}

export const diskActions = {
  fill: action('fill', {
    ...diskFields,
    percent: text(8, 'Percent of the filesystem size to allocate'),
    'fill-by-fallocate': Type.Optional(Type.Boolean({ description: 'Accepted either way: the agent always allocates the blocks with fallocate (writing them where the file system cannot)' })),
    fallocate: Type.Optional(Type.Boolean({ description: "chaosd's own name for fill-by-fallocate" })),
  }),
  'write-payload': action('write-payload', { ...diskFields, 'payload-process-num': Type.Optional(Type.Integer({ minimum: 0, maximum: 64 })) }),
  'read-payload': action('read-payload', { ...diskFields, 'payload-process-num': Type.Optional(Type.Integer({ minimum: 0, maximum: 64 })) }),
} satisfies Record<string, TObject>

// ---- clock -----------------------------------------------------------------------------------

export const ClockBodySchema = action(
  'clock',
  {
    pid: Type.Integer({ minimum: 1, maximum: 4_194_304, description: 'The process whose clock is skewed' }),
    'time-offset': Type.String({ minLength: 2, maxLength: 33, description: 'Go duration with a sign: "-5m", "+1h30m"' }),
    'clock-ids-slice': text(128, 'Comma-separated: CLOCK_REALTIME (default), CLOCK_MONOTONIC, CLOCK_BOOTTIME'),
  },
  true,
)

// ---- file (a superset: Chaos Mesh defines file-*, chaosd's HTTP API does not route them) -----

const fileName = Type.String({ minLength: 2, maxLength: 4096, pattern: '^/', description: 'Absolute path of the file' })

export const fileActions = {
  modify: action('modify', { 'file-name': fileName, privilege: Type.Integer({ minimum: 0, maximum: 7777, description: 'New mode as octal digits, e.g. 0, 444, 777' }) }),
  delete: action('delete', { 'file-name': fileName }),
  append: action('append', {
    'file-name': fileName,
    data: Type.String({ minLength: 1, maxLength: 8192 }),
    count: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000, description: 'Lines of data to append (0 or absent: 1)' })),
  }),
  replace: action('replace', {
    'file-name': fileName,
    'origin-string': Type.String({ minLength: 1, maxLength: 4096, description: 'Literal text to replace' }),
    'dest-string': Type.String({ maxLength: 32768 }),
    line: Type.Optional(Type.Integer({ minimum: 0, maximum: 0, description: 'Replacing on one line only is not supported (0 or absent)' })),
  }),
} satisfies Record<string, TObject>

export type ProcessBody = Static<typeof ProcessBodySchema>
export type ClockBody = Static<typeof ClockBodySchema>
export type NetworkBody<A extends keyof typeof networkActions> = Static<(typeof networkActions)[A]>
export type StressBody<A extends keyof typeof stressActions> = Static<(typeof stressActions)[A]>
export type DiskBody<A extends keyof typeof diskActions> = Static<(typeof diskActions)[A]>
export type FileBody<A extends keyof typeof fileActions> = Static<(typeof fileActions)[A]>

/** Actions chaosd or Chaos Mesh define that this agent refuses, with the reason (400). */
export const refusedActions: Record<string, Record<string, string>> = {
  network: {
    flood: 'network flood (iperf traffic generation) is not a Faultline fault kind',
    down: 'network down (taking an interface down) is not supported: it cuts the control channel; use action partition with a device',
    occupied: 'port occupation is not a Faultline fault kind',
  },
  file: {
    create: 'file create is not supported: Faultline faults existing files (delete, modify, append, replace)',
    rename: 'file rename is not supported: use delete (the file is moved aside and put back at recovery)',
  },
}

/** The body schema of one kind and action; undefined for an action the kind does not have. */
export function bodySchemaOf(kind: ChaosdKind, actionName: string | undefined): TObject | undefined {
  switch (kind) {
    case 'process':
      return actionName ? (actionName === 'process' ? ProcessBodySchema : undefined) : ProcessBodySchema
    case 'clock':
      return actionName ? (actionName === 'clock' ? ClockBodySchema : undefined) : ClockBodySchema
    case 'network':
      return actionName && Object.hasOwn(networkActions, actionName) ? networkActions[actionName as keyof typeof networkActions] : undefined
    case 'stress':
      return actionName && Object.hasOwn(stressActions, actionName) ? stressActions[actionName as keyof typeof stressActions] : undefined
    case 'disk':
      return actionName && Object.hasOwn(diskActions, actionName) ? diskActions[actionName as keyof typeof diskActions] : undefined
    case 'file':
      return actionName && Object.hasOwn(fileActions, actionName) ? fileActions[actionName as keyof typeof fileActions] : undefined
  }
}

export const chaosdKinds = ['process', 'network', 'stress', 'disk', 'clock', 'file'] as const
export type ChaosdKind = (typeof chaosdKinds)[number]

/** Actions a kind accepts (for the 400 message of an unknown action). */
export function actionsOf(kind: ChaosdKind): string[] {
  switch (kind) {
    case 'process':
    case 'clock':
      return []
    case 'network':
      return Object.keys(networkActions)
    case 'stress':
      return Object.keys(stressActions)
    case 'disk':
      return Object.keys(diskActions)
    case 'file':
      return Object.keys(fileActions)
  }
}
