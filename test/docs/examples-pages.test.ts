// Every page with `sh` examples is run by one of the examples-*.test.ts files, and every
// example it does not run says why.
import t from 'tap'
import { docBlocks, docFiles, pageGroups } from './doc-runner.js'

t.test('every page with sh examples is in exactly one group', async (t) => {
  const grouped = Object.values(pageGroups).flat()
  for (const file of docFiles()) {
    const blocks = docBlocks(file)
    if (blocks.length === 0) continue
    t.equal(grouped.filter((f) => f === file).length, 1, `${file} (${blocks.length} sh blocks) is run by one examples-*.test.ts`)
  }
  t.same(grouped.filter((f) => !docFiles().includes(f)), [], 'no group names a page that does not exist')
})

t.test('most examples run; the ones that do not give a reason', async (t) => {
  const blocks = docFiles().flatMap(docBlocks)
  const skipped = blocks.filter((b) => b.mode === 'skip')
  for (const b of skipped) t.ok(b.note.length >= 20, `${b.file}:${b.line} says why it is not run: ${b.note}`)
  t.ok(skipped.length * 4 <= blocks.length, `${blocks.length - skipped.length} of ${blocks.length} blocks run`)
})
