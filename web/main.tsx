import { render } from 'preact'
import { useEffect, useState } from 'preact/hooks'
import { Link, Redirect, Route, Router, Switch, useLocation } from 'wouter-preact'
import { useHashLocation } from 'wouter-preact/use-hash-location'
import { api, me, messageOf, signIn, signOut, signedOutReason, token, type WhoAmI } from './api.js'
import { AuditPage } from './pages/audit.js'
import { ExperimentsPage } from './pages/experiments.js'
import { FleetPage } from './pages/fleet.js'
import { HaltButton, HaltPanel } from './pages/halt.js'
import { RunPage } from './pages/run.js'
import { RunsPage } from './pages/runs.js'
import { TokensPage } from './pages/tokens.js'
import { startStream, streamStatus } from './stream.js'
import './style.css'
import { can } from './ui.js'

/**
 * The Faultline dashboard: sign in with a token, then the fleet, experiments, runs, the audit
 * log and (admins) tokens, live from the server's event stream. Hash routing (#/fleet), so the
 * server serves one index.html and needs no route per page.
 */

function SignIn() {
  const [secret, setSecret] = useState('')
  const [error, setError] = useState('')
  const [busy, setBusy] = useState(false)
  const submit = async (e: Event) => {
    e.preventDefault()
    setBusy(true)
    setError('')
    try {
      const who = await api<WhoAmI>('GET', '/v1/whoami', undefined, { token: secret.trim() })
      signIn(secret.trim(), who)
    } catch (err) {
      setError(messageOf(err))
    } finally {
      setBusy(false)
    }
  }
  return (
    <main class="signin">
      <form onSubmit={(e) => void submit(e)} aria-labelledby="signin-title">
        <h1 id="signin-title">Faultline</h1>
        {signedOutReason.value && (
          <p class="notice" role="alert">
            Signed out: {signedOutReason.value}
          </p>
        )}
        <label for="token">API token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="current-password"
          required
          value={secret}
          onInput={(e) => setSecret(e.currentTarget.value)}
          aria-describedby="token-help"
        />
        <p id="token-help" class="muted small">
          The admin token is in the server's state dir (admin.token); an admin makes others with <code>faultline tokens create</code>. It is
          kept in this tab only (sessionStorage).
        </p>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy || secret.trim() === ''}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
      </form>
    </main>
  )
}

/** A reload keeps the token (sessionStorage): ask the server who it is again. */
function Resume({ secret }: { secret: string }) {
  useEffect(() => {
    api<WhoAmI>('GET', '/v1/whoami').then(
      (who) => signIn(secret, who),
      (err: unknown) => signOut(messageOf(err)),
    )
  }, [secret])
  return (
    <main class="signin">
      <p aria-live="polite">Signing in…</p>
    </main>
  )
}

const pages = [
  { href: '/fleet', label: 'Fleet' },
  { href: '/experiments', label: 'Experiments' },
  { href: '/runs', label: 'Runs' },
  { href: '/audit', label: 'Audit' },
] as const

function Nav() {
  const [location] = useLocation()
  const items = can('admin') ? [...pages, { href: '/tokens', label: 'Tokens' }] : pages
  return (
    <nav aria-label="pages">
      <ul>
        {items.map((p) => (
          <li key={p.href}>
            <Link href={p.href} aria-current={location === p.href || location.startsWith(`${p.href}/`) ? 'page' : undefined}>
              {p.label}
            </Link>
          </li>
        ))}
      </ul>
    </nav>
  )
}

const streamText = { off: 'not live', connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…', polling: 'polling' } as const

function Shell({ who }: { who: WhoAmI }) {
  useEffect(() => startStream(token.value!), [])
  return (
    <Router hook={useHashLocation}>
      <a class="skip" href="#main" onClick={(e) => (e.preventDefault(), document.getElementById('main')?.focus())}>
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Faultline</span>
        <Nav />
        <div class="who">
          <span class={`live live-${streamStatus.value}`} role="status" aria-live="polite" title="the event stream">
            {streamText[streamStatus.value]}
          </span>
          <span class="identity">
            <span class="who-name">{who.who}</span> <span class={`role role-${who.role}`} data-testid="role">{who.role}</span>
          </span>
          {can('operator') && <HaltButton />}
          <button type="button" onClick={() => signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <HaltPanel />
      <main id="main" tabIndex={-1}>
        <Switch>
          <Route path="/fleet" component={FleetPage} />
          <Route path="/experiments">{() => <ExperimentsPage />}</Route>
          {/* New and an experiment by name are apart (/experiments/edit/NAME), so an experiment named "new" opens too. */}
          <Route path="/experiments/new">{() => <ExperimentsPage editing="" />}</Route>
          <Route path="/experiments/edit/:name">{(p: { name: string }) => <ExperimentsPage editing={decodeURIComponent(p.name)} />}</Route>
          <Route path="/runs" component={RunsPage} />
          <Route path="/runs/:id">{(p: { id: string }) => <RunPage id={decodeURIComponent(p.id)} />}</Route>
          <Route path="/audit" component={AuditPage} />
          {can('admin') && <Route path="/tokens" component={TokensPage} />}
          <Route>
            <Redirect to="/fleet" replace />
          </Route>
        </Switch>
      </main>
      <footer class="muted small">faultline {who.version}</footer>
    </Router>
  )
}

function App() {
  const secret = token.value
  const who = me.value
  if (!secret) return <SignIn />
  if (!who) return <Resume secret={secret} />
  return <Shell who={who} />
}

render(<App />, document.getElementById('app')!)
