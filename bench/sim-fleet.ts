import { availableParallelism } from 'node:os'
import { performance } from 'node:perf_hooks'
import { Worker } from 'node:worker_threads'
import type { Cleanup } from './lib.js'
import type { FleetCommand, FleetReport } from './sim-fleet-worker.js'

/**
 * Simulated clients spread over worker threads (sim-fleet-worker.ts), so that with thousands of
 * them the client side is not what the bench measures. The server bench and its bare baseline
 * use the same arrangement: the same number of threads for the same number of clients.
 */

/** One thread per 500 clients, at most one per CPU (and at least one). */
export function fleetThreads(clients: number): number {
  return Math.max(1, Math.min(availableParallelism(), Math.ceil(clients / 500)))
}

/** Epoch milliseconds with performance.now()'s resolution: comparable across threads. */
export const epochNow = () => performance.timeOrigin + performance.now()

class FleetThread {
  readonly worker: Worker
  readonly #waiting: { op: FleetReport['op']; resolve: (r: FleetReport) => void; reject: (err: Error) => void }[] = []
  readonly #early: FleetReport[] = []

  constructor() {
    // The bench runs from source under tsx; Node 20 does not carry `--import tsx` into a worker's
    // module loader, so the thread registers tsx itself before it loads the worker module.
    const tsx = import.meta.resolve('tsx/esm/api')
    const entry = new URL('./sim-fleet-worker.ts', import.meta.url).href
    this.worker = new Worker(`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}) })`, { eval: true })
    this.worker.on('message', (r: FleetReport) => {
      if (r.op === 'failed') {
        for (const w of this.#waiting.splice(0)) w.reject(new Error(`simulated fleet thread: ${r.error}`))
        return
      }
      const i = this.#waiting.findIndex((w) => w.op === r.op)
      if (i >= 0) this.#waiting.splice(i, 1)[0]!.resolve(r)
      else this.#early.push(r)
    })
    this.worker.on('error', (err) => {
      for (const w of this.#waiting.splice(0)) w.reject(err)
    })
  }

  /** The next report of this kind (one that came before the call counts). */
  next<K extends FleetReport['op']>(op: K): Promise<Extract<FleetReport, { op: K }>> {
    const i = this.#early.findIndex((r) => r.op === op)
    if (i >= 0) return Promise.resolve(this.#early.splice(i, 1)[0] as Extract<FleetReport, { op: K }>)
    return new Promise((resolve, reject) => this.#waiting.push({ op, resolve: resolve as (r: FleetReport) => void, reject }))
  }

  /** Forgets reports that arrived unasked (an 'all' of a round nobody waited for). */
  dropEarly(): void {
    this.#early.length = 0
  }

  send(cmd: FleetCommand): void {
    this.worker.postMessage(cmd)
  }
}

export class SimFleet {
  readonly #threads: FleetThread[]
  readonly size: number

  private constructor(threads: FleetThread[], size: number) {
    this.#threads = threads
    this.size = size
  }

  /**
   * n clients over fleetThreads(n) threads, connected before it resolves: SimAgents named
   * `${prefix}-${i}` ('agents', to the server's link URL) or bare WebSocket clients ('bare').
   * Closed (threads ended) by `cleanup`.
   */
  static async connect(kind: 'agents' | 'bare', url: string, n: number, cleanup: Cleanup, prefix = 'sim'): Promise<SimFleet> {
    const threads = Array.from({ length: fleetThreads(n) }, () => new FleetThread())
    const fleet = new SimFleet(threads, n)
    cleanup.add(`simulated ${kind} threads`, () => fleet.close())
    const share = Math.ceil(n / threads.length)
    await Promise.all(
      threads.map((t, i) => {
        const from = i * share
        const count = Math.max(0, Math.min(share, n - from))
        t.send(kind === 'agents' ? { op: 'agents', url, prefix, from, count } : { op: 'bare', url, count })
        return t.next('ready')
      }),
    )
    return fleet
  }

  /** Forgets the last answers; resolves once every thread did. */
  async reset(): Promise<void> {
    await Promise.all(
      this.#threads.map(async (t) => {
        t.send({ op: 'reset' })
        await t.next('ready')
        // Reports come in order: whatever arrived before this reset belongs to an earlier round.
        t.dropEarly()
      }),
    )
  }

  /** Resolves once every client answered `what` since the last reset. */
  async allAnswered(what: 'inject' | 'halt' | 'bare'): Promise<void> {
    await Promise.all(this.#threads.map(async (t) => {
      for (;;) if ((await t.next('all')).what === what) return
    }))
  }

  /** Every client's answer times (epoch ms, 0 for none) since the last reset. */
  async times(): Promise<{ inject: number[]; halt: number[]; bare: number[] }> {
    const all = await Promise.all(this.#threads.map((t) => (t.send({ op: 'collect' }), t.next('times'))))
    return { inject: all.flatMap((r) => r.inject), halt: all.flatMap((r) => r.halt), bare: all.flatMap((r) => r.bare) }
  }

  async close(): Promise<void> {
    await Promise.all(
      this.#threads.map(async (t) => {
        t.send({ op: 'close' })
        await Promise.race([t.next('closed'), new Promise((r) => setTimeout(r, 2000).unref())])
        await t.worker.terminate()
      }),
    )
    this.#threads.length = 0
  }
}
