// A fake agent for server tests: it speaks the link protocol over a real WebSocket to a server
// listening on loopback (app.injectWS never settles when the upgrade is refused), answers
// inject / recover / halt the way a real agent would, and can send anything
// else a test wants, valid or not.
import type { FastifyInstance } from 'fastify'
import WebSocket from 'ws'
import { LINK_PROTOCOL_VERSION, type ServerMessage } from '../../protocol/link.js'
import { waitFor } from '../helpers.js'

export const fakeCapabilities = {
  probedAt: new Date().toISOString(),
  probeMs: 1,
  host: {
    hostname: 'fake',
    platform: 'linux',
    distro: 'Debian',
    release: '12',
    kernel: '6.1',
    arch: 'x64',
    cpuModel: 'fake',
    cpuCores: 2,
    memTotalBytes: 1,
    agentPid: 1,
    agentVersion: '0.0.0',
    nodeVersion: 'v20',
  },
  features: {},
  kinds: { 'process-stop': { available: true, requires: ['signals'], targets: ['process'], recoverable: true } },
}

export function fakeInjection(id: string, requestId: string, status: string, pid = 4242) {
  const now = new Date().toISOString()
  return {
    id,
    requestId,
    kind: 'process-stop',
    status,
    fault: { kind: 'process-stop' },
    target: { type: 'process', name: 'sleep' },
    resolved: { type: 'process', pid, startTime: 1, comm: 'sleep', cmdline: 'sleep 600', state: 'S' },
    plan: { steps: [] },
    duration: '30s',
    durationMs: 30_000,
    recoverable: true,
    createdAt: now,
    expiresAt: now,
    updatedAt: now,
    notes: [],
  }
}

export interface FakeAgent {
  id: string
  credential: string | undefined
  ws: WebSocket
  received: ServerMessage[]
  /** Sends a message as JSON (or a raw string / buffer as it is). */
  send(message: unknown): void
  hello(extra?: Record<string, unknown>): void
  /** Waits for the next message of this type that arrived after `from` messages. */
  next<T extends ServerMessage['type']>(type: T, from?: number): Promise<Extract<ServerMessage, { type: T }>>
  /** Injections the fake currently has "active", by id. */
  open: Map<string, ReturnType<typeof fakeInjection>>
  closed: Promise<{ code: number; reason: string }>
}

/** ws:// address of the agent link of a server that listens (on loopback). */
export function linkUrl(app: FastifyInstance): string {
  const address = app.server.address()
  if (!address || typeof address === 'string') throw new Error('the server does not listen on a TCP port')
  return `ws://127.0.0.1:${address.port}/v1/agents/connect`
}

/** Opens a link socket with these upgrade headers; rejects with "Unexpected server response: 401" when refused. */
export function openLink(app: FastifyInstance, headers: Record<string, string>, onInit?: (ws: WebSocket) => void): Promise<WebSocket> {
  const ws = new WebSocket(linkUrl(app), { headers, perMessageDeflate: false })
  onInit?.(ws)
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws))
    ws.once('error', (err) => {
      ws.terminate()
      reject(err)
    })
  })
}

export async function connectFake(
  app: FastifyInstance,
  opts: { name: string; authorization?: string; labels?: Record<string, string>; autoHello?: boolean; answer?: boolean; heartbeats?: boolean },
): Promise<FakeAgent> {
  const received: ServerMessage[] = []
  let resolveClosed!: (v: { code: number; reason: string }) => void
  const closed = new Promise<{ code: number; reason: string }>((r) => (resolveClosed = r))
  const ws = await openLink(app, { 'x-faultline-agent-name': opts.name, ...(opts.authorization ? { authorization: opts.authorization } : {}) }, (socket) => {
    socket.on('message', (data: Buffer) => received.push(JSON.parse(data.toString()) as ServerMessage))
    socket.on('close', (code: number, reason: Buffer) => resolveClosed({ code, reason: reason.toString() }))
  })
  const welcome = await waitFor('welcome', () => received.find((m) => m.type === 'welcome') as Extract<ServerMessage, { type: 'welcome' }> | undefined)
  const open = new Map<string, ReturnType<typeof fakeInjection>>()
  // Heartbeats as a real agent sends them once it said hello (the server closes silent links).
  let heartbeats: NodeJS.Timeout | undefined
  ws.on('close', () => clearInterval(heartbeats))
  const send = (message: unknown) => ws.send(typeof message === 'string' || Buffer.isBuffer(message) ? message : JSON.stringify(message))
  const agent: FakeAgent = {
    id: welcome.agentId,
    credential: welcome.credential,
    ws,
    received,
    send,
    open,
    closed,
    hello: (extra = {}) => {
      send({ v: LINK_PROTOCOL_VERSION, type: 'hello', agentId: welcome.agentId, version: '0.0.0-fake', hostname: opts.name, labels: opts.labels ?? {}, capabilities: fakeCapabilities, targets: [], open: [...open.values()], ...extra })
      send({ v: LINK_PROTOCOL_VERSION, type: 'heartbeat', at: new Date().toISOString() })
      if (opts.heartbeats === false || heartbeats) return
      heartbeats = setInterval(() => {
        if (ws.readyState === ws.OPEN) send({ v: LINK_PROTOCOL_VERSION, type: 'heartbeat', at: new Date().toISOString() })
      }, welcome.heartbeatMs)
      heartbeats.unref()
    },
    next: async (type, from = 0) =>
      waitFor(`a ${type} message`, () => received.slice(from).find((m) => m.type === type) as never, 5_000),
  }
  if (opts.answer !== false) {
    // Behave like an agent: inject -> active; recover / halt -> recovered, with updates.
    ws.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString()) as ServerMessage
      if (m.type === 'inject') {
        const inj = fakeInjection(m.requestId, m.requestId, 'active')
        open.set(inj.id, inj)
        send({ v: LINK_PROTOCOL_VERSION, type: 'injection-update', injection: inj, reason: 'apply', runId: m.runId })
        send({ v: LINK_PROTOCOL_VERSION, type: 'inject-result', requestId: m.requestId, injections: [inj] })
      } else if (m.type === 'recover' || m.type === 'halt') {
        const ids = m.type === 'halt' ? [...open.keys()] : (m.injectionIds ?? [...open.keys()])
        for (const id of ids) {
          const inj = open.get(id)
          if (!inj) continue
          open.delete(id)
          send({ v: LINK_PROTOCOL_VERSION, type: 'injection-update', injection: { ...inj, status: 'recovered' }, reason: m.type === 'halt' ? 'halt' : 'abort' })
        }
        send({ v: LINK_PROTOCOL_VERSION, type: 'ack', requestId: m.requestId })
      }
    })
  }
  if (opts.autoHello !== false) agent.hello()
  await waitFor('the server to see the agent', () => (app.fleet.hub.isReady(agent.id) || opts.autoHello === false ? true : undefined), 5_000)
  return agent
}
