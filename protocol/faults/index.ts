import type { Static } from 'typebox'
import { diskFillSpec } from './disk-fill.js'
import { fileAppendSpec } from './file-append.js'
import { fileChmodSpec } from './file-chmod.js'
import { fileCorruptSpec } from './file-corrupt.js'
import { fileDeleteSpec } from './file-delete.js'
import { fileReplaceSpec } from './file-replace.js'
import { ioCorruptSpec } from './io-corrupt.js'
import { ioErrorSpec } from './io-error.js'
import { ioLatencySpec } from './io-latency.js'
import { networkBandwidthSpec } from './network-bandwidth.js'
import { networkCorruptSpec } from './network-corrupt.js'
import { networkDelaySpec } from './network-delay.js'
import { networkDnsSpec } from './network-dns.js'
import { networkDuplicateSpec } from './network-duplicate.js'
import { networkLossSpec } from './network-loss.js'
import { networkPartitionSpec } from './network-partition.js'
import { networkRejectSpec } from './network-reject.js'
import { networkReorderSpec } from './network-reorder.js'
import { processKillSpec } from './process-kill.js'
import { processStopSpec } from './process-stop.js'
import { stressCpuSpec } from './stress-cpu.js'
import { stressIoSpec } from './stress-io.js'
import { stressMemorySpec } from './stress-memory.js'
import { timeSkewSpec } from './time-skew.js'

export type { FaultSpecDefinition } from './define.js'

/**
 * The only list of fault kinds. Everything keyed by kind comes from it: the request schema
 * (protocol/fault.ts), the agent's implementations (checked against it with `satisfies`), CLI
 * flags and help, capability reports, the dashboard's forms. Adding a kind: a spec file here,
 * one line below, and its implementation folder plus one registry line in agent/faults/.
 */
export const faultSpecs = [
  processKillSpec,
  processStopSpec,
  networkPartitionSpec,
  networkRejectSpec,
  networkLossSpec,
  networkCorruptSpec,
  networkDuplicateSpec,
  networkReorderSpec,
  networkDnsSpec,
  networkDelaySpec,
  networkBandwidthSpec,
  stressCpuSpec,
  stressMemorySpec,
  stressIoSpec,
  timeSkewSpec,
  diskFillSpec,
  fileDeleteSpec,
  fileChmodSpec,
  fileAppendSpec,
  fileReplaceSpec,
  fileCorruptSpec,
  ioLatencySpec,
  ioErrorSpec,
  ioCorruptSpec,
] as const

export type AnyFaultSpec = (typeof faultSpecs)[number]
export type FaultKindName = AnyFaultSpec['kind']
/** The spec definition of one kind, by name. */
export type FaultSpecOf<K extends FaultKindName> = Extract<AnyFaultSpec, { kind: K }>
/** The parameters of one kind, as a request carries them. */
export type FaultParams<K extends FaultKindName> = Static<FaultSpecOf<K>['specSchema']>

export const faultKindNames: readonly FaultKindName[] = faultSpecs.map((s) => s.kind)

const byName = new Map<string, AnyFaultSpec>(faultSpecs.map((s) => [s.kind, s]))

/** The spec of a kind name from outside (a request, a journal row); undefined when unknown. */
export function faultSpecNamed(name: string): AnyFaultSpec | undefined {
  return byName.get(name)
}

export function isFaultKindName(name: string): name is FaultKindName {
  return byName.has(name)
}
