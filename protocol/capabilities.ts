import { Type, type Static } from 'typebox'
import { PolicyInForceSchema } from './policy.js'

/**
 * Host features the capability probe checks directly (not guessed from versions). Fault kinds
 * name the features they need; a kind whose feature is missing is refused with the feature's
 * detail as the reason.
 */
export const featureNames = [
  'signals',
  'pidfd',
  'tool:ip',
  'tool:tc',
  'tool:nft',
  'tool:iptables',
  'tool:unshare',
  'tool:stress-ng',
  'qdisc:netem',
  'qdisc:tbf',
  'qdisc:htb',
  'qdisc:prio',
  'qdisc:fq',
  'qdisc:fq_codel',
  'qdisc:ingress',
  'tc-filter:u32',
  'tc-action:mirred',
  'tc-action:gact',
  'tc-action:police',
  'link:veth',
  'link:ifb',
  'nft:tables',
  'nft:numgen',
  'nft:reject',
  'nft:queue',
  'nft:redirect',
  'iptables:statistic',
  'iptables:nfqueue',
  'iptables:redirect',
  'helper:netdelay',
  'helper:timeskew',
  'helper:stress',
  'helper:iofault',
  'cgroup:v1',
  'cgroup:v2',
  'cgroup:freezer',
  'ptrace',
  'openat2',
  'fuse',
  'timens',
  'runtime:docker',
  'runtime:containerd',
  'runtime:podman',
  'runtime:crio',
] as const
export type FeatureName = (typeof featureNames)[number]

export const FeatureSchema = Type.Object({
  available: Type.Boolean(),
  detail: Type.String({ description: 'What was checked, and what is missing when unavailable' }),
})
export type Feature = Static<typeof FeatureSchema>

export const KindAvailabilitySchema = Type.Object({
  available: Type.Boolean(),
  reason: Type.Optional(Type.String({ description: 'Why the kind is refused on this host' })),
  requires: Type.Array(Type.String()),
  targets: Type.Array(Type.String()),
  recoverable: Type.Boolean(),
})

export const HostFactsSchema = Type.Object({
  hostname: Type.String(),
  platform: Type.String(),
  distro: Type.String(),
  release: Type.String(),
  kernel: Type.String(),
  arch: Type.String(),
  cpuModel: Type.String(),
  cpuCores: Type.Integer(),
  memTotalBytes: Type.Number(),
  agentPid: Type.Integer(),
  agentVersion: Type.String(),
  nodeVersion: Type.String(),
})
export type HostFacts = Static<typeof HostFactsSchema>

export const CapabilitiesSchema = Type.Object(
  {
    probedAt: Type.String({ format: 'date-time' }),
    probeMs: Type.Number(),
    host: HostFactsSchema,
    features: Type.Record(Type.String(), FeatureSchema),
    kinds: Type.Record(Type.String(), KindAvailabilitySchema),
    policy: Type.Optional(PolicyInForceSchema),
    limits: Type.Optional(
      Type.Object({
        minDuration: Type.String({ description: 'Shortest duration an injection may ask for' }),
        maxDuration: Type.String({ description: "Longest duration an injection may ask for (the agent's --max-duration; a host policy's maxDuration may be lower)" }),
      }),
    ),
  },
  { title: 'Capabilities' },
)
export type Capabilities = Static<typeof CapabilitiesSchema>
export type FeatureMap = Record<FeatureName, Feature>
