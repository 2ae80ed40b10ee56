import { useEffect, useState } from 'preact/hooks'
import type { AuditEntry } from '../../protocol/views.js'
import { api, messageOf } from '../api.js'
import { ErrorBox, PageTitle, Status, Time, useLive } from '../ui.js'

const PAGE = 50
const outcomes = ['', 'ok', 'error', 'forbidden', 'unauthenticated'] as const
const methods = ['', 'POST', 'PUT', 'PATCH', 'DELETE', 'GET'] as const

interface Filters {
  who: string
  outcome: string
  method: string
}

function query(f: Filters, before?: number): string {
  const q = new URLSearchParams({ order: 'desc', limit: String(PAGE) })
  if (f.who) q.set('who', f.who)
  if (f.outcome) q.set('outcome', f.outcome)
  if (f.method) q.set('method', f.method)
  if (before !== undefined) q.set('before', String(before))
  return `/v1/audit?${q}`
}

const matches = (f: Filters, e: AuditEntry) => (!f.who || e.who.includes(f.who)) && (!f.outcome || e.outcome === f.outcome) && (!f.method || e.method === f.method)

/** The audit log, newest first, with filters; new rows arrive live; "Older" pages back. */
export function AuditPage() {
  const [filters, setFilters] = useState<Filters>({ who: '', outcome: '', method: '' })
  const [rows, setRows] = useState<AuditEntry[]>([])
  const [more, setMore] = useState(false)
  const [error, setError] = useState('')
  const [loading, setLoading] = useState(true)

  useEffect(() => {
    const abort = new AbortController()
    setLoading(true)
    // (typing in "who" asks once the typing pauses)
    const timer = setTimeout(() => {
      api<{ entries: AuditEntry[] }>('GET', query(filters), undefined, { signal: abort.signal }).then(
        ({ entries }) => {
          setRows(entries)
          setMore(entries.length === PAGE)
          setError('')
          setLoading(false)
        },
        (err: unknown) => {
          if (abort.signal.aborted) return
          setError(messageOf(err))
          setLoading(false)
        },
      )
    }, 250)
    return () => (clearTimeout(timer), abort.abort())
  }, [filters.who, filters.outcome, filters.method])

  useLive(
    (m) => m.kind === 'audit' && matches(filters, m.entry),
    (m) => {
      if (m.kind !== 'audit') return
      setRows((list) => (list.some((e) => e.id === m.entry.id) ? list : [m.entry, ...list]))
    },
  )

  const older = async () => {
    const last = rows.at(-1)
    if (!last) return
    try {
      const { entries } = await api<{ entries: AuditEntry[] }>('GET', query(filters, last.id))
      setRows((list) => [...list, ...entries.filter((e) => !list.some((x) => x.id === e.id))])
      setMore(entries.length === PAGE)
    } catch (err) {
      setError(messageOf(err))
    }
  }

  const set = (key: keyof Filters) => (e: Event) => setFilters({ ...filters, [key]: (e.currentTarget as HTMLInputElement | HTMLSelectElement).value })
  return (
    <section aria-labelledby="audit-title">
      <PageTitle>
        <span id="audit-title">Audit log</span>
      </PageTitle>
      <form class="filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <div>
          <label for="audit-who">Who</label>
          <input id="audit-who" type="search" placeholder="token:ci" value={filters.who} onInput={set('who')} />
        </div>
        <div>
          <label for="audit-outcome">Outcome</label>
          <select id="audit-outcome" value={filters.outcome} onChange={set('outcome')}>
            {outcomes.map((o) => (
              <option key={o} value={o}>
                {o || 'any'}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label for="audit-method">Method</label>
          <select id="audit-method" value={filters.method} onChange={set('method')}>
            {methods.map((m) => (
              <option key={m} value={m}>
                {m || 'any'}
              </option>
            ))}
          </select>
        </div>
      </form>
      <ErrorBox message={error} />
      {loading && rows.length === 0 ? (
        <p aria-live="polite">Loading…</p>
      ) : (
        <div class="table-wrap">
          <table class="audit">
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Who</th>
                <th scope="col">Request</th>
                <th scope="col">Outcome</th>
                <th scope="col">From</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((e) => (
                <tr key={e.id}>
                  <td data-label="When">
                    <Time iso={e.at} />
                  </td>
                  <th scope="row" data-label="Who">
                    {e.who} <span class="muted small">({e.role})</span>
                  </th>
                  <td data-label="Request">
                    <code>
                      {e.method} {e.url}
                    </code>
                  </td>
                  <td data-label="Outcome">
                    <Status value={e.outcome} /> <span class="small muted">{e.status}</span>
                  </td>
                  <td data-label="From">{e.source}</td>
                </tr>
              ))}
              {rows.length === 0 && (
                <tr>
                  <td colSpan={5} class="muted">
                    No entry.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
      )}
      {more && (
        <button type="button" onClick={() => void older()}>
          Older
        </button>
      )}
    </section>
  )
}
