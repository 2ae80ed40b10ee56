import Database from 'better-sqlite3'
import t from 'tap'
import { Journal, type NewJournalRow } from '../../../agent/journal/journal.js'
import { tmpDir } from '../../helpers.js'

const row = (id: string, extra: Partial<NewJournalRow> = {}): NewJournalRow => ({
  id,
  requestId: id,
  requestHash: 'h',
  kind: 'process-stop',
  fault: { kind: 'process-stop' },
  target: { type: 'process', pid: 10 },
  resolved: { type: 'process', pid: 10, startTime: 5, comm: 'sleep', cmdline: 'sleep 1', state: 'S' },
  targetKey: 'process:10:5',
  plan: { steps: [], pid: 10, startTime: 5, comm: 'sleep' },
  state: { pid: 10, startTime: 5, comm: 'sleep' },
  duration: '30s',
  durationMs: 30_000,
  recoverable: true,
  createdAt: 1_000,
  expiresAt: 31_000,
  origin: { who: 'local' },
  ...extra,
})

t.test('WAL + synchronous=FULL, and rows survive reopening', async (t) => {
  const dir = tmpDir(t)
  const j = new Journal(dir)
  j.insertPending([row('a'), row('b', { targetKey: 'process:11:6' })])
  j.setStatus('a', 'applying')
  j.markActive('a', { pid: 10, startTime: 5, comm: 'sleep' })
  j.addNote('a', 'first note')
  j.close()

  const raw = new Database(`${dir}/journal.sqlite`)
  t.equal(raw.pragma('journal_mode', { simple: true }), 'wal')
  raw.close()

  const again = new Journal(dir)
  t.teardown(() => again.close())
  const a = again.get('a')!
  t.equal(a.status, 'active')
  t.same(a.notes, ['first note'])
  t.equal(a.needsUndo, true)
  t.same(again.needingUndo().map((r) => r.id), ['a', 'b'])
  t.same(again.openOnTarget('process-stop', 'process:10:5').map((r) => r.id), ['a'])
  t.same(again.countOpenByKind(), new Map([['process-stop', 2]]))
  again.markRecovered('a')
  again.markFailed('b', { code: 'FAULTLINE_ERR_APPLY_FAILED', message: 'x' })
  t.same(again.needingUndo().map((r) => r.id), ['b'], 'a failed injection still needs its undo')
  again.markUndone('b')
  t.same(again.needingUndo(), [])
  t.same(again.list().map((r) => r.id), ['b', 'a'], 'newest first')
  t.same(again.list('recovered').map((r) => r.id), ['a'])
  t.equal(again.get('a')!.recoveredAt !== null, true)
})

t.test('a journal from a newer agent is refused, not misread', async (t) => {
  const dir = tmpDir(t)
  new Journal(dir).close()
  const raw = new Database(`${dir}/journal.sqlite`)
  raw.pragma('user_version = 99')
  raw.close()
  t.throws(() => new Journal(dir), /newer than this agent/)
})

t.test('what recovery needs is fsynced; status-only steps it undoes the same either way are not', async (t) => {
  const j = new Journal(tmpDir(t))
  t.teardown(() => j.close())
  const undo = { pid: 10, startTime: 5, comm: 'sleep' }
  const step = (what: string, write: () => void, synced: boolean) => {
    const before = { commits: j.commits, synced: j.syncedCommits }
    write()
    t.equal(j.commits - before.commits, 1, `${what}: one commit`)
    t.equal(j.syncedCommits - before.synced, synced ? 1 : 0, `${what}: ${synced ? 'fsynced' : 'not fsynced'}`)
  }
  step('pending rows', () => j.insertPending([row('a'), row('b', { targetKey: 'process:11:6' })]), true)
  step('applying', () => j.markApplying('a'), false)
  step('active with the undo state the row already holds', () => j.markActive('a', undo), false)
  step('recovering', () => j.markRecovering('a'), false)
  step('recovered', () => j.markRecovered('a'), true)
  step('a checkpoint of new undo state', () => j.setState('b', { ...undo, extra: 1 }), true)
  step('active with undo state the row does not hold yet', () => j.markActive('b', { ...undo, extra: 2 }), true)
  step('failed', () => j.markFailed('b', { code: 'FAULTLINE_ERR_APPLY_FAILED', message: 'x' }), true)
  step('undone', () => j.markUndone('b'), true)
  t.same(j.get('a')!.status, 'recovered')
  t.same(j.get('b')!.state, { ...undo, extra: 2 })
  t.same(j.head('a'), { status: 'recovered', needsUndo: false, targetKey: 'process:10:5', expiresAt: 31_000 })
  t.equal(j.head('nope'), undefined)
})

t.test('rows written without an fsync are in the file for the next agent (kill -9 loses none of them)', async (t) => {
  const dir = tmpDir(t)
  const j = new Journal(dir)
  j.insertPending([row('a')])
  j.markApplying('a')
  // No close: a second connection, as the next agent would open after a crash, reads the WAL.
  const next = new Journal(dir)
  t.teardown(() => {
    next.close()
    j.close()
  })
  t.equal(next.get('a')!.status, 'applying')
  j.markActive('a', { pid: 10, startTime: 5, comm: 'sleep' })
  t.equal(next.get('a')!.status, 'active')
  t.same(next.openIdsOnTarget('process-stop', 'process:10:5'), ['a'])
})
