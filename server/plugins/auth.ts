import type { TLSSocket } from 'node:tls'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { FaultlineError } from '../../protocol/errors.js'
import { tokensEqual } from '../../common/tokens.js'
import { roleAllows, type Role } from '../../protocol/roles.js'
import type { Store } from '../store.js'

export interface ServerAuthOptions {
  store: Store
  /** The admin token (--admin-token-file, or made at the first start). */
  adminToken: string
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who made the request: "admin-token", "token:<name>", "anonymous"; "cert:<CN>+..." with a client certificate. */
    who: string
    role: Role | 'none'
  }
  interface FastifyContextConfig {
    /** The least role a route needs (default: viewer for GET, operator otherwise). */
    role?: Role
    /** The route authenticates by itself (the agent link). */
    ownAuth?: boolean
  }
}

const OPEN_ROUTES = new Set(['/healthz'])

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

  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0] ?? ''
    const config = req.routeOptions.config
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
          if (OPEN_ROUTES.has(path)) return
          throw new FaultlineError('FAULTLINE_ERR_UNAUTHORIZED', 'the bearer token is not one this server knows: send the admin token (<state-dir>/admin.token) or an API token (faultline tokens create)')
        }
        req.who = `${prefix}token:${token.name}`
        req.role = token.role
        opts.store.tokenUsed(token.id)
      }
    } else if (!OPEN_ROUTES.has(path)) {
      throw new FaultlineError('FAULTLINE_ERR_UNAUTHORIZED', 'no bearer token was sent: send the admin token (<state-dir>/admin.token) or an API token (faultline tokens create) as "Authorization: Bearer <token>"')
    }
    if (OPEN_ROUTES.has(path) || req.is404) return
    const need: Role = config?.role ?? (req.method === 'GET' || req.method === 'HEAD' ? 'viewer' : 'operator')
    if (req.role === 'none' || !roleAllows(req.role, need)) {
      throw new FaultlineError('FAULTLINE_ERR_FORBIDDEN', `${req.method} ${req.routeOptions.url ?? path} needs the ${need} role; ${req.who} has ${req.role}`)
    }
  })

  app.addHook('onResponse', async (req, reply) => {
    const mutating = req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'OPTIONS'
    const status = reply.statusCode
    const outcome = status === 401 ? 'unauthenticated' : status === 403 ? 'forbidden' : status < 400 ? 'ok' : 'error'
    const entry = { who: req.who, role: req.role, method: req.method, route: req.routeOptions.url ?? '', url: req.url.slice(0, 2048), status, outcome, source: req.ip }
    if (mutating) {
      opts.store.audit(entry)
      req.log.info({ ...entry, ms: Math.round(reply.elapsedTime) }, 'mutating request')
    } else if (status === 401 || status === 403) {
      // Refused reads are worth a row too: someone probing with a bad token.
      opts.store.audit(entry)
    } else {
      req.log.debug({ ...entry, ms: Math.round(reply.elapsedTime) }, 'request')
    }
  })
})
