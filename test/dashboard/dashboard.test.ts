// The dashboard in real Chromium against a real server with two real agents on real processes
// (test/dashboard/fixture.ts): sign-in per role, the YAML editor's inline diagnostics, a run
// followed live without reloading, halt-all with the processes checked on the host, a viewer
// without controls (and refused when it forges a call), a revoked token signed out; and the
// screenshots of docs/dashboard.md (FAULTLINE_UPDATE_SCREENSHOTS=1 writes them to docs/images/).
import type { Page } from 'playwright-core'
import t from 'tap'
import { procState, waitFor } from '../helpers.js'
import { skipReason, startBed, type Bed } from './fixture.js'

const reason = skipReason()
if (reason) {
  if (process.env.FAULTLINE_TEST_REQUIRE_BROWSER === '1') {
    t.fail(`${reason}; FAULTLINE_TEST_REQUIRE_BROWSER=1 asks for the browser tests`)
  } else {
    t.plan(0, reason)
  }
  process.exit(process.exitCode ?? 0)
}

/** What the functions run in the page use of it (this file is type-checked against Node's globals, not the DOM's). */
interface W {
  sessionStorage: { getItem(key: string): string | null }
  localStorage: { length: number }
  location: { hash: string }
  document: { activeElement: { closest(selector: string): unknown } | null; querySelector(selector: string): { textContent: string | null } | null; documentElement: { scrollWidth: number } }
  innerWidth: number
  marker?: number
}

t.setTimeout(170_000)
let bed: Bed
const tokens: Record<'operator' | 'viewer', string> = { operator: '', viewer: '' }

t.before(async () => {
  bed = await startBed(t)
  for (const role of ['operator', 'viewer'] as const) {
    const res = await bed.api<{ token: string }>('POST', '/v1/tokens', bed.admin, { name: `dash-${role}`, role })
    if (res.status !== 201) throw new Error(`token ${role}: ${JSON.stringify(res.body)}`)
    tokens[role] = res.body.token
  }
})

/** The texts of the status cells of the run view, in order. */
const recordStatuses = (page: Page) => page.getByTestId('record-status').allInnerTexts()

/** Replaces the editor's text as a user would: select all, type. */
async function typeYaml(page: Page, text: string): Promise<void> {
  await page.locator('.cm-content').click()
  await page.keyboard.press('Control+A')
  await page.keyboard.press('Delete')
  await page.keyboard.insertText(text)
}

const experiment = (name: string, fault: string, extra: string) => `name: ${name}
hosts: { labels: { role: ${bed.label} } }
target: { type: process, name: sleep }
fault: ${fault}
${extra}`

t.test('sign in as each role: the role is shown, controls follow it, sign-out returns to sign-in', async (t) => {
  for (const [role, token] of [['admin', bed.admin], ['operator', tokens.operator], ['viewer', tokens.viewer]] as const) {
    const { page, cspViolations } = await bed.page(t)
    await bed.signIn(page, token, role)
    await page.getByRole('heading', { name: 'Fleet' }).waitFor()
    await page.locator('tr[data-agent]').nth(1).waitFor()
    t.equal(await page.locator('tr[data-agent]').count(), 2, `${role}: both agents listed`)
    t.equal(await page.getByTestId('count-connected').innerText(), '2', `${role}: both connected`)
    t.equal(await page.getByRole('button', { name: 'Halt all' }).count(), role === 'viewer' ? 0 : 1, `${role}: halt button ${role === 'viewer' ? 'absent' : 'present'}`)
    t.equal(await page.getByRole('link', { name: 'Tokens' }).count(), role === 'admin' ? 1 : 0, `${role}: tokens page ${role === 'admin' ? 'listed' : 'hidden'}`)
    await page.getByRole('status').filter({ hasText: 'live' }).first().waitFor()
    if (role === 'admin') {
      // The label filter: one zone, then both again.
      await page.getByLabel('Filter by label').fill('zone=a')
      await waitFor('one agent shown', async () => ((await page.locator('tr[data-agent]').count()) === 1 ? true : undefined))
      await page.getByLabel('Filter by label').fill('')
      await bed.screenshot(t, page, 'fleet')
    }
    t.same(await page.evaluate(() => (globalThis as unknown as W).sessionStorage.getItem('faultline.token') !== null && (globalThis as unknown as W).localStorage.length === 0), true, `${role}: token in sessionStorage only`)
    await page.getByRole('button', { name: 'Sign out' }).click()
    await page.getByLabel('API token').waitFor()
    t.equal(await page.evaluate(() => (globalThis as unknown as W).sessionStorage.getItem('faultline.token')), null, `${role}: signed out, token gone`)
    t.same(cspViolations, [], `${role}: no Content-Security-Policy violation`)
  }
  const { page } = await bed.page(t)
  await page.getByLabel('API token').fill('flt_not-a-token')
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('alert').filter({ hasText: 'not one this server knows' }).waitFor()
  t.pass('a wrong token is refused with the server message')
})

t.test('operator: an error shown inline, fixed, saved, run, records active then recovered without reloading', async (t) => {
  const { page, cspViolations } = await bed.page(t)
  await bed.signIn(page, tokens.operator, 'operator')
  await page.getByRole('link', { name: 'Experiments' }).click()
  await page.getByRole('link', { name: 'New experiment' }).click()
  await page.locator('.cm-content').waitFor()
  // Line 4: a load of 150 % is above the maximum of 100.
  await typeYaml(page, experiment('dash-stop', '{ kind: stress-cpu, load: 150 }', 'mode: all\nduration: 6s\n'))
  await page.getByTestId('check-status').filter({ hasText: 'problem' }).waitFor({ timeout: 10_000 })
  const marked = page.locator('.cm-line').filter({ has: page.locator('.cm-lintRange-error') })
  await marked.first().waitFor()
  t.match(await marked.allInnerTexts(), [/^fault: \{ kind: stress-cpu, load: 150 \}$/], 'the underline is on the line of the load')
  t.equal(await page.locator('.cm-lintRange-error').innerText(), '150', 'under the value itself')
  t.equal(await page.locator('.cm-gutter-lint .cm-lint-marker-error').count(), 1, 'one error mark in the gutter')
  t.ok(await page.getByRole('button', { name: 'Save' }).isDisabled(), 'Save waits for a valid experiment')
  await page.locator('.cm-lintRange-error').first().hover()
  await page.locator('.cm-tooltip-lint').waitFor()
  t.match(await page.locator('.cm-tooltip-lint').innerText(), /fault\.load: load 150 is above the maximum 100/, 'the diagnostic says what is wrong')
  await bed.screenshot(t, page, 'editor-error')

  await typeYaml(page, experiment('dash-stop', '{ kind: process-stop }', 'mode: all\nduration: 6s\n'))
  await page.getByTestId('check-status').filter({ hasText: 'Valid' }).waitFor({ timeout: 10_000 })
  t.equal(await page.locator('.cm-lintRange-error').count(), 0, 'no diagnostic left')

  await page.getByRole('button', { name: 'Preview' }).click()
  await page.getByRole('heading', { name: /Preview/ }).waitFor()
  t.equal(await page.locator('.plan tbody tr').count(), 2, 'the preview lists both hosts')
  t.match(await page.locator('.plan').innerText(), /would-inject[\s\S]*process \d+ \(sleep\)/, 'with the process each would stop')

  // The page is never reloaded from here on: the marker would be gone.
  await page.evaluate(() => ((globalThis as unknown as W).marker = 42))
  await page.getByRole('button', { name: 'Save' }).click()
  await page.getByRole('status').filter({ hasText: 'Saved.' }).waitFor()
  await page.getByRole('button', { name: 'Run', exact: true }).click()
  await page.waitForURL(/#\/runs\/[^/]+$/)
  await waitFor('both records active', async () => ((await recordStatuses(page)).join() === 'active,active' ? true : undefined), 15_000, 100)
  t.same(bed.agents.map((a) => procState(a.sleeper)), ['T', 'T'], 'both sleeps stopped on the hosts')
  await page.getByTestId('timeline').locator('li').nth(1).waitFor()
  await bed.screenshot(t, page, 'run')
  await waitFor('both records recovered', async () => ((await recordStatuses(page)).join() === 'recovered,recovered' ? true : undefined), 20_000, 100)
  await page.getByTestId('run-status').filter({ hasText: 'completed' }).waitFor()
  t.equal(await page.evaluate(() => (globalThis as unknown as W).marker), 42, 'the same page all along (no reload)')
  t.notOk(bed.agents.some((a) => procState(a.sleeper) === 'T'), 'both sleeps run again')
  t.match(await page.getByTestId('timeline').innerText(), /run\.(ended|completed|finished)|completed/, 'the timeline shows the end of the run')
  t.same(cspViolations, [], 'no Content-Security-Policy violation (CodeMirror included)')
})

t.test('operator: halt all from the page while a run is active; the processes run again', async (t) => {
  const applied = await bed.api('POST', '/v1/experiments', tokens.operator, {
    name: 'dash-long', hosts: { labels: { role: bed.label } }, mode: 'all', target: { type: 'process', name: 'sleep' }, fault: { kind: 'process-stop' }, duration: '2m',
  })
  t.ok(applied.status < 300, 'long experiment applied')
  const { page } = await bed.page(t)
  await bed.signIn(page, tokens.operator, 'operator')
  await page.getByRole('link', { name: 'Experiments' }).click()
  await page.getByRole('button', { name: 'Run dash-long' }).click()
  await page.waitForURL(/#\/runs\//)
  await waitFor('both records active', async () => ((await recordStatuses(page)).join() === 'active,active' ? true : undefined), 15_000, 100)
  t.same(bed.agents.map((a) => procState(a.sleeper)), ['T', 'T'], 'both sleeps stopped')
  await page.getByRole('link', { name: 'Fleet' }).click()
  await waitFor('2 hosts faulted', async () => ((await page.getByTestId('count-faulted').innerText()) === '2' ? true : undefined), 10_000, 100)

  await page.getByRole('button', { name: 'Halt all' }).click()
  const dialog = page.getByRole('dialog')
  t.match(await dialog.innerText(), /stop every fault on every host now/, 'the confirmation says what it does')
  t.equal(await page.evaluate(() => ((globalThis as unknown as W).document.activeElement?.closest('dialog') ?? null) !== null), true, 'focus is in the dialog')
  await dialog.getByRole('button', { name: 'Stop every fault now' }).click()
  await page.getByTestId('halt-done').waitFor({ timeout: 20_000 })
  t.match(await page.locator('.halt-panel').innerText(), /2 agent\(s\) recovered/, 'the panel shows the halt result')
  t.same(bed.agents.map((a) => procState(a.sleeper) === 'T'), [false, false], 'both sleeps run again (not T)')
  await waitFor('no host faulted', async () => ((await page.getByTestId('count-faulted').innerText()) === '0' ? true : undefined), 10_000, 100)
  await bed.screenshot(t, page, 'halt')
})

t.test('viewer: every page without a control it cannot use; a forged call is refused', async (t) => {
  const { page } = await bed.page(t)
  await bed.signIn(page, tokens.viewer, 'viewer')
  const mutating = /^(Run|Run again|Save|Delete|Halt all|Abort run|Preview|New experiment|Revoke|Create token)$|^(Run|Delete|Revoke) /
  const controls = async () => {
    const names = [...(await page.getByRole('button').allInnerTexts()), ...(await page.getByRole('link').allInnerTexts())]
    return names.map((n) => n.trim()).filter((n) => mutating.test(n))
  }
  for (const [hash, ready] of [
    ['#/fleet', 'Fleet'],
    ['#/experiments', 'Experiments'],
    ['#/experiments/edit/dash-stop', 'dash-stop'],
    ['#/runs', 'Runs'],
    ['#/audit', 'Audit log'],
  ] as const) {
    await page.evaluate((h) => ((globalThis as unknown as W).location.hash = h), hash)
    await page.getByRole('heading', { name: ready, exact: true }).waitFor()
    await page.waitForTimeout(300)
    t.same(await controls(), [], `${hash}: no mutating control`)
  }
  await page.evaluate((h) => ((globalThis as unknown as W).location.hash = h), '#/experiments/edit/dash-stop')
  await page.locator('.cm-content').waitFor()
  await waitFor('the stored YAML', async () => (/name: dash-stop/.test(await page.locator('.cm-content').innerText()) ? true : undefined))
  t.equal(await page.locator('.cm-content').getAttribute('aria-readonly'), 'true', 'the stored experiment is shown read-only')
  t.same(await controls(), [], 'editor: no Save, Run, Delete or Preview')
  const runId = (await bed.api<{ runs: { id: string }[] }>('GET', '/v1/runs?limit=1')).body.runs[0]!.id
  await page.evaluate((h) => ((globalThis as unknown as W).location.hash = h), `#/runs/${runId}`)
  await page.getByTestId('run-status').waitFor()
  t.same(await controls(), [], 'run view: no Abort')
  t.equal(await page.getByRole('link', { name: 'Tokens' }).count(), 0, 'no tokens page')
  const forged = await page.evaluate(async () => {
    const res = await fetch('/v1/halt', { method: 'POST', headers: { authorization: `Bearer ${(globalThis as unknown as W).sessionStorage.getItem('faultline.token')}` } })
    return { status: res.status, body: (await res.json()) as { code: string } }
  })
  t.equal(forged.status, 403, 'a forged halt with the viewer token is refused')
  t.equal(forged.body.code, 'FAULTLINE_ERR_FORBIDDEN')
})

t.test('an experiment named "new" opens from the list, apart from the New page', async (t) => {
  const made = await bed.api('POST', '/v1/experiments', bed.admin, { name: 'new', hosts: { labels: { role: bed.label } }, target: { type: 'process', name: 'sleep' }, fault: { kind: 'process-stop' }, duration: '5s' })
  t.equal(made.status, 201)
  t.teardown(() => bed.api('DELETE', '/v1/experiments/new'))
  const { page } = await bed.page(t)
  await bed.signIn(page, tokens.operator, 'operator')
  await page.getByRole('link', { name: 'Experiments', exact: true }).click()
  await page.getByRole('link', { name: 'new', exact: true }).click()
  await page.waitForURL(/#\/experiments\/edit\/new$/)
  await waitFor('the stored YAML of "new"', async () => (/name: new\b/.test(await page.locator('.cm-content').innerText()) ? true : undefined))
  t.equal(await page.getByRole('button', { name: 'Delete', exact: true }).count(), 1, 'the stored experiment, with its Delete')
  await page.getByRole('link', { name: 'Experiments', exact: true }).click()
  await page.getByRole('link', { name: 'New experiment' }).click()
  await page.waitForURL(/#\/experiments\/new$/)
  await page.locator('.cm-content').waitFor()
  t.notMatch(await page.locator('.cm-content').innerText(), /name: new\b/, 'New is the template, not the experiment "new"')
  t.equal(await page.getByRole('button', { name: 'Delete', exact: true }).count(), 0, 'nothing to delete yet')
})

t.test('admin: audit and tokens pages; revoking a token signs its session out with the message', async (t) => {
  const made = await bed.api<{ id: string; token: string }>('POST', '/v1/tokens', bed.admin, { name: 'dash-revoked', role: 'operator' })
  const victim = await bed.page(t)
  await bed.signIn(victim.page, made.body.token, 'operator')

  t.equal((await bed.api('DELETE', '/v1/experiments/dash-long', tokens.viewer)).status, 403, 'a refused call, for the audit log')
  const { page } = await bed.page(t)
  await bed.signIn(page, bed.admin, 'admin')
  await page.getByRole('link', { name: 'Audit' }).click()
  await page.locator('table.audit tbody tr').nth(2).waitFor()
  const first = await page.locator('table.audit tbody tr').first().innerText()
  t.match(first, /DELETE \/v1\/experiments\/dash-long\s+forbidden/, 'newest first')
  await page.getByLabel('Outcome').selectOption('forbidden')
  await waitFor('only forbidden rows', async () => {
    const rows = await page.locator('table.audit tbody tr').allInnerTexts()
    return rows.length > 0 && rows.every((r) => /forbidden/.test(r)) ? true : undefined
  }, 10_000, 100)
  await page.getByLabel('Outcome').selectOption('')
  await waitFor('every row again', async () => ((await page.locator('table.audit tbody tr').count()) > 5 ? true : undefined), 10_000, 100)
  await bed.screenshot(t, page, 'audit')

  await page.getByRole('link', { name: 'Tokens' }).click()
  await page.getByLabel('Name').fill('dash-ci')
  await page.getByLabel('Role').selectOption('viewer')
  await page.getByLabel('Expires in (optional)').fill('8h')
  await page.getByRole('button', { name: 'Create token' }).click()
  const secret = await page.getByLabel('Secret').inputValue()
  t.match(secret, /^flt_/, 'the secret is shown once')
  const whoami = await bed.api<{ role: string; expiresAt?: string }>('GET', '/v1/whoami', secret)
  t.equal(whoami.body.role, 'viewer', 'and it works, with its role')
  t.ok(whoami.body.expiresAt, 'and its expiry')
  await bed.screenshot(t, page, 'tokens')
  await page.getByRole('button', { name: 'Done' }).click()

  // Revoke through the page: the dialog, then the other session ends with the server's message.
  await page.getByRole('button', { name: 'Revoke dash-revoked' }).click()
  await page.getByRole('dialog').getByRole('button', { name: 'Revoke' }).click()
  await page.locator('tr[data-token="dash-revoked"]').waitFor({ state: 'detached' })
  await victim.page.getByLabel('API token').waitFor({ timeout: 15_000 })
  t.match(await victim.page.getByRole('alert').innerText(), /revoked/, 'the revoked session is back at sign-in, saying why')
})

t.test('phone width: the fleet is usable at 390 px', async (t) => {
  const { page } = await bed.page(t, { phone: true })
  await bed.signIn(page, tokens.operator, 'operator')
  await page.locator('tr[data-agent]').nth(1).waitFor()
  const overflow = await page.evaluate(() => (globalThis as unknown as W).document.documentElement.scrollWidth - (globalThis as unknown as W).innerWidth)
  t.ok(overflow <= 0, `no horizontal scrolling (${overflow} px)`)
  t.ok(await page.getByRole('button', { name: 'Halt all' }).isVisible(), 'halt all is on screen')
  await bed.screenshot(t, page, 'fleet-phone')
})
