/**
 * DNS name patterns of network-dns: a name, optionally "*." in front (every name below it),
 * optionally with a trailing dot. No imports: the agent's fake resolver loads this too and
 * should start fast.
 */
const label = '[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?'
export const DNS_NAME_PATTERN = `^(?:\\*\\.)?(?:${label}\\.)*${label}\\.?$`

export const dnsModes = ['nxdomain', 'servfail', 'timeout', 'override'] as const
export type DnsMode = (typeof dnsModes)[number]
