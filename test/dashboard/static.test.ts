// How the server serves the dashboard, without a browser: public files with a strict
// Content-Security-Policy and no framing, hashed assets cached for good and index.html never
// without asking, gzip copies, the API still behind its token, and a server built without the
// dashboard that starts and says how to build it.
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import Fastify from 'fastify'
import t from 'tap'
import { buildServer } from '../../server/app.js'
import { DASHBOARD_CSP, dashboardPlugin } from '../../server/plugins/dashboard.js'
import { tmpDir } from '../helpers.js'
import { ensureWebBuild } from './fixture.js'

ensureWebBuild()
const dir = tmpDir(t, 'fl-dashboard-static-')
const app = await buildServer({ stateDir: dir, adminToken: `fla_${'a'.repeat(32)}`, enrolToken: `fle_${'e'.repeat(32)}` })
t.teardown(() => app.close())

t.test('index.html: public, not cached without asking, strict CSP, no framing', async (t) => {
  const res = await app.inject({ url: '/' })
  t.equal(res.statusCode, 200, 'no token needed')
  t.match(res.headers['content-type'], /^text\/html/)
  t.equal(res.headers['cache-control'], 'no-cache')
  t.equal(res.headers['content-security-policy'], DASHBOARD_CSP)
  t.match(DASHBOARD_CSP, /default-src 'self'/)
  t.match(DASHBOARD_CSP, /frame-ancestors 'none'/)
  t.notMatch(DASHBOARD_CSP, /unsafe-inline|unsafe-eval|https?:/, 'no inline code, no other origin')
  t.equal(res.headers['x-frame-options'], 'DENY')
  t.equal(res.headers['x-content-type-options'], 'nosniff')
  t.notMatch(res.body, /<script>|<style>|\sstyle=|\son[a-z]+=/i, 'no inline script, style or handler')
  t.notMatch(res.body, /https?:\/\//, 'nothing from another origin (no CDN, no web font)')
})

t.test('hashed assets: immutable, gzip to those who take it', async (t) => {
  const html = (await app.inject({ url: '/' })).body
  const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]!)
  t.ok(assets.some((a) => a.endsWith('.js')) && assets.some((a) => a.endsWith('.css')), `script and stylesheet: ${assets.join(', ')}`)
  for (const asset of assets) {
    const plain = await app.inject({ url: asset })
    t.equal(plain.statusCode, 200, `${asset} without a token`)
    t.equal(plain.headers['cache-control'], 'public, max-age=31536000, immutable', `${asset}: cached for good`)
    const zipped = await app.inject({ url: asset, headers: { 'accept-encoding': 'gzip' } })
    t.equal(zipped.headers['content-encoding'], 'gzip', `${asset}: the .gz copy`)
    t.ok(zipped.rawPayload.length < plain.rawPayload.length, `${asset}: smaller (${zipped.rawPayload.length} < ${plain.rawPayload.length})`)
  }
})

t.test('the API keeps its token; unknown paths are not the dashboard', async (t) => {
  t.equal((await app.inject({ url: '/v1/agents' })).statusCode, 401, 'the API still needs a token')
  t.equal((await app.inject({ url: '/v1/agents' })).headers['content-security-policy'], undefined, 'the CSP is for the dashboard only')
  const unknown = await app.inject({ url: '/assets/nope.js', headers: { authorization: `Bearer fla_${'a'.repeat(32)}` } })
  t.equal(unknown.statusCode, 404, 'a file that is not in the build is a 404')
})

t.test('without a build, / says how to make one and the server still starts', async (t) => {
  const empty = join(tmpDir(t, 'fl-no-web-'), 'web')
  mkdirSync(empty)
  const bare = Fastify()
  t.teardown(() => bare.close())
  await bare.register(dashboardPlugin, { root: empty })
  await bare.ready()
  const res = await bare.inject({ url: '/' })
  t.equal(res.statusCode, 404)
  t.match(res.json(), { code: 'FAULTLINE_ERR_ROUTE_NOT_FOUND', message: /run npm run build/ })
})
