import { useMemo, useState } from 'preact/hooks'
import { Link } from 'wouter-preact'
import { api } from '../api.js'
import type { FleetAgent } from '../types.js'
import { Chips, ErrorBox, PageTitle, Status, Time, fleetEventOf, useLive, useResource } from '../ui.js'

/** "role=db zone=a" (or with commas) into [key, value] pairs; a bare word matches the key with any value. */
export function parseLabelFilter(text: string): [string, string | undefined][] {
  return text
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((part) => {
      const eq = part.indexOf('=')
      return eq < 0 ? [part, undefined] : [part.slice(0, eq), part.slice(eq + 1)]
    })
}

function Kinds({ agent }: { agent: FleetAgent }) {
  const unavailable = Object.entries(agent.unavailable ?? {})
  return (
    <details class="kinds">
      <summary>
        {agent.kinds.length} available{unavailable.length > 0 ? `, ${unavailable.length} not` : ''}
      </summary>
      <ul class="plain">
        {agent.kinds.map((k) => (
          <li key={k}>
            <span class="ok-text">✓</span> {k}
          </li>
        ))}
        {unavailable.map(([k, why]) => (
          <li key={k}>
            <span class="bad-text">✗</span> {k}: <span class="muted">{why}</span>
          </li>
        ))}
      </ul>
    </details>
  )
}

function Injections({ agent }: { agent: FleetAgent }) {
  const list = agent.injections
  if (!list) return agent.open > 0 ? <span>{agent.open} open</span> : <span class="muted">none</span>
  if (list.length === 0) return <span class="muted">none</span>
  return (
    <ul class="plain injections">
      {list.map((i) => (
        <li key={i.injectionId}>
          <Link href={`/runs/${encodeURIComponent(i.runId)}`}>{i.experiment}</Link> {i.kind} on <code>{i.target || '…'}</code> <Status value={i.status} />
        </li>
      ))}
    </ul>
  )
}

export function FleetPage() {
  const agents = useResource((signal) => api<{ agents: FleetAgent[] }>('GET', '/v1/agents', undefined, { signal }), 'agents')
  useLive(fleetEventOf(['agent.', 'record.', 'run.', 'halt']), agents.reload, 300)
  const [filter, setFilter] = useState('')
  const wanted = useMemo(() => parseLabelFilter(filter), [filter])
  const all = agents.data?.agents ?? []
  const shown = all.filter((a) => wanted.every(([k, v]) => (v === undefined ? k in a.labels : a.labels[k] === v)))
  const connected = all.filter((a) => a.connected).length
  const faulted = all.filter((a) => (a.injections ? a.injections.length > 0 : a.open > 0)).length
  return (
    <section aria-labelledby="fleet-title">
      <PageTitle>
        <span id="fleet-title">Fleet</span>
      </PageTitle>
      <ul class="counts" aria-label="fleet counts">
        <li>
          <strong data-testid="count-agents">{all.length}</strong> hosts
        </li>
        <li>
          <strong data-testid="count-connected">{connected}</strong> connected
        </li>
        <li class={faulted > 0 ? 'faulted' : ''}>
          <strong data-testid="count-faulted">{faulted}</strong> faulted now
        </li>
      </ul>
      <div class="filters">
        <label for="label-filter">Filter by label</label>
        <input id="label-filter" type="search" placeholder="role=db zone=a" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} />
      </div>
      <ErrorBox message={agents.error} />
      {agents.loading && !agents.data ? (
        <p aria-live="polite">Loading…</p>
      ) : (
        <div class="table-wrap">
          <table class="fleet">
            <caption class="sr-only">Agents{filter ? ` matching ${filter}` : ''}</caption>
            <thead>
              <tr>
                <th scope="col">Host</th>
                <th scope="col">Labels</th>
                <th scope="col">Version</th>
                <th scope="col">Connection</th>
                <th scope="col">Fault kinds</th>
                <th scope="col">Active injections</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((a) => (
                <tr key={a.id} data-agent={a.id}>
                  <th scope="row" data-label="Host">
                    {a.hostname}
                    {a.hostname !== a.id && <div class="muted small">{a.id}</div>}
                  </th>
                  <td data-label="Labels">
                    <Chips labels={a.labels} />
                  </td>
                  <td data-label="Version">{a.version}</td>
                  <td data-label="Connection">
                    <Status value={a.connected ? 'connected' : 'disconnected'} />{' '}
                    <span class="small">{a.connected ? <Time iso={a.connectedAt} /> : <>last seen <Time iso={a.lastSeen} /></>}</span>
                  </td>
                  <td data-label="Fault kinds">
                    <Kinds agent={a} />
                  </td>
                  <td data-label="Active injections">
                    <Injections agent={a} />
                  </td>
                </tr>
              ))}
              {shown.length === 0 && (
                <tr>
                  <td colSpan={6} class="muted">
                    {all.length === 0 ? 'No agent has enrolled yet.' : 'No agent matches the filter.'}
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
      )}
    </section>
  )
}
