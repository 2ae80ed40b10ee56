// The fake resolver's decision for one DNS message: pure (bytes in, bytes out), so it is
// unit-tested without a namespace. Runs inside the resolver process.
import { isIP } from 'node:net'
import { createRequire } from 'node:module'
import { isCovered, findRecord, normalizeName, type AnswerRules } from './config.js'

/** The part of dns-packet (no bundled types) this module uses. */
interface DnsQuestion {
  name: string
  type: string
  class?: string
}
interface DnsRecord {
  type: string
  name: string
  ttl?: number
  class?: string
  data?: string
  udpPayloadSize?: number
  options?: unknown[]
}
interface DnsMessage {
  id: number
  type: 'query' | 'response'
  flags: number
  opcode: string
  questions: DnsQuestion[]
  additionals: DnsRecord[]
}
interface DnsPacketApi {
  decode(buf: Buffer): DnsMessage
  answer: { encode(record: DnsRecord): Buffer }
  question: { decode: { (buf: Buffer, offset: number): DnsQuestion; bytes: number } }
}

const dnsPacket = createRequire(import.meta.url)('dns-packet') as DnsPacketApi

export type Decision =
  | { action: 'forward' }
  | { action: 'drop' }
  | { action: 'reply'; message: Buffer; rcode: number; answers: number }

export const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3 } as const

// Header flag bits (RFC 1035 4.1.1)
const QR = 0x8000
const RD = 0x0100
const RA = 0x0080
const CD = 0x0010

/**
 * What to do with one message received on port 53:
 * - names the fault does not cover, and anything that is not a plain one-question QUERY, are
 *   forwarded to the upstream unchanged;
 * - covered names: nxdomain -> NXDOMAIN, servfail -> SERVFAIL, timeout -> no answer at all;
 *   override -> the configured address for A (IPv4 record) or AAAA (IPv6 record) queries, and
 *   NOERROR with no records (NODATA) for every other type of that name, so a dual-stack client
 *   uses the overridden address instead of falling back to the real one;
 * - responses and runts are dropped.
 * Synthesised answers carry no SOA, so no resolver caches the failure beyond the fault.
 */
export function decide(query: Buffer, rules: AnswerRules): Decision {
  if (query.length < 12) return { action: 'drop' }
  if (query.readUInt16BE(2) & QR) return { action: 'drop' }
  let message: DnsMessage
  let questionEnd: number
  try {
    message = dnsPacket.decode(query)
    dnsPacket.question.decode(query, 12)
    questionEnd = 12 + dnsPacket.question.decode.bytes
  } catch {
    return { action: 'forward' }
  }
  const question = message.questions[0]
  if (message.opcode !== 'QUERY' || message.questions.length !== 1 || !question) return { action: 'forward' }
  const name = normalizeName(question.name)
  if (!isCovered(name, rules)) return { action: 'forward' }

  switch (rules.mode) {
    case 'timeout':
      return { action: 'drop' }
    case 'nxdomain':
      return reply(query, questionEnd, message, RCODE.NXDOMAIN, [])
    case 'servfail':
      return reply(query, questionEnd, message, RCODE.SERVFAIL, [])
    case 'override': {
      const address = findRecord(name, rules.records)!
      const type = isIP(address) === 6 ? 'AAAA' : 'A'
      const wanted = question.type === type || question.type === 'ANY'
      const answers = wanted ? [{ type, name: question.name, class: 'IN', ttl: rules.ttl, data: address }] : []
      return reply(query, questionEnd, message, RCODE.NOERROR, answers)
    }
  }
}

/**
 * A response built around the query's own question bytes (so the 0x20 case pattern, class and
 * type come back exactly as asked), with an EDNS OPT record when the query had one (RFC 6891).
 */
function reply(query: Buffer, questionEnd: number, message: DnsMessage, rcode: number, answers: DnsRecord[]): Decision {
  const flags = QR | (message.flags & (RD | CD)) | RA | rcode
  const edns = message.additionals.some((r) => r.type === 'OPT')
  const header = Buffer.alloc(12)
  header.writeUInt16BE(message.id, 0)
  header.writeUInt16BE(flags, 2)
  header.writeUInt16BE(1, 4)
  header.writeUInt16BE(answers.length, 6)
  header.writeUInt16BE(0, 8)
  header.writeUInt16BE(edns ? 1 : 0, 10)
  const parts = [header, query.subarray(12, questionEnd), ...answers.map((a) => dnsPacket.answer.encode(a))]
  if (edns) parts.push(dnsPacket.answer.encode({ type: 'OPT', name: '.', udpPayloadSize: 1232, options: [] }))
  return { action: 'reply', message: Buffer.concat(parts), rcode, answers: answers.length }
}
