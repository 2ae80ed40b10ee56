import type { FaultKind } from './types.js'
import { networkBandwidth } from './network-bandwidth/index.js'
import { networkCorrupt } from './network-corrupt/index.js'
import { networkDelay } from './network-delay/index.js'
import { networkDns } from './network-dns/index.js'
import { networkDuplicate } from './network-duplicate/index.js'
import { networkLoss } from './network-loss/index.js'
import { networkPartition } from './network-partition/index.js'
import { networkReject } from './network-reject/index.js'
import { networkReorder } from './network-reorder/index.js'
import { processKill } from './process-kill/index.js'
import { processStop } from './process-stop/index.js'

/**
 * The only list of fault kinds. Routes, CLI flags, capability reports and the journal codec all
 * come from here; adding a kind is a folder plus one line below.
 */
export const faultKinds = [
  processKill,
  processStop,
  networkPartition,
  networkReject,
  networkLoss,
  networkCorrupt,
  networkDuplicate,
  networkReorder,
  networkDns,
  networkDelay,
  networkBandwidth,
] as const

export type AnyFaultKind = (typeof faultKinds)[number]
export type FaultKindName = AnyFaultKind['kind']

const byName = new Map<string, FaultKind>(faultKinds.map((k) => [k.kind, k as unknown as FaultKind]))

export function getFaultKind(name: string): FaultKind | undefined {
  return byName.get(name)
}

export const faultKindNames = faultKinds.map((k) => k.kind) as FaultKindName[]
