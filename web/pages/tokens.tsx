import { useState } from 'preact/hooks'
import { roles, type Role } from '../../protocol/roles.js'
import { api, messageOf } from '../api.js'
import type { TokenView } from '../types.js'
import { ConfirmDialog, ErrorBox, PageTitle, Time, useResource } from '../ui.js'

type Created = TokenView & { token: string }

function Secret({ created, onDone }: { created: Created; onDone: () => void }) {
  const [copied, setCopied] = useState('')
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(created.token)
      setCopied('Copied.')
    } catch {
      // (no clipboard API off https and localhost) select it, so Ctrl+C copies it
      const field = document.getElementById('new-secret') as HTMLInputElement | null
      field?.select()
      setCopied('Selected: press Ctrl+C to copy.')
    }
  }
  return (
    <div class="secret" role="region" aria-labelledby="secret-title">
      <h2 id="secret-title">Token {created.name} created</h2>
      <p>This is the only time its secret is shown: copy it now.</p>
      <label for="new-secret">Secret</label>
      <div class="row">
        <input id="new-secret" readOnly value={created.token} onFocus={(e) => e.currentTarget.select()} />
        <button type="button" onClick={() => void copy()}>
          Copy
        </button>
      </div>
      <p aria-live="polite" class="small">
        {copied}
      </p>
      <button type="button" onClick={onDone}>
        Done
      </button>
    </div>
  )
}

/** API tokens (admins only): create with a role and an optional expiry, revoke. */
export function TokensPage() {
  const tokens = useResource((signal) => api<{ tokens: TokenView[] }>('GET', '/v1/tokens', undefined, { signal }), 'tokens')
  const [name, setName] = useState('')
  const [role, setRole] = useState<Role>('viewer')
  const [expiresIn, setExpiresIn] = useState('')
  const [error, setError] = useState('')
  const [created, setCreated] = useState<Created | null>(null)
  const [revoking, setRevoking] = useState<TokenView | null>(null)
  const create = async (e: Event) => {
    e.preventDefault()
    setError('')
    try {
      const body = { name: name.trim(), role, ...(expiresIn.trim() ? { expiresIn: expiresIn.trim() } : {}) }
      setCreated(await api<Created>('POST', '/v1/tokens', body))
      setName('')
      setExpiresIn('')
      tokens.reload()
    } catch (err) {
      setError(messageOf(err))
    }
  }
  return (
    <section aria-labelledby="tokens-title">
      <PageTitle>
        <span id="tokens-title">API tokens</span>
      </PageTitle>
      {created ? (
        <Secret created={created} onDone={() => setCreated(null)} />
      ) : (
        <form class="create-token" onSubmit={(e) => void create(e)} aria-labelledby="create-title">
          <h2 id="create-title">New token</h2>
          <div>
            <label for="token-name">Name</label>
            <input id="token-name" required pattern="[A-Za-z0-9][A-Za-z0-9._@\-]{0,63}" value={name} onInput={(e) => setName(e.currentTarget.value)} aria-describedby="token-name-help" />
            <p id="token-name-help" class="small muted">
              Who or what uses it; it appears in the audit log.
            </p>
          </div>
          <div>
            <label for="token-role">Role</label>
            <select id="token-role" value={role} onChange={(e) => setRole(e.currentTarget.value as Role)}>
              {roles.map((r) => (
                <option key={r} value={r}>
                  {r}
                </option>
              ))}
            </select>
          </div>
          <div>
            <label for="token-expiry">Expires in (optional)</label>
            <input id="token-expiry" placeholder="8h" pattern="([0-9]{1,9}(ms|h|m|s))+" value={expiresIn} onInput={(e) => setExpiresIn(e.currentTarget.value)} />
          </div>
          <button type="submit" class="primary">
            Create token
          </button>
        </form>
      )}
      <ErrorBox message={error || tokens.error} />
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Role</th>
              <th scope="col">Created</th>
              <th scope="col">Last used</th>
              <th scope="col">Expires</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {(tokens.data?.tokens ?? []).map((t) => (
              <tr key={t.id} data-token={t.name}>
                <th scope="row" data-label="Name">
                  {t.name}
                </th>
                <td data-label="Role">{t.role}</td>
                <td data-label="Created">
                  <Time iso={t.createdAt} /> by {t.createdBy}
                </td>
                <td data-label="Last used">
                  <Time iso={t.lastUsedAt} />
                </td>
                <td data-label="Expires">{t.expiresAt ? <Time iso={t.expiresAt} /> : <span class="muted">never</span>}</td>
                <td data-label="Actions">
                  <button type="button" class="danger" onClick={() => setRevoking(t)} aria-label={`Revoke ${t.name}`}>
                    Revoke
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <ConfirmDialog
        open={revoking !== null}
        title={`Revoke ${revoking?.name ?? ''}?`}
        confirmLabel="Revoke"
        danger
        onClose={() => setRevoking(null)}
        onConfirm={async () => {
          await api('DELETE', `/v1/tokens/${encodeURIComponent(revoking!.id)}`)
          tokens.reload()
        }}
      >
        <p>Whoever uses it is signed out at once, and its calls are refused from now on.</p>
      </ConfirmDialog>
    </section>
  )
}
