import { performance } from 'node:perf_hooks'
import { parentPort } from 'node:worker_threads'
import WebSocket from 'ws'
import { SimAgent } from './lib.js'

/**
 * One worker thread of a SimFleet (sim-fleet.ts): it holds its share of the simulated clients,
 * either SimAgents speaking the link protocol to the server or bare WebSocket clients of the
 * baseline server, and reports when they answered. Times cross threads as epoch milliseconds
 * (performance.timeOrigin + performance.now()): each thread has its own performance.now().
 */

export type FleetCommand =
  | { op: 'agents'; url: string; prefix: string; from: number; count: number }
  | { op: 'bare'; url: string; count: number }
  | { op: 'reset' }
  | { op: 'collect' }
  | { op: 'close' }

export type FleetReport =
  | { op: 'ready' }
  | { op: 'all'; what: 'inject' | 'halt' | 'bare' }
  | { op: 'times'; inject: number[]; halt: number[]; bare: number[] }
  | { op: 'closed' }
  | { op: 'failed'; error: string }

const port = parentPort!
const epochOf = (now: number) => performance.timeOrigin + now
const report = (r: FleetReport) => port.postMessage(r)

const agents: SimAgent[] = []
const bare: { ws: WebSocket; at: number }[] = []
const answered = { inject: 0, halt: 0, bare: 0 }

function counted(what: 'inject' | 'halt' | 'bare', size: number): void {
  if (++answered[what] === size) report({ op: 'all', what })
}

/** Opens clients in batches of 50, as connectSimAgents does: a fleet comes up over some time. */
async function inBatches<T>(count: number, open: (i: number) => T, ready: (c: T) => Promise<unknown>): Promise<T[]> {
  const all: T[] = []
  for (let i = 0; i < count; i += 50) {
    const batch = Array.from({ length: Math.min(50, count - i) }, (_, j) => open(i + j))
    all.push(...batch)
    await Promise.all(batch.map(ready))
  }
  return all
}

async function handle(cmd: FleetCommand): Promise<void> {
  switch (cmd.op) {
    case 'agents': {
      const opened = await inBatches(
        cmd.count,
        (i) => new SimAgent(cmd.url, `${cmd.prefix}-${cmd.from + i}`, { onAnswer: (what) => counted(what, agents.length) }),
        (a) => a.ready,
      )
      agents.push(...opened)
      return report({ op: 'ready' })
    }
    case 'bare': {
      const opened = await inBatches(
        cmd.count,
        () => {
          const c = { ws: new WebSocket(cmd.url, { perMessageDeflate: false }), at: 0 }
          c.ws.on('message', () => {
            c.at = epochOf(performance.now())
            c.ws.send('{"type":"pong"}')
            counted('bare', bare.length)
          })
          return c
        },
        (c) => new Promise((resolve, reject) => c.ws.once('open', resolve).once('error', reject)),
      )
      bare.push(...opened)
      return report({ op: 'ready' })
    }
    case 'reset':
      for (const a of agents) a.activeAt = a.haltAt = 0
      for (const c of bare) c.at = 0
      answered.inject = answered.halt = answered.bare = 0
      return report({ op: 'ready' })
    case 'collect':
      return report({
        op: 'times',
        inject: agents.map((a) => (a.activeAt === 0 ? 0 : epochOf(a.activeAt))),
        halt: agents.map((a) => (a.haltAt === 0 ? 0 : epochOf(a.haltAt))),
        bare: bare.map((c) => c.at),
      })
    case 'close':
      for (const a of agents) a.close()
      for (const c of bare) c.ws.terminate()
      agents.length = bare.length = 0
      return report({ op: 'closed' })
  }
}

port.on('message', (cmd: FleetCommand) => {
  handle(cmd).catch((err: Error) => report({ op: 'failed', error: err.message }))
})
