import { useEffect, useState } from 'preact/hooks'
import { Link } from 'wouter-preact'
import type { FleetEvent, RunView } from '../../protocol/views.js'
import { ApiError, api } from '../api.js'
import { ConfirmDialog, ErrorBox, PageTitle, Status, Time, can, experimentHref, useLive, useResource } from '../ui.js'

const openStatuses = new Set(['pending', 'running'])

async function runEvents(id: string, signal: AbortSignal): Promise<FleetEvent[]> {
  try {
    return (await api<{ events: FleetEvent[] }>('GET', `/v1/events?runId=${encodeURIComponent(id)}&limit=1000`, undefined, { signal })).events
  } catch (err) {
    // A server without the runId filter refuses the parameter: take the latest events and filter here.
    if (!(err instanceof ApiError) || err.status !== 400) throw err
    return (await api<{ events: FleetEvent[] }>('GET', '/v1/events?limit=1000', undefined, { signal })).events.filter((e) => e.runId === id)
  }
}

/** One run: per host and target, live; the timeline of its events; Abort while it is open. */
export function RunPage({ id }: { id: string }) {
  const run = useResource((signal) => api<RunView>('GET', `/v1/runs/${encodeURIComponent(id)}`, undefined, { signal }), `run:${id}`)
  const initial = useResource((signal) => runEvents(id, signal), `events:${id}`)
  const [events, setEvents] = useState<FleetEvent[]>([])
  const [aborting, setAborting] = useState(false)
  useEffect(() => setEvents(initial.data ?? []), [initial.data])
  const mine = (m: Parameters<Parameters<typeof useLive>[0]>[0]) => m.kind === 'fleet' && m.event.runId === id
  useLive(mine, (m) => {
    if (m.kind !== 'fleet') return
    const event = m.event
    setEvents((list) => (list.some((e) => e.id === event.id) ? list : [...list, event]))
  })
  useLive(mine, run.reload, 150)
  const r = run.data
  const open = r ? openStatuses.has(r.status) : false
  return (
    <section aria-labelledby="run-title">
      <PageTitle
        actions={
          r &&
          open &&
          can('operator') && (
            <button type="button" class="danger" onClick={() => setAborting(true)}>
              Abort run
            </button>
          )
        }
      >
        <span id="run-title">
          Run <code>{id}</code>
        </span>
      </PageTitle>
      <ErrorBox message={run.error} />
      {r && (
        <>
          <dl class="facts">
            <div>
              <dt>Status</dt>
              <dd data-testid="run-status" aria-live="polite">
                <Status value={r.status} />
              </dd>
            </div>
            <div>
              <dt>Experiment</dt>
              <dd>
                <Link href={experimentHref(r.experiment)}>{r.experiment}</Link>
              </dd>
            </div>
            <div>
              <dt>Started</dt>
              <dd>
                <Time iso={r.startedAt} /> by {r.startedBy} ({r.trigger})
              </dd>
            </div>
            <div>
              <dt>Ended</dt>
              <dd>{r.endedAt ? <Time iso={r.endedAt} /> : 'not yet'}</dd>
            </div>
            <div>
              <dt>Duration</dt>
              <dd>{r.duration}</dd>
            </div>
            <div>
              <dt>Selection</dt>
              <dd>
                {r.selection.chosen} of {r.selection.connected} connected ({r.selection.matched} matched), mode {r.selection.mode}
                {r.selection.requested !== undefined && ` (asked for ${r.selection.requested})`}
              </dd>
            </div>
            {r.abortedBy && (
              <div>
                <dt>Aborted by</dt>
                <dd>{r.abortedBy}</dd>
              </div>
            )}
          </dl>
          <h2>Hosts and targets</h2>
          <div class="table-wrap">
            <table class="records">
              <thead>
                <tr>
                  <th scope="col">Host</th>
                  <th scope="col">Target</th>
                  <th scope="col">Status</th>
                  <th scope="col">Reason</th>
                  <th scope="col">Error</th>
                  <th scope="col">Updated</th>
                </tr>
              </thead>
              <tbody aria-live="polite">
                {r.records.map((rec) => (
                  <tr key={rec.injectionId} data-record={rec.agent}>
                    <th scope="row" data-label="Host">
                      {rec.agent}
                    </th>
                    <td data-label="Target">
                      <code>{rec.target || '…'}</code>
                    </td>
                    <td data-label="Status" data-testid="record-status">
                      <Status value={rec.status} />
                    </td>
                    <td data-label="Reason">{rec.reason || <span class="muted">—</span>}</td>
                    <td data-label="Error" class="error-cell">
                      {rec.error ? (
                        <>
                          <code>{rec.error.code}</code> {rec.error.message}
                        </>
                      ) : (
                        <span class="muted">—</span>
                      )}
                    </td>
                    <td data-label="Updated">
                      <Time iso={rec.updatedAt} />
                    </td>
                  </tr>
                ))}
                {r.records.length === 0 && (
                  <tr>
                    <td colSpan={6} class="muted">
                      No host was chosen.
                    </td>
                  </tr>
                )}
              </tbody>
            </table>
          </div>
        </>
      )}
      <h2>Timeline</h2>
      <ErrorBox message={initial.error} />
      <ol class="timeline" data-testid="timeline">
        {events.map((e) => (
          <li key={e.id}>
            <Time iso={e.at} /> <span class="event-type">{e.type}</span> {e.message}
          </li>
        ))}
        {events.length === 0 && !initial.loading && <li class="muted">No event yet.</li>}
      </ol>
      <ConfirmDialog
        open={aborting}
        title="Abort this run?"
        confirmLabel="Abort run"
        danger
        onClose={() => setAborting(false)}
        onConfirm={async () => {
          await api('POST', `/v1/runs/${encodeURIComponent(id)}/abort`)
          run.reload()
        }}
      >
        <p>Every host of the run recovers its injection now.</p>
      </ConfirmDialog>
    </section>
  )
}
