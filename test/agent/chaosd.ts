// Helpers of the chaosd-compatible API tests (test/agent/chaosd-*.test.ts).
import { spawn } from 'node:child_process'
import { copyFileSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { buildChaosdApi, type ChaosdApiOptions } from '../../agent/chaosd/app.js'
import { silentLogger } from '../../common/logger.js'
import type { Injection } from '../../protocol/injection.js'
import { testAgent, tmpDir, type TestLike } from '../helpers.js'

export interface ChaosdPair {
  agent: FastifyInstance
  api: FastifyInstance
  /** POST /api/attack/<kind> as Chaos Mesh sends it; the parsed answer. */
  attack(kind: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }>
  /** DELETE /api/attack/<uid>. */
  recover(uid: string): Promise<{ status: number; body: Record<string, unknown> }>
  /** The journal's injections (through the main API). */
  injections(): Promise<Injection[]>
}

/** An in-process agent and a chaosd API sharing its Injector; both closed at teardown. */
export async function chaosdPair(t: TestLike, opts: Partial<Pick<ChaosdApiOptions, 'networkTarget' | 'defaultDurationMs'>> = {}): Promise<ChaosdPair> {
  const agent = await testAgent(t)
  const api = await buildChaosdApi({ injector: agent.injector, log: silentLogger(), routes: 'all', defaultDurationMs: 600_000, ...opts })
  t.teardown(() => api.close())
  const json = (res: { statusCode: number; body: string }) => ({ status: res.statusCode, body: (res.body ? JSON.parse(res.body) : {}) as Record<string, unknown> })
  return {
    agent,
    api,
    attack: async (kind, body) => json(await api.inject({ method: 'POST', url: `/api/attack/${kind}`, payload: body as object })),
    recover: async (uid) => json(await api.inject({ method: 'DELETE', url: `/api/attack/${uid}` })),
    injections: async () => (await agent.inject({ method: 'GET', url: '/v1/injections' })).json<{ injections: Injection[] }>().injections,
  }
}

/**
 * Processes with a name of their own (a copy of sleep named `name`), so a by-name attack can
 * only reach them; resumed and killed at teardown.
 */
export function namedSleepers(t: TestLike, name: string, count: number): number[] {
  const dir = tmpDir(t, 'fl-chaosd-')
  const bin = join(dir, name)
  copyFileSync('/bin/sleep', bin)
  const pids: number[] = []
  for (let i = 0; i < count; i++) {
    const child = spawn(bin, ['600'], { stdio: 'ignore' })
    pids.push(child.pid!)
  }
  t.teardown(() => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGCONT')
        process.kill(pid, 'SIGKILL')
      } catch {
        /* gone */
      }
    }
  })
  return pids
}

/** Pids of processes carrying FAULTLINE_STRESS=<injection id> (the stressors of an injection). */
export function stressorsOf(injectionId: string): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(name)) continue
    try {
      const env = readFileSync(`/proc/${name}/environ`, 'latin1').split('\0')
      if (env.includes(`FAULTLINE_STRESS=${injectionId}`)) out.push(Number(name))
    } catch {
      /* gone or not ours to read */
    }
  }
  return out
}

/** The chaosd error shape (pkg/server/utils/error.go). */
export const chaosdError = (code: string) => ({ error: true, code, message: String, full_text: String })
