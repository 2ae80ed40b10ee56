import type { TLSSocket } from 'node:tls'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { FaultlineError } from '../../protocol/errors.js'
import { tokensEqual } from '../../common/tokens.js'
import { roleAllows, type Role } from '../../protocol/roles.js'
import type { AuditRow, Store } from '../store.js'

export interface ServerAuthOptions {
  store: Store
  /** The admin token (--admin-token-file, or made at the first start). */
  adminToken: string
  /** Writes an audit row (and hands it to the live event streams). */
  audit: (entry: Omit<AuditRow, 'id' | 'at'>) => AuditRow
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who made the request: "admin-token", "token:<name>", "anonymous"; "cert:<CN>+..." with a client certificate. */
    who: string
    role: Role | 'none'
    /** The API token the request authenticated with; undefined for the admin token (and anonymous). */
    tokenId: string | undefined
    /** When that API token expires (ms since the epoch), if it does. */
    tokenExpiresAt: number | undefined
  }
  interface FastifyContextConfig {
    /** The least role a route needs (default: viewer for GET, operator otherwise). */
    role?: Role
    /** The route authenticates by itself (the agent link). */
    ownAuth?: boolean
    /** No authentication at all, and no audit row: /healthz, the dashboard's static files. */
    public?: true
    /**
     * false: a call that changes nothing (POST /v1/experiments/check) is authenticated and
     * role-checked but not written to the audit log (refused calls still are); logged at debug.
     */
    audit?: false
  }
}

const expiredMessage = (name: string, expiresAt: number) => `the API token ${name} expired at ${new Date(expiresAt).toISOString()}; ask an admin for a new one`

function certSubject(req: FastifyRequest): string | undefined {
  // (no socket at all for app.injectWS in tests)
  const socket = req.raw.socket as Partial<TLSSocket> | undefined
  if (typeof socket?.getPeerCertificate !== 'function' || !socket.authorized) return undefined
  const cn = socket.getPeerCertificate()?.subject?.CN
  return Array.isArray(cn) ? cn[0] : cn
}

/**
 * Authentication (bearer tokens: the admin token, or API tokens kept hashed in the store),
 * authorisation by role, and the audit log: every mutating call, allowed or not, becomes a row
 * with who, what, when, from where and the outcome. Tokens are never logged or stored.
 */
export const serverAuthPlugin = fp(async function serverAuthPlugin(app: FastifyInstance, opts: ServerAuthOptions) {
  app.decorateRequest('who', '')
  app.decorateRequest('role', 'none')
  app.decorateRequest('tokenId', undefined)
  app.decorateRequest('tokenExpiresAt', undefined)

  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0] ?? ''
    const config = req.routeOptions.config
    if (config?.public) return
    const cert = certSubject(req)
    const prefix = cert ? `cert:${cert}+` : ''
    req.who = `${prefix}anonymous`
    if (config?.ownAuth) return
    const header = req.headers.authorization
    if (header !== undefined) {
      const match = /^Bearer\s+(\S+)$/i.exec(header)
      const presented = match?.[1]
      if (presented && tokensEqual(presented, opts.adminToken)) {
        req.who = `${prefix}admin-token`
        req.role = 'admin'
      } else {
        const token = presented ? opts.store.tokenBySecret(presented) : undefined
        if (!token) {
          throw new FaultlineError('FAULTLINE_ERR_UNAUTHORIZED', 'the bearer token is not one this server knows: send the admin token (<state-dir>/admin.token) or an API token (faultline tokens create)')
        }
        req.who = `${prefix}token:${token.name}`
        if (token.expiresAt !== null && token.expiresAt <= Date.now()) {
          throw new FaultlineError('FAULTLINE_ERR_TOKEN_EXPIRED', expiredMessage(token.name, token.expiresAt), { expiresAt: new Date(token.expiresAt).toISOString() })
        }
        req.role = token.role
        req.tokenId = token.id
        req.tokenExpiresAt = token.expiresAt ?? undefined
        opts.store.tokenUsed(token.id)
      }
    } else {
      throw new FaultlineError('FAULTLINE_ERR_UNAUTHORIZED', 'no bearer token was sent: send the admin token (<state-dir>/admin.token) or an API token (faultline tokens create) as "Authorization: Bearer <token>"')
    }
    if (req.is404) return
    const need: Role = config?.role ?? (req.method === 'GET' || req.method === 'HEAD' ? 'viewer' : 'operator')
    if (!roleAllows(req.role, need)) {
      throw new FaultlineError('FAULTLINE_ERR_FORBIDDEN', `${req.method} ${req.routeOptions.url ?? path} needs the ${need} role; ${req.who} has ${req.role}`)
    }
  })

  app.addHook('onResponse', async (req, reply) => {
    const config = req.routeOptions.config
    if (config?.public) return
    const status = reply.statusCode
    const refused = status === 401 || status === 403
    const mutating = req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'OPTIONS' && (config?.audit !== false || refused)
    const outcome = status === 401 ? 'unauthenticated' : status === 403 ? 'forbidden' : status < 400 ? 'ok' : 'error'
    const entry = { who: req.who, role: req.role, method: req.method, route: req.routeOptions.url ?? '', url: req.url.slice(0, 2048), status, outcome, source: req.ip }
    if (mutating) {
      opts.audit(entry)
      req.log.info({ ...entry, ms: Math.round(reply.elapsedTime) }, 'mutating request')
    } else if (refused) {
      // Refused reads are worth a row too: someone probing with a bad token.
      opts.audit(entry)
    } else {
      req.log.debug({ ...entry, ms: Math.round(reply.elapsedTime) }, 'request')
    }
  })
})
