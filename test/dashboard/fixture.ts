// The dashboard's test bed: a real server (buildServer, listening on 127.0.0.1 over plain HTTP,
// as an operator tries it on one machine), two real agents (`faultline agent` processes, each in
// a PID namespace of its own with its own `sleep` to fault, as separate as hosts), API tokens for
// each role, and Debian's Chromium driven by playwright-core. Everything is removed at teardown.
import { spawnSync } from 'node:child_process'
import { randomBytes, randomInt } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import type { FastifyInstance } from 'fastify'
import { buildServer } from '../../server/app.js'
import { cliEntry, repoRoot, spawnLogged, tmpDir, waitFor, type LoggedProcess, type TestLike } from '../helpers.js'

export const CHROMIUM = '/usr/bin/chromium'

/** Why the browser tests cannot run here, or undefined. FAULTLINE_TEST_REQUIRE_BROWSER=1 turns a reason into a failure. */
export function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (the agents run in PID namespaces of their own)'
  if (!existsSync(CHROMIUM)) return `needs Chromium at ${CHROMIUM} (apt-get install chromium)`
  return undefined
}

/** Builds dist/web when web/ changed since the last build (npm test builds it first anyway). */
export function ensureWebBuild(): void {
  const built = join(repoRoot, 'dist', 'web', 'build.json')
  const newest = (dir: string): number =>
    Math.max(...readdirSync(dir).map((f) => (statSync(join(dir, f)).isDirectory() ? newest(join(dir, f)) : statSync(join(dir, f)).mtimeMs)))
  if (existsSync(built) && statSync(built).mtimeMs > Math.max(newest(join(repoRoot, 'web')), statSync(join(repoRoot, 'scripts', 'build-web.mjs')).mtimeMs)) return
  const res = spawnSync(process.execPath, [join(repoRoot, 'scripts', 'build-web.mjs')], { encoding: 'utf8' })
  if (res.status !== 0) throw new Error(`build-web failed: ${res.stderr}`)
}

export interface HostAgent {
  name: string
  proc: LoggedProcess
  /** Host pid of the agent's own `sleep`: the process the experiments stop. */
  sleeper: number
}

function findProcess(argv: string[]): number | undefined {
  const want = argv.join('\0') + '\0'
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8') === want) return Number(entry)
    } catch {
      /* gone */
    }
  }
  return undefined
}

export interface Bed {
  base: string
  admin: string
  app: FastifyInstance
  agents: HostAgent[]
  label: string
  api<T = Record<string, unknown>>(method: string, path: string, token?: string, body?: unknown): Promise<{ status: number; body: T }>
  browser: Browser
  /** A fresh browser context and page at the dashboard (closed at teardown); phone: 390 px wide. */
  page(t: TestLike, opts?: { phone?: boolean }): Promise<{ context: BrowserContext; page: Page; cspViolations: string[] }>
  /** Signs the page in with a token and waits for the role in the header. */
  signIn(page: Page, token: string, role: string): Promise<void>
  /** Writes a screenshot to the temp dir, and to docs/images/ with FAULTLINE_UPDATE_SCREENSHOTS=1. */
  screenshot(t: TestLike, page: Page, name: string): Promise<void>
}

export const SCREENSHOT_DIR = join(tmpdir(), 'faultline-dashboard-screenshots')

export async function startBed(t: TestLike): Promise<Bed> {
  ensureWebBuild()
  const dir = tmpDir(t, 'fl-dashboard-')
  const admin = `fla_${randomBytes(16).toString('hex')}`
  const enrol = `fle_${randomBytes(16).toString('hex')}`
  writeFileSync(join(dir, 'enrol-token'), enrol, { mode: 0o600 })
  const app = await buildServer({ stateDir: join(dir, 'server'), adminToken: admin, enrolToken: enrol, leaseMs: 6_000 })
  t.teardown(() => app.close())
  const base = await app.listen({ host: '127.0.0.1', port: 0 })

  const api: Bed['api'] = async (method, path, token = admin, body) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    })
    const text = await res.text()
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as never }
  }

  const label = `dash-${randomBytes(3).toString('hex')}`
  const startAgent = async (name: string): Promise<HostAgent> => {
    const sleeperArgv = ['sleep', `${randomInt(3000, 3600)}.${process.pid}${randomInt(1000, 9999)}`]
    const proc = spawnLogged(t, [
      'unshare', '--pid', '--fork', '--mount-proc', '--kill-child',
      // The agent's own "host process": a sleep in its PID namespace, then the agent (PID 1 there).
      'sh', '-c', 'sleep "$0" & exec "$@"', sleeperArgv[1]!,
      process.execPath, '--import', 'tsx', cliEntry, 'agent', '--listen', '127.0.0.1:0', '--state-dir', join(dir, `agent-${name}`), '--log-level', 'info',
      '--server', `ws://127.0.0.1:${new URL(base).port}`, '--enrol-token-file', join(dir, 'enrol-token'),
      '--labels', `role=${label},zone=${name.endsWith('1') ? 'a' : 'b'}`, '--name', name,
    ])
    const sleeper = await waitFor(`${name}'s sleep`, () => {
      if (!proc.running()) throw new Error(`agent ${name} exited: ${proc.stderr()}`)
      return findProcess(sleeperArgv)
    }, 30_000)
    return { name, proc, sleeper }
  }
  const agents = await Promise.all([startAgent(`${label}-1`), startAgent(`${label}-2`)])
  await waitFor('both agents connected', async () => {
    const { body } = await api<{ agents: { connected: boolean }[] }>('GET', '/v1/agents')
    return body.agents.filter((a) => a.connected).length === 2 ? true : undefined
  }, 60_000, 200)

  const { chromium } = await import('playwright-core')
  // As root, Chromium's sandbox cannot start; the page is our own, on loopback.
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  t.teardown(() => browser.close())

  const bed: Bed = {
    base,
    admin,
    app,
    agents,
    label,
    api,
    browser,
    async page(t, opts = {}) {
      const context = await browser.newContext({
        viewport: opts.phone ? { width: 390, height: 844 } : { width: 1280, height: 800 },
        ...(opts.phone ? { deviceScaleFactor: 2, isMobile: true, hasTouch: true } : {}),
        colorScheme: 'light',
        reducedMotion: 'reduce',
      })
      t.teardown(() => context.close())
      const page = await context.newPage()
      const cspViolations: string[] = []
      page.on('console', (m) => {
        if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text())
      })
      page.on('pageerror', (err) => t.comment(`page error: ${err.message}`))
      await page.goto(base)
      return { context, page, cspViolations }
    },
    async signIn(page, token, role) {
      await page.getByLabel('API token').fill(token)
      await page.getByRole('button', { name: 'Sign in' }).click()
      await page.getByTestId('role').filter({ hasText: role }).waitFor()
    },
    async screenshot(t, page, name) {
      mkdirSync(SCREENSHOT_DIR, { recursive: true })
      const file = join(SCREENSHOT_DIR, `dashboard-${name}.png`)
      // Relative times ("3s ago") and the like differ between runs; the layout is what matters.
      await page.screenshot({ path: file, fullPage: false, animations: 'disabled' })
      if (process.env.FAULTLINE_UPDATE_SCREENSHOTS === '1') {
        mkdirSync(join(repoRoot, 'docs', 'images'), { recursive: true })
        writeFileSync(join(repoRoot, 'docs', 'images', `dashboard-${name}.png`), readFileSync(file))
      }
      t.comment(`screenshot ${file}`)
    },
  }
  return bed
}
