// Store.updateRecord (the answer of an injection whose record exists, e.g. its recovery after a
// halt) writes the same row as upsertRecord would: same seq, no second row, placeholder intact.
import { join } from 'node:path'
import t from 'tap'
import type { Experiment } from '../../protocol/experiment.js'
import { Store, type RecordRow } from '../../server/store.js'
import { tmpDir } from '../helpers.js'

t.test('updateRecord changes the record of an injection in place, as upsertRecord does', async (t) => {
  const stores = ['upsert', 'update'].map((name) => {
    const store = new Store(join(tmpDir(t), name))
    t.teardown(() => store.close())
    return store
  })
  const now = Date.now()
  const base = { target: '', targetKey: '', status: 'sent' as const, reason: '' as const, error: null, updatedAt: now }
  for (const store of stores) {
    store.insertRun(
      {
        id: 'run-1',
        experiment: 'e',
        spec: { name: 'e' } as unknown as Experiment,
        status: 'running',
        trigger: 'api',
        startedBy: 'test',
        startedAt: now,
        deadlineAt: now + 60_000,
        selection: { matched: 2, connected: 2, chosen: 2, mode: 'all' },
      },
      [
        { runId: 'run-1', agentId: 'a1', requestId: 'run-1.1', injectionId: '', ...base },
        { runId: 'run-1', agentId: 'a2', requestId: 'run-1.2', injectionId: '', ...base },
      ],
    )
    // a1 answers its inject: the placeholder becomes the record of injection i1.
    store.upsertRecord({ runId: 'run-1', agentId: 'a1', requestId: 'run-1.1', injectionId: 'i1', target: 'pid 1', targetKey: 'k', status: 'active', reason: '', error: null, updatedAt: now + 1 })
  }
  const [viaUpsert, viaUpdate] = stores as [Store, Store]
  const recovered = { target: 'pid 1', targetKey: 'k', status: 'aborted' as const, reason: 'halt' as const, error: { code: 'X', message: 'y' }, updatedAt: now + 2 }
  viaUpsert.upsertRecord({ runId: 'run-1', agentId: 'a1', requestId: 'run-1.1', injectionId: 'i1', ...recovered })
  const existing = viaUpdate.recordOfInjection('a1', 'i1')!
  viaUpdate.updateRecord(existing.seq, recovered)
  const rows = (s: Store): RecordRow[] => s.records('run-1')
  t.same(rows(viaUpdate), rows(viaUpsert), 'the same rows, seq included')
  t.equal(rows(viaUpdate).length, 2, 'no second row; the other agent keeps its placeholder')
  t.match(viaUpdate.recordOfInjection('a1', 'i1'), { seq: existing.seq, ...recovered })
})
