import { defaultKeymap, history, historyKeymap } from '@codemirror/commands'
import { yaml } from '@codemirror/lang-yaml'
import { bracketMatching, defaultHighlightStyle, indentOnInput, syntaxHighlighting } from '@codemirror/language'
import { linter, lintGutter, type Diagnostic } from '@codemirror/lint'
import { EditorState, type Text } from '@codemirror/state'
import { EditorView, drawSelection, highlightActiveLine, highlightActiveLineGutter, keymap, lineNumbers } from '@codemirror/view'
import { useEffect, useRef, useState } from 'preact/hooks'
import { Link, useLocation } from 'wouter-preact'
import { stringify } from 'yaml'
import type { ExperimentPlan, ExperimentView } from '../protocol/views.js'
import { ApiError, api, messageOf } from './api.js'
import type { CheckIssue, CheckResult } from './types.js'
import { ConfirmDialog, ErrorBox, PageTitle, Status, can, experimentHref } from './ui.js'

/**
 * The experiment editor (a chunk of its own: CodeMirror and the YAML serializer are loaded only
 * here). While typing, the text goes to POST /v1/experiments/check, the server's own schema and
 * checks, and its issues come back as inline diagnostics (gutter marks and underlines).
 */

export interface EditorProps {
  /** The stored experiment to edit, or "" for a new one. */
  name: string
}

const TEMPLATE = `# A new experiment: which hosts, which target on each, which fault, for how long.
name: my-experiment
hosts: { labels: { role: db } }
mode: one
target: { type: process, name: sleep }
fault: { kind: process-stop }
duration: 30s
`

/** The editor's look (inside its shadow root the page's stylesheet does not reach it; its custom properties do). */
const theme = EditorView.theme({
  '&': { minHeight: '18rem', maxHeight: '65vh', color: 'var(--text)', backgroundColor: 'var(--panel)' },
  '&.cm-focused': { outline: '3px solid var(--focus)' },
  '.cm-scroller': { fontFamily: "ui-monospace, 'DejaVu Sans Mono', 'Liberation Mono', monospace", minHeight: '18rem' },
  '.cm-gutters': { backgroundColor: 'var(--bg)', color: 'var(--muted)', borderRight: '1px solid var(--line)' },
  '.cm-activeLine, .cm-activeLineGutter': { backgroundColor: 'color-mix(in srgb, var(--accent) 8%, transparent)' },
  '.cm-tooltip': { backgroundColor: 'var(--panel)', color: 'var(--text)', border: '1px solid var(--line)' },
})

/** A 1-based line and column of the server's answer as an offset in the document, kept inside it. */
function offsetOf(doc: Text, line: number, column: number): number {
  if (line < 1) return 0
  if (line > doc.lines) return doc.length
  const l = doc.line(line)
  return Math.min(l.to, l.from + Math.max(0, column - 1))
}

export function diagnosticsOf(doc: Text, issues: CheckIssue[]): Diagnostic[] {
  return issues.map((issue) => {
    const from = offsetOf(doc, issue.line, issue.column)
    let to = offsetOf(doc, issue.endLine || issue.line, issue.endColumn || issue.column)
    // An issue at one point underlines the rest of its line, so it can be seen.
    if (to <= from) to = doc.lineAt(from).to
    // (the server's messages mostly name their field already: "fault.load: load 150 is above …")
    const message = !issue.path || issue.message.startsWith(issue.path) ? issue.message : `${issue.path}: ${issue.message}`
    return { from, to, severity: 'error', source: 'server', message }
  })
}

function describeResolved(r: unknown): string {
  const t = r as { type?: string; hostname?: string; pid?: number; comm?: string; name?: string; id?: string; runtime?: string } | undefined
  switch (t?.type) {
    case 'host':
      return `host ${t.hostname ?? ''}`
    case 'process':
      return `process ${t.pid} (${t.comm ?? '?'})`
    case 'netns':
      return `netns ${t.name ?? ''}`
    case 'container':
      return `container ${t.name ?? (t.id ?? '').slice(0, 12)} (${t.runtime ?? ''})`
    default:
      return JSON.stringify(r)
  }
}

function Plan({ plan }: { plan: ExperimentPlan }) {
  return (
    <section class="plan" aria-labelledby="plan-title">
      <h2 id="plan-title">Preview: what a run would do now</h2>
      <p>
        A run now would pick {plan.selection.wouldChoose} of {plan.selection.connected} connected host(s) ({plan.selection.matched} matched), mode{' '}
        {plan.mode}, for {plan.duration}. Nothing was applied.
      </p>
      {plan.warnings.length > 0 && (
        <ul class="warnings">
          {plan.warnings.map((w) => (
            <li key={w}>{w}</li>
          ))}
        </ul>
      )}
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Host</th>
              <th scope="col">Outcome</th>
              <th scope="col">Targets / why not</th>
            </tr>
          </thead>
          <tbody>
            {plan.hosts.map((h) => (
              <tr key={h.agent}>
                <th scope="row" data-label="Host">
                  {h.hostname}
                </th>
                <td data-label="Outcome">
                  <Status value={h.outcome === 'would-inject' ? 'ok' : h.outcome === 'refused' ? 'failed' : 'offline'} /> {h.outcome}
                </td>
                <td data-label="Targets">
                  {h.injections.length > 0 && (
                    <ul class="plain">
                      {h.injections.map((i) => (
                        <li key={i.id}>
                          {describeResolved(i.resolved)}: {i.plan.steps.filter((s) => s.phase === 'apply').map((s) => s.detail).join('; ')}
                        </li>
                      ))}
                    </ul>
                  )}
                  {h.error && (
                    <span class="bad-text">
                      <code>{h.error.code}</code> {h.error.message}
                    </span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  )
}

/** What a save said, kept across the move from "new" to the experiment's own page. */
let savedNotice: { name: string; warnings: string[] } | null = null

type CheckState = { state: 'checking' } | { state: 'valid'; warnings: string[] } | { state: 'invalid'; count: number } | { state: 'unavailable'; message: string }

export function Editor({ name }: EditorProps) {
  const [, navigate] = useLocation()
  const host = useRef<HTMLDivElement>(null)
  const view = useRef<EditorView | null>(null)
  const [loaded, setLoaded] = useState<ExperimentView | null>(null)
  const [loadError, setLoadError] = useState('')
  const [dirty, setDirty] = useState(false)
  const [check, setCheck] = useState<CheckState>({ state: 'checking' })
  const [plan, setPlan] = useState<ExperimentPlan | null>(null)
  const [busy, setBusy] = useState('')
  const [error, setError] = useState('')
  const [saved, setSaved] = useState<string[] | null>(savedNotice?.name === name ? savedNotice.warnings : null)
  const [deleting, setDeleting] = useState(false)
  const writable = can('operator')

  useEffect(() => {
    savedNotice = null
    let cancelled = false
    const start = (text: string) => {
      if (cancelled || !host.current) return
      const state = EditorState.create({
        doc: text,
        extensions: [
          lineNumbers(),
          highlightActiveLineGutter(),
          history(),
          drawSelection(),
          indentOnInput(),
          bracketMatching(),
          highlightActiveLine(),
          syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
          // Tab is left to move the focus (keyboard users are not trapped in the editor).
          keymap.of([...defaultKeymap, ...historyKeymap]),
          yaml(),
          // Viewers read: the check (a POST) is for those who may save.
          ...(writable ? [lintGutter(), linter(checkSource, { delay: 400 })] : []),
          EditorState.readOnly.of(!writable),
          EditorView.contentAttributes.of({ 'aria-label': 'Experiment YAML' }),
          theme,
          EditorView.updateListener.of((u) => {
            if (u.docChanged) {
              setDirty(true)
              setSaved(null)
            }
          }),
        ],
      })
      // In a shadow root, CodeMirror's styles become a constructed stylesheet (adoptedStyleSheets)
      // instead of a <style> element, which the server's Content-Security-Policy (style-src 'self')
      // would block. (style-mod uses <style> for a document, adoptedStyleSheets for a shadow root.)
      const shadow = host.current.shadowRoot ?? host.current.attachShadow({ mode: 'open' })
      const parent = document.createElement('div')
      shadow.replaceChildren(parent)
      view.current = new EditorView({ state, parent, root: shadow })
    }
    if (name === '') start(TEMPLATE)
    else
      api<ExperimentView>('GET', `/v1/experiments/${encodeURIComponent(name)}`).then(
        (exp) => {
          setLoaded(exp)
          start(stringify(exp.spec, { lineWidth: 0 }))
        },
        (err: unknown) => setLoadError(messageOf(err)),
      )
    return () => {
      cancelled = true
      view.current?.destroy()
      view.current = null
    }
  }, [name])

  async function checkSource(v: EditorView): Promise<Diagnostic[]> {
    const doc = v.state.doc
    setCheck({ state: 'checking' })
    try {
      const res = await api<CheckResult>('POST', '/v1/experiments/check', { yaml: doc.toString() })
      if (res.valid) {
        setCheck({ state: 'valid', warnings: res.warnings })
        return []
      }
      setCheck({ state: 'invalid', count: res.issues.length })
      return diagnosticsOf(doc, res.issues)
    } catch (err) {
      setCheck({ state: 'unavailable', message: err instanceof ApiError && err.status === 404 ? 'this server has no check endpoint' : messageOf(err) })
      return []
    }
  }

  const text = () => view.current?.state.doc.toString() ?? ''
  const act = async (what: string, fn: () => Promise<void>) => {
    setBusy(what)
    setError('')
    try {
      await fn()
    } catch (err) {
      setError(messageOf(err))
    } finally {
      setBusy('')
    }
  }
  const preview = () => act('preview', async () => setPlan(await api<ExperimentPlan>('POST', '/v1/plans', text(), { yaml: true })))
  const save = () =>
    act('save', async () => {
      const exp = await api<ExperimentView>('POST', '/v1/experiments', text(), { yaml: true })
      setDirty(false)
      setSaved(exp.warnings ?? [])
      setLoaded(exp)
      if (exp.name !== name) {
        savedNotice = { name: exp.name, warnings: exp.warnings ?? [] }
        navigate(experimentHref(exp.name), { replace: true })
      }
    })
  const run = () =>
    act('run', async () => {
      const res = await api<{ id: string }>('POST', `/v1/experiments/${encodeURIComponent(name)}/runs`)
      navigate(`/runs/${encodeURIComponent(res.id)}`)
    })

  const stored = name !== '' && loaded !== null
  return (
    <section aria-labelledby="editor-title">
      <PageTitle>
        <span id="editor-title">{name === '' ? 'New experiment' : writable ? `Edit ${name}` : name}</span>
      </PageTitle>
      <p>
        <Link href="/experiments">← All experiments</Link>
      </p>
      <ErrorBox message={loadError} />
      <label id="yaml-label" class="block-label">
        Experiment (YAML){!writable && ' — read only'}
      </label>
      <div class="editor" ref={host} aria-labelledby="yaml-label" />
      <p id="check-status" class="check" role="status" aria-live="polite" data-testid="check-status" hidden={!writable}>
        {check.state === 'checking' && 'Checking…'}
        {check.state === 'valid' && <span class="ok-text">Valid{check.warnings.length > 0 ? `, with ${check.warnings.length} warning(s)` : ''}.</span>}
        {check.state === 'invalid' && <span class="bad-text">{check.count} problem(s): see the marks in the editor.</span>}
        {check.state === 'unavailable' && <span class="muted">Not checked: {check.message}.</span>}
      </p>
      {check.state === 'valid' && check.warnings.length > 0 && (
        <ul class="warnings" aria-label="warnings">
          {check.warnings.map((w) => (
            <li key={w}>{w}</li>
          ))}
        </ul>
      )}
      <ErrorBox message={error} />
      {saved && (
        <div role="status" class="notice">
          Saved.
          {saved.length > 0 && (
            <ul class="warnings">
              {saved.map((w) => (
                <li key={w}>{w}</li>
              ))}
            </ul>
          )}
        </div>
      )}
      <div class="actions editor-actions">
        {writable && (
          <>
            <button type="button" onClick={() => void preview()} disabled={busy !== ''}>
              {busy === 'preview' ? 'Asking the hosts…' : 'Preview'}
            </button>
            <button type="button" class="primary" onClick={() => void save()} disabled={busy !== '' || check.state === 'invalid'}>
              {busy === 'save' ? 'Saving…' : 'Save'}
            </button>
            {stored && (
              <button type="button" onClick={() => void run()} disabled={busy !== '' || dirty} title={dirty ? 'Save first: a run uses the stored experiment' : undefined}>
                {busy === 'run' ? 'Starting…' : 'Run'}
              </button>
            )}
            {stored && (
              <button type="button" class="danger" onClick={() => setDeleting(true)} disabled={busy !== ''}>
                Delete
              </button>
            )}
          </>
        )}
      </div>
      {writable && stored && dirty && <p class="small muted">Run uses the stored experiment: save your changes first.</p>}
      {plan && <Plan plan={plan} />}
      <ConfirmDialog
        open={deleting}
        title={`Delete ${name}?`}
        confirmLabel="Delete"
        danger
        onClose={() => setDeleting(false)}
        onConfirm={async () => {
          await api('DELETE', `/v1/experiments/${encodeURIComponent(name)}`)
          navigate('/experiments')
        }}
      >
        <p>Its runs are kept in the archive.</p>
      </ConfirmDialog>
    </section>
  )
}
