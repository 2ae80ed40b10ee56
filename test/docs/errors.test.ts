import { readFileSync } from 'node:fs'
import t from 'tap'
import { errorCatalog } from '../../protocol/errors.js'
import { repoRoot } from '../helpers.js'

t.test('docs/errors.md lists every error code with its status', async (t) => {
  const doc = readFileSync(`${repoRoot}/docs/errors.md`, 'utf8')
  for (const [code, { status }] of Object.entries(errorCatalog)) {
    t.match(doc, new RegExp(`\\| \`${code}\` \\| ${status} \\|`), code)
  }
  const documented = [...doc.matchAll(/\| `(FAULTLINE_ERR_[A-Z_]+)` \|/g)].map((m) => m[1])
  t.same(documented.filter((c) => !(c! in errorCatalog)), [], 'no code documented that does not exist')
})
