import { statSync, statfsSync } from 'node:fs'
import { dirname } from 'node:path'
import { isIP } from 'node:net'
import { Value } from 'typebox/value'
import { formatDuration } from '../../protocol/duration.js'
import { checkRequest } from '../../protocol/explain.js'
import type { FaultSpec } from '../../protocol/fault.js'
import { CreateInjectionBodySchema, type CreateInjectionBody } from '../../protocol/injection.js'
import type { TargetSelector } from '../../protocol/target.js'
import {
  actionsOf,
  bodySchemaOf,
  refusedActions,
  type ChaosdKind,
  type ClockBody,
  type DiskBody,
  type FileBody,
  type NetworkBody,
  type ProcessBody,
  type StressBody,
} from './schemas.js'

/**
 * chaosd request bodies -> Faultline injection requests. Pure apart from two read-only looks
 * at the file system that chaosd itself makes for disk attacks (is the path a directory; how
 * large is its file system for a percent). Nothing here touches the host: the Injector does,
 * after the journal write.
 */

/** A body chaosd would call an invalid request: answered 400 error.api.invalid_request. */
export class ChaosdRequestError extends Error {
  override name = 'ChaosdRequestError'
}

export interface TranslateContext {
  /** The deadline of an injection whose body has no duration (Chaos Mesh never sends one). */
  defaultDurationMs: number
  /** What network actions act on: the host's network namespace (tests point it at a test namespace). */
  networkTarget: TargetSelector
}

export interface Translated {
  /** chaosd's action name for the experiment list ("process" and "clock" have no sub-action). */
  action: string
  request: Omit<CreateInjectionBody, 'id'>
}

const refuse = (message: string): never => {
  throw new ChaosdRequestError(message)
}

/** Validates a body against its action's schema and maps it onto a fault kind and target. */
export function translate(kind: ChaosdKind, body: unknown, ctx: TranslateContext): Translated {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) refuse('the body must be a JSON object')
  const raw = body as Record<string, unknown>
  const given = typeof raw.action === 'string' && raw.action !== '' ? raw.action : undefined
  const refused = given ? refusedActions[kind]?.[given] : undefined
  if (refused) refuse(`${kind} action "${given}": ${refused}`)
  const schema = bodySchemaOf(kind, given)
  if (!schema) {
    const known = actionsOf(kind)
    refuse(given ? `unknown ${kind} action "${given}"; known: ${known.join(', ')}` : `${kind} attack needs "action": one of ${known.join(', ')}`)
  }
  if (!Value.Check(schema!, raw)) {
    const first = Value.Errors(schema!, raw)[0]
    const where = first?.instancePath ? first.instancePath.slice(1).replace(/\//g, '.') : ''
    const extra = first && 'params' in first && first.params && typeof first.params === 'object' && 'additionalProperties' in first.params ? ` (${String((first.params as { additionalProperties: unknown }).additionalProperties)})` : ''
    refuse(`${kind}${given ? ` ${given}` : ''}: ${where ? `${where} ` : ''}${first?.message ?? 'is invalid'}${extra}`)
  }
  if (raw.schedule) refuse('schedule is not supported: Chaos Mesh (or cron) owns the schedule; send one attack per run')
  const durationMs = raw.duration ? goDurationMs(String(raw.duration), 'duration') : ctx.defaultDurationMs
  if (durationMs < 1) refuse('duration must be positive')
  const mapped = mapBody(kind, given, raw, ctx)
  const request: Omit<CreateInjectionBody, 'id'> = { ...mapped.request, duration: formatDuration(durationMs) }
  // The same checks as POST /v1/injections: the whole request against its schema, then the
  // cross-field rules (explain.ts), so a body that maps onto an impossible spec is a 400 here.
  if (!Value.Check(CreateInjectionBodySchema, request)) {
    const first = Value.Errors(CreateInjectionBodySchema, request)[0]
    refuse(`${kind}${given ? ` ${given}` : ''} maps onto an invalid ${(request.fault as { kind: string }).kind} request: ${first?.instancePath ?? ''} ${first?.message ?? ''}`.trim())
  }
  try {
    checkRequest(request, 'agent')
  } catch (err) {
    refuse((err as Error).message)
  }
  return { action: mapped.action, request }
}

function mapBody(kind: ChaosdKind, action: string | undefined, raw: Record<string, unknown>, ctx: TranslateContext): { action: string; request: Omit<CreateInjectionBody, 'id' | 'duration'> } {
  switch (kind) {
    case 'process':
      return { action: 'process', request: processRequest(raw as ProcessBody) }
    case 'clock':
      return { action: 'clock', request: clockRequest(raw as ClockBody) }
    case 'network':
      return { action: action!, request: { fault: networkFault(action!, raw), target: ctx.networkTarget } }
    case 'stress':
      return { action: action!, request: { fault: stressFault(action!, raw), target: { type: 'host' } } }
    case 'disk':
      return { action: action!, request: { fault: diskFault(action!, raw), target: { type: 'host' } } }
    case 'file':
      return { action: action!, request: { fault: fileFault(action!, raw), target: { type: 'host' } } }
  }
}

// ---- process ---------------------------------------------------------------------------------

/** Signal numbers (x86-64 and arm64 agree on these) -> process-kill's names. */
const killSignalNames: Record<number, string> = { 1: 'HUP', 2: 'INT', 3: 'QUIT', 6: 'ABRT', 7: 'BUS', 9: 'KILL', 10: 'USR1', 11: 'SEGV', 12: 'USR2', 13: 'PIPE', 14: 'ALRM', 15: 'TERM' }
const SIGSTOP = 19

function processRequest(body: ProcessBody): Omit<CreateInjectionBody, 'id' | 'duration'> {
  if (body.recoverCmd) refuse('recoverCmd is not supported: the agent never runs shell commands')
  let target: TargetSelector
  let maxTargets: number | undefined
  if (/^[0-9]+$/.test(body.process)) {
    const pid = Number(body.process)
    if (pid === 1) refuse('process 1 is the init process; Faultline never faults it')
    if (pid < 1 || pid > 4_194_304) refuse(`process "${body.process}" is not a valid pid`)
    target = { type: 'process', pid }
  } else {
    if (body.process.length > 15 || body.process.includes('/')) refuse(`process "${body.process}": a name is the process's comm, at most 15 characters without "/"`)
    target = { type: 'process', name: body.process }
    // chaosd signals every process of that name; Faultline's default is one (maxTargets 1).
    maxTargets = 10_000
  }
  let fault: FaultSpec
  if (body.signal === SIGSTOP) fault = { kind: 'process-stop' }
  else if (killSignalNames[body.signal]) fault = { kind: 'process-kill', signal: killSignalNames[body.signal] } as FaultSpec
  else {
    return refuse(
      `signal ${body.signal} is not supported: 19 (SIGSTOP, resumed at DELETE) or one of ${Object.keys(killSignalNames).join(', ')} (the process ends; not recoverable)`,
    )
  }
  return { fault, target, ...(maxTargets ? { maxTargets } : {}) }
}

// ---- clock -----------------------------------------------------------------------------------

const clockIds: Record<string, 'realtime' | 'monotonic' | 'boottime'> = { CLOCK_REALTIME: 'realtime', CLOCK_MONOTONIC: 'monotonic', CLOCK_BOOTTIME: 'boottime' }

function clockRequest(body: ClockBody): Omit<CreateInjectionBody, 'id' | 'duration'> {
  if (body.pid === 1) refuse('pid 1 is the init process; Faultline never faults it')
  const ms = goDurationMs(body['time-offset'], 'time-offset', true)
  if (ms === 0) refuse('time-offset must not be zero')
  const ids = (body['clock-ids-slice'] || 'CLOCK_REALTIME').split(',').map((s) => s.trim()).filter(Boolean)
  const clocks = [...new Set(ids.map((id) => clockIds[id] ?? refuse(`clock id "${id}" is not supported: CLOCK_REALTIME, CLOCK_MONOTONIC or CLOCK_BOOTTIME`)))]
  const offset = `${ms < 0 ? '-' : '+'}${formatDuration(Math.abs(ms))}`
  return { fault: { kind: 'time-skew', offset, clocks } as FaultSpec, target: { type: 'process', pid: body.pid } }
}

// ---- network ---------------------------------------------------------------------------------

function networkFault(action: string, raw: Record<string, unknown>): FaultSpec {
  switch (action) {
    case 'delay': {
      const b = raw as NetworkBody<'delay'>
      const jitterMs = b.jitter ? goDurationMs(b.jitter, 'jitter') : 0
      const correlation = percentOrZero(b.correlation, 'correlation')
      return {
        kind: 'network-delay',
        latency: formatDuration(goDurationMs(b.latency, 'latency')),
        ...(jitterMs > 0 ? { jitter: formatDuration(jitterMs) } : {}),
        ...(correlation > 0 ? { correlation } : {}),
        ...filters(b),
      } as FaultSpec
    }
    case 'loss':
    case 'corrupt':
    case 'duplicate': {
      const b = raw as NetworkBody<'loss'>
      const percent = percentOf(b.percent, 'percent')
      const correlation = percentOrZero(b.correlation, 'correlation')
      return { kind: `network-${action}`, percent, ...(correlation > 0 ? { correlation } : {}), ...filters(b) } as FaultSpec
    }
    case 'partition': {
      const b = raw as NetworkBody<'partition'>
      const direction = b.direction === 'to' ? 'egress' : b.direction === 'from' ? 'ingress' : 'both'
      return { kind: 'network-partition', direction, ...filters(b) } as FaultSpec
    }
    case 'dns': {
      const b = raw as NetworkBody<'dns'>
      if (!isIP(b['dns-ip'])) refuse(`dns-ip "${b['dns-ip']}" is not an IP address`)
      if (b['dns-server'] && !isIP(b['dns-server'])) refuse(`dns-server "${b['dns-server']}" is not an IP address`)
      return {
        kind: 'network-dns',
        mode: 'override',
        records: { [b['dns-domain-name']]: b['dns-ip'] },
        ...(b['dns-server'] ? { upstream: b['dns-server'] } : {}),
      } as FaultSpec
    }
    case 'bandwidth': {
      const b = raw as NetworkBody<'bandwidth'>
      const peers = peersOf(b)
      return {
        kind: 'network-bandwidth',
        rate: rateInBits(b.rate),
        limit: String(b.limit),
        burst: String(b.buffer),
        ...(b.device ? { device: b.device } : {}),
        ...(peers.length > 0 ? { peers } : {}),
      } as FaultSpec
    }
    default:
      return refuse(`unknown network action "${action}"`)
  }
}

type FilterBody = { device?: string; 'ip-address'?: string; hostname?: string; 'ip-protocol'?: string; 'source-port'?: string; 'egress-port'?: string }

function filters(b: FilterBody): Record<string, unknown> {
  const peers = peersOf(b)
  const ports = portsOf(b['egress-port'], 'egress-port')
  const localPorts = portsOf(b['source-port'], 'source-port')
  const protocol = b['ip-protocol'] || undefined
  if ((ports.length > 0 || localPorts.length > 0) && protocol !== 'tcp' && protocol !== 'udp') refuse('ip-protocol tcp or udp is required with source-port or egress-port')
  return {
    ...(b.device ? { device: b.device } : {}),
    ...(peers.length > 0 ? { peers } : {}),
    ...(ports.length > 0 ? { ports } : {}),
    ...(localPorts.length > 0 ? { localPorts } : {}),
    ...(protocol ? { protocol } : {}),
  }
}

function peersOf(b: { 'ip-address'?: string; hostname?: string }): string[] {
  const ips = (b['ip-address'] ?? '').split(',').map((s) => s.trim()).filter(Boolean)
  for (const ip of ips) {
    const [addr, bits, more] = ip.split('/')
    const family = isIP(addr ?? '')
    const max = family === 4 ? 32 : 128
    if (!family || more !== undefined || (bits !== undefined && !(/^[0-9]{1,3}$/.test(bits) && Number(bits) <= max))) refuse(`ip-address "${ip}" is not an IP address or CIDR`)
  }
  const hosts = b.hostname ? [b.hostname] : []
  return [...ips, ...hosts]
}

/** "80,8001:8010" -> [80, 8001, ..., 8010]; at most 64 ports (the filters' limit). */
function portsOf(text: string | undefined, what: string): number[] {
  if (!text) return []
  const out = new Set<number>()
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^([0-9]{1,5})(?::([0-9]{1,5}))?$/.exec(part)
    const lo = Number(m?.[1])
    const hi = m?.[2] === undefined ? lo : Number(m[2])
    if (!m || lo < 1 || hi > 65535 || hi < lo) refuse(`${what} "${part}" is not a port or a range like 8001:8010`)
    if (hi - lo > 64) refuse(`${what} "${part}": at most 64 ports`)
    for (let p = lo; p <= hi; p++) out.add(p)
  }
  if (out.size > 64) refuse(`${what}: at most 64 ports`)
  return [...out]
}

function percentOf(text: string | undefined, what: string): number {
  const t = (text ?? '').trim()
  const n = /^[0-9]+(\.[0-9]+)?$/.test(t) ? Number(t) : NaN
  if (!(n > 0 && n <= 100)) refuse(`${what} "${text ?? ''}" not valid: a number above 0 and at most 100`)
  return Math.round(n * 100) / 100
}

function percentOrZero(text: string | undefined, what: string): number {
  const t = (text ?? '').trim()
  if (t === '' || /^0+(\.0+)?$/.test(t)) return 0
  return percentOf(t, what)
}

/** tc's rate units: "bit" units are bits/s; "bps" units are BYTES/s (tc(8)), turned into bits here. */
function rateInBits(text: string): string {
  const m = /^([0-9]+(?:\.[0-9]+)?)([kmgt]?)(bit|bps)$/i.exec(text.trim())
  if (!m) return refuse(`rate "${text}" is not a tc rate: e.g. "1mbit" (bits/s) or "125kbps" (bytes/s)`)
  const scale = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't']
  const bits = Math.round(Number(m[1]) * scale * (m[3]!.toLowerCase() === 'bps' ? 8 : 1))
  if (!Number.isSafeInteger(bits) || bits < 1) refuse(`rate "${text}" is out of range`)
  return `${bits}bit`
}

// ---- stress ----------------------------------------------------------------------------------

function stressFault(action: string, raw: Record<string, unknown>): FaultSpec {
  if (action === 'cpu') {
    const b = raw as StressBody<'cpu'>
    return { kind: 'stress-cpu', ...(b.load ? { load: b.load } : {}), ...(b.workers ? { workers: b.workers } : {}) } as FaultSpec
  }
  const b = raw as StressBody<'mem'>
  return { kind: 'stress-memory', size: stressSize(b.size) } as FaultSpec
}

/** stress-ng's sizes ("512M", "1GB", "50%") in Faultline's grammar (protocol/units.ts). */
function stressSize(text: string): string {
  const t = text.trim()
  if (/^[0-9]{1,3}(\.[0-9]{1,2})?%$/.test(t)) return t
  // Faultline's size grammar reads these as stress-ng does: K/M/G 1024-based, KB/MB/GB 1000-based.
  if (/^[0-9]+(\.[0-9]+)? ?([kmgt](i?b)?|b)?$/i.test(t)) return t
  return refuse(`size "${text}" is not a size: e.g. 512MB, 1GiB, 512M or 50%`)
}

// ---- disk ------------------------------------------------------------------------------------

/** dd(1)'s size units, as Chaos Mesh documents them for disk attacks. */
const ddUnits: Record<string, number> = { '': 1, c: 1, w: 2, b: 512, kB: 1e3, K: 1024, KB: 1e3, KiB: 1024, MB: 1e6, M: 1024 ** 2, MiB: 1024 ** 2, GB: 1e9, G: 1024 ** 3, GiB: 1024 ** 3, TB: 1e12, T: 1024 ** 4, TiB: 1024 ** 4 }

function ddSize(text: string): number {
  const m = /^([0-9]+)\s*([A-Za-z]*)$/.exec(text.trim())
  const unit = m ? ddUnits[m[2]!] : undefined
  if (!m || unit === undefined) return refuse(`size "${text}" is not a dd size: e.g. 512M, 1G, 100MB (units c, w, b, kB, K, MB, M, GB, G, TB, T)`)
  const bytes = Number(m[1]) * unit
  if (!Number.isSafeInteger(bytes) || bytes < 1) refuse(`size "${text}" is out of range`)
  return bytes
}

/** The directory a disk attack works in: the path itself, or the directory of a file not there yet. */
function diskDirectory(path: string, action: string): string {
  let stat
  try {
    stat = statSync(path)
  } catch {
    stat = undefined
  }
  if (stat?.isDirectory()) return path
  if (stat && action === 'fill') refuse(`path ${path} is an existing file: chaosd and Faultline never fill into an existing file; give a directory or a new file name`)
  const dir = dirname(path)
  let parent
  try {
    parent = statSync(dir)
  } catch {
    parent = undefined
  }
  if (!parent?.isDirectory()) refuse(`path ${path}: directory ${dir} does not exist`)
  return dir
}

function diskFault(action: string, raw: Record<string, unknown>): FaultSpec {
  const b = raw as DiskBody<'fill'> & { 'payload-process-num'?: number }
  const dir = diskDirectory(b.path, action)
  if (action === 'fill') {
    if (b.size && b.percent) refuse('give size or percent, not both')
    let bytes: number
    if (b.size) bytes = ddSize(b.size)
    else if (b.percent) {
      // chaosd's percent is a share of the file system's size to allocate (not a target Use%).
      const p = Number(b.percent.trim().replace(/%$/, ''))
      if (!(Number.isInteger(p) && p > 0 && p <= 100)) refuse(`percent "${b.percent}" not valid: a whole number above 0 and at most 100`)
      const fs = statfsSync(dir)
      bytes = Math.floor((fs.blocks * fs.bsize * p) / 100)
    } else return refuse('disk fill needs size or percent')
    return { kind: 'disk-fill', path: dir, size: String(bytes) } as FaultSpec
  }
  if (!b.size) refuse(`disk ${action} needs size`)
  const workers = b['payload-process-num'] || 1
  return { kind: 'stress-io', mode: action === 'write-payload' ? 'write' : 'read', bytes: String(ddSize(b.size!)), workers, path: dir } as FaultSpec
}

// ---- file ------------------------------------------------------------------------------------

function fileFault(action: string, raw: Record<string, unknown>): FaultSpec {
  switch (action) {
    case 'modify': {
      const b = raw as FileBody<'modify'>
      const mode = String(b.privilege).padStart(3, '0')
      if (!/^[0-7]{3,4}$/.test(mode)) refuse(`privilege ${b.privilege} is not an octal mode like 444 or 0`)
      return { kind: 'file-chmod', path: b['file-name'], mode } as FaultSpec
    }
    case 'delete':
      return { kind: 'file-delete', path: (raw as FileBody<'delete'>)['file-name'] } as FaultSpec
    case 'append': {
      const b = raw as FileBody<'append'>
      // chaosd appends the data as a line, count times.
      const text = `${b.data}\n`.repeat(b.count || 1)
      if (text.length > 32768) refuse('data × count is longer than 32768 characters')
      return { kind: 'file-append', path: b['file-name'], text } as FaultSpec
    }
    case 'replace': {
      const b = raw as FileBody<'replace'>
      return { kind: 'file-replace', path: b['file-name'], pattern: b['origin-string'], replacement: b['dest-string'] } as FaultSpec
    }
    default:
      return refuse(`unknown file action "${action}"`)
  }
}

// ---- Go durations ----------------------------------------------------------------------------

const goUnits: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, μs: 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 }

/** Go's time.ParseDuration grammar ("1h30m", "1.5s", "-5m", "300ms") -> whole milliseconds. */
export function goDurationMs(text: string, what: string, signed = false): number {
  const m = /^([+-]?)((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+$/.exec(text.trim())
  if (!m || (!signed && m[1] === '-')) return refuse(`${what} "${text}" is not a${signed ? '' : ' positive'} duration like "100ms", "30s" or "1h30m"`)
  let ms = 0
  for (const part of text.trim().slice(m[1]!.length).matchAll(/([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)/g)) ms += Number(part[1]) * goUnits[part[2]!]!
  if (!Number.isSafeInteger(Math.round(ms))) refuse(`${what} "${text}" is too large`)
  if (ms !== 0 && Math.abs(ms - Math.round(ms)) > 1e-9) refuse(`${what} "${text}": Faultline works in whole milliseconds`)
  return (m[1] === '-' ? -1 : 1) * Math.round(ms)
}
