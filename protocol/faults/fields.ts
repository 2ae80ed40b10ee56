import { Type } from 'typebox'

/** Parameter fields several kinds share. Schemas only: what each field means to the host is the agent's. */

// ---- network kinds ---------------------------------------------------------------------------

const portList = (description: string) =>
  Type.Array(Type.Integer({ minimum: 1, maximum: 65535 }), { minItems: 1, maxItems: 64, uniqueItems: true, description })

export const DEVICE_PATTERN = '^[A-Za-z0-9_.:@-]{1,15}$'

export const DeviceField = Type.String({
  pattern: DEVICE_PATTERN,
  description: 'Interface name inside the target namespace',
})

/** Traffic filters: which packets the fault applies to. Empty filters mean all traffic. */
export const NetworkFilterFields = {
  device: Type.Optional(DeviceField),
  peers: Type.Optional(
    Type.Array(Type.String({ minLength: 1, maxLength: 253, pattern: '^[A-Za-z0-9.:/_-]+$' }), {
      minItems: 1,
      maxItems: 64,
      description: 'Remote addresses: CIDRs, IPs or hostnames (resolved and recorded at injection time)',
    }),
  ),
  ports: Type.Optional(portList("Remote ports: the peer's service ports (destination when sending, source when receiving)")),
  localPorts: Type.Optional(portList("Local ports: the target's own service ports (source when sending, destination when receiving)")),
  protocol: Type.Optional(Type.Enum(['tcp', 'udp', 'icmp', 'all'], { description: 'Default all (tcp and udp when ports are given)' })),
  protectControlChannel: Type.Optional(
    Type.Boolean({ description: "Default true: SSH (tcp/22) and the agent's own API port are never affected. false opts out." }),
  ),
}

/** The filter fields as a spec carries them (every network kind's spec has these). */
export interface NetworkFilterSpec {
  device?: string
  peers?: string[]
  ports?: number[]
  localPorts?: number[]
  protocol?: 'tcp' | 'udp' | 'icmp' | 'all'
  protectControlChannel?: boolean
}

export type Direction = 'egress' | 'ingress' | 'both'

export const DirectionField = (fallback: 'egress' | 'both') =>
  Type.Optional(Type.Enum(['egress', 'ingress', 'both'], { description: `Default ${fallback}` }))

export const PercentField = (what: string) =>
  Type.Number({ exclusiveMinimum: 0, maximum: 100, multipleOf: 0.01, description: `Percent of matching packets to ${what} (0.01 steps)` })

export const CorrelationField = Type.Optional(
  Type.Number({ minimum: 0, maximum: 100, description: 'netem correlation with the previous packet, percent (netem only)' }),
)

// ---- file kinds ------------------------------------------------------------------------------

export const FileSpecFields = {
  path: Type.String({ minLength: 1, maxLength: 4096, pattern: '^/', description: 'The regular file (inside the container for container targets); a final symlink is refused' }),
  force: Type.Optional(Type.Boolean({ description: 'Allow files under /proc, /sys, /dev and on kernel pseudo filesystems' })),
}

/** Every file kind acts on these targets and is taken back byte-identical. */
export const fileKindTargets = ['host', 'process', 'container'] as const

// ---- stress kinds ----------------------------------------------------------------------------

export const engines = ['auto', 'stress-ng', 'builtin'] as const
export const EngineField = Type.Optional(
  Type.Enum(engines, {
    description: 'auto (default): stress-ng when it is installed and can do what the spec asks, else the built-in burner (native/stress); stress-ng or builtin to choose',
  }),
)

/** Every stress kind acts on these targets (host: in a cgroup of its own). */
export const stressKindTargets = ['host', 'process', 'container'] as const

/** Network kinds act on a network namespace: the host's, a named one, or a container's. */
export const networkKindTargets = ['host', 'netns', 'container'] as const

// ---- io kinds (FUSE) ---------------------------------------------------------------------------

/**
 * File system operations an io rule can select, as the FUSE pass-through sees them. setattr is
 * chmod, chown, truncate and utimens; create is creat/open(O_CREAT) and mknod; readdir covers
 * opening and listing a directory; release is the last close of a file (delays only: the kernel
 * ignores its result); fsync covers fdatasync and fsync of directories too.
 */
export const ioOperations = [
  'open',
  'read',
  'write',
  'fsync',
  'flush',
  'release',
  'getattr',
  'setattr',
  'readdir',
  'create',
  'unlink',
  'mkdir',
  'rmdir',
  'rename',
  'link',
  'symlink',
  'readlink',
  'statfs',
  'fallocate',
] as const
export type IoOperation = (typeof ioOperations)[number]

/** errno values io-error can return (names as in errno(3); the agent maps them to this host's numbers). */
export const ioErrnoNames = [
  'EIO',
  'ENOSPC',
  'EDQUOT',
  'EACCES',
  'EPERM',
  'EROFS',
  'ENOENT',
  'EAGAIN',
  'EBUSY',
  'EFBIG',
  'ENAMETOOLONG',
  'EINTR',
  'EEXIST',
  'EISDIR',
  'ENOTDIR',
  'ENOTEMPTY',
  'EMFILE',
  'ENFILE',
  'ENOMEM',
  'ETIMEDOUT',
  'ESTALE',
  'EINVAL',
  'ENODATA',
  'ETXTBSY',
] as const
export type IoErrnoName = (typeof ioErrnoNames)[number]

export const IoSpecFields = {
  path: Type.String({
    minLength: 2,
    maxLength: 4096,
    pattern: '^/',
    description:
      'The directory to lay the faulty file system over, absolute and in normal form, as the target sees it (inside the container for container targets); not /, /proc, /sys, /dev or the agent state dir',
  }),
  glob: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 1000,
      description: 'Which files, as an fnmatch(3) pattern on the path relative to the directory ("*" also crosses "/"); default *',
    }),
  ),
  percent: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 100, multipleOf: 0.01, description: 'Percent of matching operations affected (0.01 steps); default 100' })),
}

export const IoOperationsField = (fallback: readonly IoOperation[]) =>
  Type.Optional(
    Type.Array(Type.Enum(ioOperations), { minItems: 1, maxItems: ioOperations.length, uniqueItems: true, description: `Operations affected; default ${fallback.join(', ')}` }),
  )

/** Every io kind acts on these targets: the mount is made in the target's mount namespace. */
export const ioKindTargets = ['host', 'process', 'container'] as const
