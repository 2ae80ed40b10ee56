import type { TObject } from 'typebox'
import type { FaultKindName, FaultSpecOf } from '../../protocol/faults/index.js'
import { diskFill } from './disk-fill/index.js'
import { fileAppend } from './file-append/index.js'
import { fileChmod } from './file-chmod/index.js'
import { fileCorrupt } from './file-corrupt/index.js'
import { fileDelete } from './file-delete/index.js'
import { fileReplace } from './file-replace/index.js'
import { ioCorrupt } from './io-corrupt/index.js'
import { ioError } from './io-error/index.js'
import { ioLatency } from './io-latency/index.js'
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
import type { FaultKind } from './types.js'

/**
 * How the agent does each kind of protocol/faults: one implementation per spec, keyed by its name.
 * The `satisfies` makes a spec without an implementation, an implementation of no spec, or one
 * filed under another kind's name a compile error.
 */
export const faultImplementations = {
  'process-kill': processKill,
  'process-stop': processStop,
  'network-partition': networkPartition,
  'network-reject': networkReject,
  'network-loss': networkLoss,
  'network-corrupt': networkCorrupt,
  'network-duplicate': networkDuplicate,
  'network-reorder': networkReorder,
  'network-dns': networkDns,
  'network-delay': networkDelay,
  'network-bandwidth': networkBandwidth,
  'stress-cpu': stressCpu,
  'stress-memory': stressMemory,
  'stress-io': stressIo,
  'time-skew': timeSkew,
  'disk-fill': diskFill,
  'file-delete': fileDelete,
  'file-chmod': fileChmod,
  'file-append': fileAppend,
  'file-replace': fileReplace,
  'file-corrupt': fileCorrupt,
  'io-latency': ioLatency,
  'io-error': ioError,
  'io-corrupt': ioCorrupt,
} as const satisfies { [K in FaultKindName]: FaultKind<K, FaultSpecOf<K>['specSchema'], TObject, TObject, unknown> }

export type AnyFaultKind = (typeof faultImplementations)[FaultKindName]

/** Every implementation, in the order of protocol/faults, with their types erased (capability reports, tests). */
export const faultKinds: readonly FaultKind[] = Object.values(faultImplementations)

const byName = new Map<string, FaultKind>(faultKinds.map((k) => [k.kind, k]))

/** A kind by a name from outside, with its types erased (tests, tools); undefined when this agent does not know it. */
export function getFaultKind(name: string): FaultKind | undefined {
  return byName.get(name)
}
