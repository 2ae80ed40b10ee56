import type { ComponentType } from 'preact'
import { useEffect, useState } from 'preact/hooks'
import { Link, useLocation } from 'wouter-preact'
import type { ExperimentView } from '../../protocol/views.js'
import { api, messageOf } from '../api.js'
import type { EditorProps } from '../editor.js'
import { ConfirmDialog, ErrorBox, PageTitle, Status, Time, can, experimentHref, fleetEventOf, useLive, useResource } from '../ui.js'

/** The YAML editor (CodeMirror) is a chunk of its own, loaded the first time it is opened. */
let editorModule: Promise<ComponentType<EditorProps>> | undefined
const loadEditor = () => (editorModule ??= import('../editor.js').then((m) => m.Editor))

function LazyEditor(props: EditorProps) {
  const [Editor, setEditor] = useState<ComponentType<EditorProps> | null>(null)
  const [error, setError] = useState('')
  useEffect(() => {
    loadEditor().then(
      (c) => setEditor(() => c),
      (err: unknown) => setError(`the editor did not load: ${messageOf(err)}`),
    )
  }, [])
  if (error) return <ErrorBox message={error} />
  return Editor ? <Editor {...props} /> : <p aria-live="polite">Loading the editor…</p>
}

function schedule(spec: ExperimentView['spec']): string {
  return spec.schedule ?? ''
}

/** Experiments: the list, and (editing) one experiment in the YAML editor. */
export function ExperimentsPage({ editing }: { editing?: string }) {
  const [, navigate] = useLocation()
  const list = useResource((signal) => api<{ experiments: ExperimentView[] }>('GET', '/v1/experiments', undefined, { signal }), 'experiments')
  useLive(fleetEventOf(['experiment.', 'run.', 'schedule.']), list.reload, 300)
  const [deleting, setDeleting] = useState<string | null>(null)
  const [error, setError] = useState('')
  if (editing !== undefined) return <LazyEditor key={editing} name={editing} />
  const run = async (name: string) => {
    setError('')
    try {
      const res = await api<{ id: string }>('POST', `/v1/experiments/${encodeURIComponent(name)}/runs`)
      navigate(`/runs/${encodeURIComponent(res.id)}`)
    } catch (err) {
      setError(messageOf(err))
    }
  }
  const experiments = list.data?.experiments ?? []
  return (
    <section aria-labelledby="experiments-title">
      <PageTitle
        actions={
          can('operator') && (
            <Link href="/experiments/new" class="button primary">
              New experiment
            </Link>
          )
        }
      >
        <span id="experiments-title">Experiments</span>
      </PageTitle>
      <ErrorBox message={error || list.error} />
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Fault</th>
              <th scope="col">Schedule</th>
              <th scope="col">Last run</th>
              <th scope="col">Updated</th>
              {can('operator') && <th scope="col">Actions</th>}
            </tr>
          </thead>
          <tbody>
            {experiments.map((e) => (
              <tr key={e.name} data-experiment={e.name}>
                <th scope="row" data-label="Name">
                  <Link href={experimentHref(e.name)}>{e.name}</Link>
                  {e.spec.description && <div class="small muted">{e.spec.description}</div>}
                </th>
                <td data-label="Fault">
                  {e.spec.fault.kind} for {e.spec.duration}
                </td>
                <td data-label="Schedule">
                  {schedule(e.spec) ? (
                    <>
                      <code>{schedule(e.spec)}</code>
                      <div class="small">
                        next <Time iso={e.nextRunAt} />
                      </div>
                    </>
                  ) : (
                    <span class="muted">on demand</span>
                  )}
                </td>
                <td data-label="Last run">
                  {e.lastRun ? (
                    <Link href={`/runs/${encodeURIComponent(e.lastRun.id)}`}>
                      <Status value={e.lastRun.status} /> <Time iso={e.lastRun.startedAt} />
                    </Link>
                  ) : (
                    <span class="muted">never</span>
                  )}
                </td>
                <td data-label="Updated">
                  <Time iso={e.updatedAt} /> by {e.updatedBy}
                </td>
                {can('operator') && (
                  <td data-label="Actions" class="row-actions">
                    <button type="button" class="primary" onClick={() => void run(e.name)} aria-label={`Run ${e.name}`}>
                      Run
                    </button>
                    <button type="button" class="danger" onClick={() => setDeleting(e.name)} aria-label={`Delete ${e.name}`}>
                      Delete
                    </button>
                  </td>
                )}
              </tr>
            ))}
            {experiments.length === 0 && !list.loading && (
              <tr>
                <td colSpan={6} class="muted">
                  No experiment yet.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      <ConfirmDialog
        open={deleting !== null}
        title={`Delete ${deleting ?? ''}?`}
        confirmLabel="Delete"
        danger
        onClose={() => setDeleting(null)}
        onConfirm={async () => {
          await api('DELETE', `/v1/experiments/${encodeURIComponent(deleting!)}`)
          list.reload()
        }}
      >
        <p>Its runs are kept in the archive; a run in progress goes on until it ends or is aborted.</p>
      </ConfirmDialog>
    </section>
  )
}
