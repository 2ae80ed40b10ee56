import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'
import { DNS_NAME_PATTERN, dnsModes } from './dns-names.js'
import { networkKindTargets } from './fields.js'

const DomainPattern = Type.String({ pattern: DNS_NAME_PATTERN, maxLength: 255 })

export const networkDnsSpec = defineFaultSpec({
  kind: 'network-dns',
  summary: "Make the target's DNS lookups fail (NXDOMAIN, SERVFAIL, timeout) or answer with other addresses (redirect to a resolver the agent runs)",
  targets: networkKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('network-dns'),
      mode: Type.Enum(dnsModes, {
        description: 'nxdomain | servfail | timeout (no answer at all) | override (answer A/AAAA queries with records)',
      }),
      domains: Type.Optional(
        Type.Array(DomainPattern, {
          minItems: 1,
          maxItems: 64,
          uniqueItems: true,
          description: 'Names the fault covers: exact names, or "*.example.com" for every name below example.com. Default: every name. Not with override (records name the names).',
        }),
      ),
      records: Type.Optional(
        Type.Record(Type.String(), Type.String(), {
          minProperties: 1,
          maxProperties: 64,
          description: 'override: name (or "*.suffix") -> IPv4 address (answers A queries) or IPv6 address (answers AAAA queries); other query types of these names get an empty NOERROR answer',
        }),
      ),
      ttl: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400, description: 'override: TTL of the answers in seconds, default 0 (nobody caches them beyond the fault)' })),
      upstream: Type.Optional(
        Type.String({
          maxLength: 45,
          description: "IP address of the resolver names the fault does not cover are forwarded to (port 53); not a loopback forwarder. Default: the first nameserver of the target's resolv.conf (/etc/netns/<name>/resolv.conf for a named netns when it exists, else /etc/resolv.conf; behind systemd-resolved's 127.0.0.53, the stub's first upstream)",
        }),
      ),
    },
    { additionalProperties: false, title: 'network-dns' },
  ),
  example: { mode: 'nxdomain' },
})
