import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { gzipSync } from 'node:zlib'
import type { Browser, Page } from 'playwright-core'
import { faultKindNames } from '../protocol/faults/index.js'
import { connectSimAgents, formatMachine, machineInfo, ratio, repoRoot, SIM_ADMIN_TOKEN, simCapabilities, sleep, startServer, stderrProgress, table, withCleanup, type MachineInfo } from './lib.js'

/**
 * The dashboard's fleet page with 1000 agents (issue 15): page weight and time to first render.
 *
 * The built server (its own process, as bench/server.ts starts it) with N simulated agents
 * (SimAgent in lib.ts), each with three labels and every fault kind protocol/faults knows, three of them unavailable
 * with a reason; a third of them (role=db) hold an active injection of a running experiment.
 * Headless Chromium (Debian's /usr/bin/chromium through playwright-core), one browser for the
 * whole run, a fresh context (empty cache and storage) per load, 1280×800, the admin token put
 * in sessionStorage before the page's own scripts run, so the page goes straight to the fleet.
 *
 * - first render: from the navigation start (the page's time origin) to the first animation
 *   frame in which the fleet table holds a row for every agent. A requestAnimationFrame loop
 *   installed before any page script counts `table.fleet > tbody > tr[data-agent]` each frame;
 *   nothing passes before the last row exists.
 * - baseline, interleaved with it (same browser, same fresh context per load): a static page with
 *   the same table, the same data (GET /v1/agents as the page got it) in the same markup and the
 *   dashboard's own stylesheet, server-rendered, no JavaScript, gzip, from a bare Node http
 *   server in this process. The figure is the ratio of medians.
 * - page weight: on the first load, the encoded (gzip, as sent) bodies of every JS and CSS
 *   response, from the network (Playwright's request sizes); then the chunks opening the
 *   experiment editor adds.
 * - GET /v1/agents: its size and time, from Node over loopback, with the admin token.
 */

export const CHROMIUM = '/usr/bin/chromium'

export interface DashboardBenchResult {
  machine: MachineInfo
  agents: number
  faultedAgents: number
  rounds: number
  /** Navigation start → every row in the DOM, per round. */
  fleetMs: number[]
  /** Navigation start → the page starts its GET /v1/agents, and → that answer fully received, per round. */
  fleetApiStartMs: number[]
  fleetApiDoneMs: number[]
  baselineMs: number[]
  fleetMedianMs: number
  fleetApiStartMedianMs: number
  fleetApiDoneMedianMs: number
  baselineMedianMs: number
  /** Median over median. */
  ratio: number
  firstLoad: { jsGzipBytes: number; cssGzipBytes: number; htmlBytes: number; files: { url: string; type: string; bytes: number }[] }
  editor: { jsGzipBytes: number; files: { url: string; bytes: number }[] }
  baselineHtmlGzipBytes: number
  agentsApi: { bytes: number; gzipBytes: number; medianMs: number; maxMs: number; rounds: number }
}

/** Kinds a simulated host lacks, with the kind of reason a real agent gives. */
const UNAVAILABLE: Record<string, string> = {
  'time-skew': 'kernel lacks time namespaces (CONFIG_TIME_NS): use a kernel of 5.6 or later built with it',
  'network-bandwidth': 'kernel lacks sch_tbf: install kernel-modules-extra',
  'stress-io': 'no cgroup v2 io controller on this host: enable it in cgroup.subtree_control',
}
const ROLES = ['web', 'db', 'cache']

interface FleetRow {
  id: string
  hostname: string
  labels: Record<string, string>
  version: string
  connected: boolean
  connectedAt?: string
  lastSeen?: string
  kinds: string[]
  unavailable?: Record<string, string>
  open: number
  injections?: { runId: string; experiment: string; injectionId: string; kind: string; target: string; status: string }[]
}

/**
 * In every page, before its scripts: the time of the first animation frame in which the fleet
 * table has `want` rows, in window.__rowsAt. A string, not a function: the TypeScript loader
 * would wrap a function's inner names in a helper the page does not have.
 */
const rowsWatcher = (want: number) => `(() => {
  const tick = () => {
    if (document.querySelectorAll('table.fleet > tbody > tr[data-agent]').length >= ${want}) window.__rowsAt = performance.now()
    else requestAnimationFrame(tick)
  }
  requestAnimationFrame(tick)
})()`

export async function runDashboardBench(opts: { rounds?: number; warmupRounds?: number; agents?: number; progress?: (line: string) => void } = {}): Promise<DashboardBenchResult> {
  const progress = opts.progress ?? stderrProgress
  const rounds = opts.rounds ?? 10
  const warmup = opts.warmupRounds ?? 1
  const n = opts.agents ?? 1000
  if (!existsSync(CHROMIUM)) throw new Error(`the dashboard bench needs Chromium at ${CHROMIUM} (apt-get install chromium)`)
  if (!existsSync(join(repoRoot, 'dist', 'web', 'build.json'))) throw new Error('the dashboard is not built: npm run build')
  return withCleanup(async (cleanup) => {
    const dir = mkdtempSync(join(tmpdir(), 'fl-bench-dashboard-'))
    cleanup.add('state dir', () => rmSync(dir, { recursive: true, force: true }))
    const server = await startServer(dir, 'state', cleanup)
    const kinds = Object.fromEntries(faultKindNames.map((k) => [k, UNAVAILABLE[k] ? { available: false, reason: UNAVAILABLE[k] } : { available: true }]))
    const capabilities = simCapabilities(kinds)
    const t0 = performance.now()
    await connectSimAgents(server, n, cleanup, (i) => ({ labels: { role: ROLES[i % 3]!, zone: 'abcd'[i % 4]!, env: 'prod' }, capabilities }), 'host')
    progress(`dashboard bench: ${n} simulated agents connected in ${Math.round(performance.now() - t0)} ms`)

    // A third of the fleet faulted now: each role=db host holds an active process-stop.
    await server.api('POST', '/v1/experiments', { name: 'db-stop', hosts: { labels: { role: 'db' } }, mode: 'all', target: { type: 'process', name: 'sleep' }, fault: { kind: 'process-stop' }, duration: '10m' })
    const { id } = await server.api<{ id: string }>('POST', '/v1/experiments/db-stop/runs')
    const faultedAgents = Array.from({ length: n }, (_, i) => ROLES[i % 3]!).filter((r) => r === 'db').length
    for (let tries = 0; ; tries++) {
      const run = await server.api<{ records: { status: string }[] }>('GET', `/v1/runs/${id}`)
      if (run.records.length === faultedAgents && run.records.every((r) => r.status === 'active')) break
      if (tries > 600) throw new Error(`the run did not become active on ${faultedAgents} agents within 30 s: ${run.records.length} records`)
      await sleep(50)
    }

    // GET /v1/agents from Node.
    const apiTimes: number[] = []
    let agentsBody = ''
    for (let round = 0; round < warmup + rounds; round++) {
      const start = performance.now()
      const res = await fetch(`${server.base}/v1/agents`, { headers: { authorization: `Bearer ${SIM_ADMIN_TOKEN}` } })
      agentsBody = await res.text()
      if (res.status !== 200) throw new Error(`GET /v1/agents: ${res.status} ${agentsBody}`)
      if (round >= warmup) apiTimes.push(performance.now() - start)
    }
    const fleet = (JSON.parse(agentsBody) as { agents: FleetRow[] }).agents
    if (fleet.length !== n || fleet.filter((a) => (a.injections ?? []).length > 0).length !== faultedAgents) throw new Error('GET /v1/agents does not show the simulated fleet')

    // The baseline page: the same table, server-rendered, with the dashboard's stylesheet.
    const webRoot = join(repoRoot, 'dist', 'web')
    const cssHref = /href="(\/assets\/[^"]+\.css)"/.exec(readFileSync(join(webRoot, 'index.html'), 'utf8'))?.[1]
    if (!cssHref) throw new Error('dist/web/index.html links no stylesheet')
    const css = gzipSync(readFileSync(join(webRoot, cssHref)))
    const html = gzipSync(staticFleetPage(fleet, cssHref))
    const bare = await new Promise<Server>((resolve) => {
      const s = createServer((req, res) => {
        if (req.url === cssHref) res.writeHead(200, { 'content-type': 'text/css', 'content-encoding': 'gzip' }).end(css)
        else if (req.url === '/') res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-encoding': 'gzip' }).end(html)
        else res.writeHead(404).end()
      })
      s.listen(0, '127.0.0.1', () => resolve(s))
    })
    cleanup.add('baseline http server', () => new Promise((resolve) => bare.close(resolve)))
    const bareBase = `http://127.0.0.1:${(bare.address() as { port: number }).port}`

    const { chromium } = await import('playwright-core')
    // As root Chromium's sandbox cannot start; the pages are our own, on loopback.
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
    cleanup.add('chromium', () => browser.close())

    const fleetMs: number[] = []
    const fleetApiStartMs: number[] = []
    const fleetApiDoneMs: number[] = []
    const baselineMs: number[] = []
    let firstLoad: DashboardBenchResult['firstLoad'] | undefined
    let editor: DashboardBenchResult['editor'] | undefined
    for (let round = 0; round < warmup + rounds; round++) {
      // The order alternates, so neither side always runs just after the other.
      for (const side of round % 2 === 0 ? (['fleet', 'baseline'] as const) : (['baseline', 'fleet'] as const)) {
        const load = await loadOnce(browser, side === 'fleet' ? `${server.base}/#/fleet` : `${bareBase}/`, n, side === 'fleet' && firstLoad === undefined)
        if (side === 'fleet' && load.weight) {
          firstLoad = load.weight
          editor = load.editor
        }
        if (round < warmup) continue
        if (side === 'fleet') {
          fleetMs.push(load.rowsMs)
          fleetApiStartMs.push(load.apiStartMs)
          fleetApiDoneMs.push(load.apiDoneMs)
        } else baselineMs.push(load.rowsMs)
      }
      if (round >= warmup) progress(`dashboard bench: round ${round - warmup + 1}/${rounds}: fleet ${Math.round(fleetMs.at(-1)!)} ms (GET /v1/agents from ${Math.round(fleetApiStartMs.at(-1)!)} to ${Math.round(fleetApiDoneMs.at(-1)!)} ms), static page ${Math.round(baselineMs.at(-1)!)} ms`)
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!
    const r1 = (x: number) => Math.round(x * 10) / 10
    return {
      machine: machineInfo(),
      agents: n,
      faultedAgents,
      rounds,
      fleetMs: fleetMs.map(r1),
      fleetApiStartMs: fleetApiStartMs.map(r1),
      fleetApiDoneMs: fleetApiDoneMs.map(r1),
      baselineMs: baselineMs.map(r1),
      fleetMedianMs: r1(median(fleetMs)),
      fleetApiStartMedianMs: r1(median(fleetApiStartMs)),
      fleetApiDoneMedianMs: r1(median(fleetApiDoneMs)),
      baselineMedianMs: r1(median(baselineMs)),
      ratio: ratio(median(fleetMs), median(baselineMs), 2),
      firstLoad: firstLoad!,
      editor: editor!,
      baselineHtmlGzipBytes: html.length,
      agentsApi: { bytes: Buffer.byteLength(agentsBody), gzipBytes: gzipSync(agentsBody).length, medianMs: r1(median(apiTimes)), maxMs: r1(Math.max(...apiTimes)), rounds },
    }
  })
}

/** What the functions run in the page use of it (this file is type-checked against Node's globals, not the DOM's). */
interface PageGlobals {
  sessionStorage: { setItem(key: string, value: string): void }
  location: { hash: string }
}

interface Load {
  rowsMs: number
  apiStartMs: number
  apiDoneMs: number
  weight?: DashboardBenchResult['firstLoad']
  editor?: DashboardBenchResult['editor']
}

/** One load of `url` in a fresh context; with `weigh`, also what the network carried, and then what the editor adds. */
async function loadOnce(browser: Browser, url: string, n: number, weigh: boolean): Promise<Load> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light', reducedMotion: 'reduce' })
  try {
    await context.addInitScript(([key, token]) => (globalThis as unknown as PageGlobals).sessionStorage.setItem(key!, token!), ['faultline.token', SIM_ADMIN_TOKEN])
    await context.addInitScript(rowsWatcher(n))
    const page = await context.newPage()
    page.on('pageerror', (err) => stderrProgress(`dashboard bench: error in ${url}: ${err.message}`))
    const responses: { url: string; type: string; res: import('playwright-core').Response }[] = []
    page.on('response', (res) => responses.push({ url: res.url(), type: res.request().resourceType(), res }))
    await page.goto(url)
    const rowsMs = (await (await page.waitForFunction(() => (globalThis as unknown as { __rowsAt?: number }).__rowsAt, undefined, { timeout: 60_000 })).jsonValue()) as number
    const [apiStartMs, apiDoneMs] = await page.evaluate(() => {
      const entry = (performance.getEntriesByType('resource') as unknown as { name: string; startTime: number; responseEnd: number }[]).find((e) => e.name.endsWith('/v1/agents'))
      return [entry?.startTime ?? 0, entry?.responseEnd ?? 0]
    })
    if (!weigh) return { rowsMs, apiStartMs, apiDoneMs }
    const weight = await weighResponses(responses)
    const before = responses.length
    await page.evaluate(() => ((globalThis as unknown as PageGlobals).location.hash = '#/experiments/new'))
    await page.locator('.cm-editor').waitFor({ timeout: 30_000 })
    const editorFiles = (await weighResponses(responses.slice(before))).files.filter((f) => f.type === 'script')
    return {
      rowsMs,
      apiStartMs,
      apiDoneMs,
      weight: { jsGzipBytes: sum(weight.files.filter((f) => f.type === 'script')), cssGzipBytes: sum(weight.files.filter((f) => f.type === 'stylesheet')), htmlBytes: sum(weight.files.filter((f) => f.type === 'document')), files: weight.files },
      editor: { jsGzipBytes: sum(editorFiles), files: editorFiles.map(({ url, bytes }) => ({ url, bytes })) },
    }
  } finally {
    await context.close()
  }
}

const sum = (files: { bytes: number }[]) => files.reduce((a, f) => a + f.bytes, 0)

/** The encoded body size (as sent: gzip where the server compressed it) of each document, script and stylesheet response. */
async function weighResponses(responses: { url: string; type: string; res: import('playwright-core').Response }[]): Promise<{ files: { url: string; type: string; bytes: number }[] }> {
  const files: { url: string; type: string; bytes: number }[] = []
  for (const { url, type, res } of responses) {
    if (!['document', 'script', 'stylesheet'].includes(type)) continue
    await res.finished()
    files.push({ url: new URL(url).pathname, type, bytes: (await res.request().sizes()).responseBodySize })
  }
  return { files }
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!)

function ago(iso: string | undefined): string {
  if (!iso) return '—'
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))
  return s < 60 ? `${s}s ago` : `${Math.floor(s / 60)}m ago`
}

/** The fleet table as the dashboard draws it (web/pages/fleet.tsx), as one static page. */
function staticFleetPage(agents: FleetRow[], cssHref: string): string {
  const row = (a: FleetRow) => {
    const labels = Object.entries(a.labels)
    const unavailable = Object.entries(a.unavailable ?? {})
    const injections = a.injections ?? []
    return [
      `<tr data-agent="${esc(a.id)}"><th scope="row" data-label="Host">${esc(a.hostname)}${a.hostname !== a.id ? `<div class="muted small">${esc(a.id)}</div>` : ''}</th>`,
      `<td data-label="Labels">${labels.length ? `<ul class="chips" aria-label="labels">${labels.map(([k, v]) => `<li class="chip">${esc(k)}=${esc(v)}</li>`).join('')}</ul>` : '<span class="muted">none</span>'}</td>`,
      `<td data-label="Version">${esc(a.version)}</td>`,
      `<td data-label="Connection"><span class="status status-${a.connected ? 'ok' : 'muted'}">${a.connected ? 'connected' : 'disconnected'}</span> <span class="small"><time datetime="${esc(a.connectedAt ?? '')}">${ago(a.connectedAt)}</time></span></td>`,
      `<td data-label="Fault kinds"><details class="kinds"><summary>${a.kinds.length} available${unavailable.length ? `, ${unavailable.length} not` : ''}</summary><ul class="plain">`,
      a.kinds.map((k) => `<li><span class="ok-text">✓</span> ${esc(k)}</li>`).join(''),
      unavailable.map(([k, why]) => `<li><span class="bad-text">✗</span> ${esc(k)}: <span class="muted">${esc(why)}</span></li>`).join(''),
      `</ul></details></td><td data-label="Active injections">`,
      injections.length
        ? `<ul class="plain injections">${injections.map((i) => `<li><a href="#/runs/${encodeURIComponent(i.runId)}">${esc(i.experiment)}</a> ${esc(i.kind)} on <code>${esc(i.target)}</code> <span class="status status-active">${esc(i.status)}</span></li>`).join('')}</ul>`
        : '<span class="muted">none</span>',
      '</td></tr>',
    ].join('')
  }
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Fleet</title><link rel="stylesheet" href="${cssHref}"></head><body><main id="main"><section><h1>Fleet</h1><div class="table-wrap"><table class="fleet"><thead><tr><th scope="col">Host</th><th scope="col">Labels</th><th scope="col">Version</th><th scope="col">Connection</th><th scope="col">Fault kinds</th><th scope="col">Active injections</th></tr></thead><tbody>${agents.map(row).join('')}</tbody></table></div></section></main></body></html>`
}

const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`

export function formatDashboardResult(r: DashboardBenchResult): string {
  return [
    `Dashboard: the fleet page with ${r.agents} simulated agents (${r.faultedAgents} with an active injection), headless Chromium, ${r.rounds} fresh loads of each`,
    formatMachine(r.machine),
    table(
      ['load', 'median', 'min', 'max', 'vs static page'],
      [
        ['fleet page: navigation → every row in the DOM', `${r.fleetMedianMs} ms`, `${Math.min(...r.fleetMs)} ms`, `${Math.max(...r.fleetMs)} ms`, `×${r.ratio}`],
        ['  navigation → the page sends GET /v1/agents', `${r.fleetApiStartMedianMs} ms`, `${Math.min(...r.fleetApiStartMs)} ms`, `${Math.max(...r.fleetApiStartMs)} ms`, ''],
        ['  navigation → its answer received', `${r.fleetApiDoneMedianMs} ms`, `${Math.min(...r.fleetApiDoneMs)} ms`, `${Math.max(...r.fleetApiDoneMs)} ms`, ''],
        ['static page, same table (baseline)', `${r.baselineMedianMs} ms`, `${Math.min(...r.baselineMs)} ms`, `${Math.max(...r.baselineMs)} ms`, '×1'],
      ],
    ),
    table(
      ['transfer (encoded, as sent)', 'size'],
      [
        ['first load: JS (gzip)', kib(r.firstLoad.jsGzipBytes)],
        ['first load: CSS (gzip)', kib(r.firstLoad.cssGzipBytes)],
        ['first load: JS+CSS (gzip)', kib(r.firstLoad.jsGzipBytes + r.firstLoad.cssGzipBytes)],
        ['first load: index.html', kib(r.firstLoad.htmlBytes)],
        ['opening the editor: JS (gzip)', kib(r.editor.jsGzipBytes)],
        [`GET /v1/agents (${r.agents} agents, not compressed)`, `${kib(r.agentsApi.bytes)} (gzip would be ${kib(r.agentsApi.gzipBytes)})`],
        ['static baseline page (gzip)', kib(r.baselineHtmlGzipBytes)],
      ],
    ),
    `GET /v1/agents from Node: median ${r.agentsApi.medianMs} ms, max ${r.agentsApi.maxMs} ms over ${r.agentsApi.rounds} calls`,
  ].join('\n')
}
