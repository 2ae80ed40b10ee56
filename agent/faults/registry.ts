import type { FaultKind } from './types.js'
import { diskFill } from './disk-fill/index.js'
import { fileAppend } from './file-append/index.js'
import { fileChmod } from './file-chmod/index.js'
import { fileCorrupt } from './file-corrupt/index.js'
import { fileDelete } from './file-delete/index.js'
import { fileReplace } from './file-replace/index.js'
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
import { stressCpu } from './stress-cpu/index.js'
import { stressIo } from './stress-io/index.js'
import { stressMemory } from './stress-memory/index.js'
import { timeSkew } from './time-skew/index.js'

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
  stressCpu,
  stressMemory,
  stressIo,
  timeSkew,
  diskFill,
  fileDelete,
  fileChmod,
  fileAppend,
  fileReplace,
  fileCorrupt,
] as const

export type AnyFaultKind = (typeof faultKinds)[number]
export type FaultKindName = AnyFaultKind['kind']

const byName = new Map<string, FaultKind>(faultKinds.map((k) => [k.kind, k as unknown as FaultKind]))

export function getFaultKind(name: string): FaultKind | undefined {
  return byName.get(name)
}

export const faultKindNames = faultKinds.map((k) => k.kind) as FaultKindName[]
