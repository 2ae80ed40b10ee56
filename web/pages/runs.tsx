import { useState } from 'preact/hooks'
import { Link, useLocation } from 'wouter-preact'
import type { RunSummary } from '../../protocol/views.js'
import { api, messageOf } from '../api.js'
import { ErrorBox, PageTitle, Status, Time, can, fleetEventOf, useLive, useResource } from '../ui.js'

function RunTable({ runs, archive, onRerun }: { runs: RunSummary[]; archive: boolean; onRerun: (id: string) => void }) {
  if (runs.length === 0) return <p class="muted">{archive ? 'No finished run yet.' : 'No run is open.'}</p>
  return (
    <div class="table-wrap">
      <table>
        <thead>
          <tr>
            <th scope="col">Run</th>
            <th scope="col">Experiment</th>
            <th scope="col">Status</th>
            <th scope="col">Started</th>
            {archive && <th scope="col">Ended</th>}
            {archive && can('operator') && <th scope="col">Actions</th>}
          </tr>
        </thead>
        <tbody>
          {runs.map((r) => (
            <tr key={r.id}>
              <th scope="row" data-label="Run">
                <Link href={`/runs/${encodeURIComponent(r.id)}`}>
                  <code>{r.id}</code>
                </Link>
              </th>
              <td data-label="Experiment">{r.experiment}</td>
              <td data-label="Status">
                <Status value={r.status} />
              </td>
              <td data-label="Started">
                <Time iso={r.startedAt} /> by {r.startedBy}
              </td>
              {archive && (
                <td data-label="Ended">
                  <Time iso={r.endedAt} />
                </td>
              )}
              {archive && can('operator') && (
                <td data-label="Actions">
                  <button type="button" onClick={() => onRerun(r.id)} aria-label={`Run ${r.experiment} again`}>
                    Run again
                  </button>
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  )
}

/** Open runs, and the archive of finished ones (opened read-only; "run again" starts a new run of the same experiment). */
export function RunsPage() {
  const [, navigate] = useLocation()
  const [limit, setLimit] = useState(50)
  const open = useResource((signal) => api<{ runs: RunSummary[] }>('GET', '/v1/runs?status=open&limit=200', undefined, { signal }), 'open')
  const finished = useResource((signal) => api<{ runs: RunSummary[] }>('GET', `/v1/runs?status=finished&limit=${limit}`, undefined, { signal }), `finished:${limit}`)
  const [error, setError] = useState('')
  useLive(fleetEventOf(['run.']), () => (open.reload(), finished.reload()), 300)
  const rerun = async (id: string) => {
    setError('')
    try {
      const res = await api<{ id: string }>('POST', `/v1/runs/${encodeURIComponent(id)}/rerun`)
      navigate(`/runs/${encodeURIComponent(res.id)}`)
    } catch (err) {
      setError(messageOf(err))
    }
  }
  return (
    <section aria-labelledby="runs-title">
      <PageTitle>
        <span id="runs-title">Runs</span>
      </PageTitle>
      <ErrorBox message={error} />
      <h2>Open</h2>
      <ErrorBox message={open.error} />
      {open.data && <RunTable runs={open.data.runs} archive={false} onRerun={(id) => void rerun(id)} />}
      <h2>Archive</h2>
      <ErrorBox message={finished.error} />
      {finished.data && <RunTable runs={finished.data.runs} archive onRerun={(id) => void rerun(id)} />}
      {finished.data && finished.data.runs.length >= limit && (
        <button type="button" onClick={() => setLimit((n) => n + 50)}>
          Show more
        </button>
      )}
    </section>
  )
}
