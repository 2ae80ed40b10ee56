import type { TLSSocket } from 'node:tls'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { tokensEqual } from '../../common/tokens.js'
import { FaultlineError } from '../../protocol/errors.js'

export interface AuthOptions {
  /** When set, every request except /healthz must carry "Authorization: Bearer <token>". */
  token?: string
  /** When true, TLS already required a client certificate; its subject names the caller. */
  clientCerts: boolean
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who made the request: "token", "cert:<CN>" or "local". For logs and the journal. */
    who: string
  }
}

const OPEN_ROUTES = new Set(['/healthz'])

function certSubject(req: FastifyRequest): string | undefined {
  const socket = req.raw.socket as Partial<TLSSocket>
  if (typeof socket.getPeerCertificate !== 'function') return undefined
  const cert = socket.getPeerCertificate()
  const cn = cert?.subject?.CN
  return Array.isArray(cn) ? cn[0] : cn
}

/**
 * Authentication and the audit trail of mutating requests (who, what, from where, outcome).
 * Tokens are never logged.
 */
export const authPlugin = fp(async function authPlugin(app: FastifyInstance, opts: AuthOptions) {
  app.decorateRequest('who', '')

  app.addHook('onRequest', async (req) => {
    const subject = opts.clientCerts ? certSubject(req) : undefined
    req.who = subject ? `cert:${subject}` : 'local'
    if (!opts.token || OPEN_ROUTES.has(req.url.split('?')[0] ?? '')) return
    const header = req.headers.authorization ?? ''
    const match = /^Bearer\s+(\S+)$/i.exec(header)
    if (!match || !tokensEqual(match[1]!, opts.token)) {
      throw new FaultlineError('FAULTLINE_ERR_UNAUTHORIZED', 'send "Authorization: Bearer <token>" with the token from the agent\'s --token-file')
    }
    req.who = subject ? `cert:${subject}+token` : 'token'
  })

  app.addHook('onResponse', async (req, reply) => {
    const mutating = req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'OPTIONS'
    const entry = {
      who: req.who,
      from: req.ip,
      method: req.method,
      url: req.url,
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime),
    }
    if (mutating) req.log.info(entry, 'mutating request')
    else req.log.debug(entry, 'request')
  })
})
