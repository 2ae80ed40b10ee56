import type { TLSSocket } from 'node:tls'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { tokensEqual } from '../../common/tokens.js'
import { FaultlineError } from '../../protocol/errors.js'
import { peerCredentials } from '../native/libc.js'

export interface AuthOptions {
  /** When set, every TCP request except /healthz must carry "Authorization: Bearer <token>". */
  token?: string
  /** When true, TLS already required a client certificate; its subject names the caller. */
  clientCerts: boolean
}

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * Who made the request, for logs and the journal: "unix:uid=<uid>" over the Unix socket,
     * "token", "cert:<CN>" or "cert:<CN>+token" over TCP, "local" in process (app.inject).
     */
    who: string
  }
}

/** How the agent is reached: its Unix socket, a TCP port, or (not listening) only in process. */
function transportOf(app: FastifyInstance): 'unix' | 'tcp' | 'in-process' {
  const address = app.server.address()
  return typeof address === 'string' ? 'unix' : address ? 'tcp' : 'in-process'
}

/** The caller's uid on the Unix socket (SO_PEERCRED), for the log. */
function unixPeer(req: FastifyRequest): string {
  const fd = (req.raw.socket as unknown as { _handle?: { fd?: number } })._handle?.fd
  const cred = typeof fd === 'number' && fd >= 0 ? peerCredentials(fd) : undefined
  return cred ? `unix:uid=${cred.uid}` : 'unix'
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
    const transport = transportOf(app)
    // The socket's owner, group and mode (0660 root:faultline, or 0600) decided who may connect.
    if (transport === 'unix') {
      req.who = unixPeer(req)
      return
    }
    const subject = opts.clientCerts ? certSubject(req) : undefined
    req.who = subject ? `cert:${subject}` : 'local'
    if (OPEN_ROUTES.has(req.url.split('?')[0] ?? '')) return
    if (!opts.token) {
      // No TCP listener goes without a credential (main.ts makes a token); in case one ever did, refuse.
      if (transport === 'tcp' && !subject) {
        throw new FaultlineError('FAULTLINE_ERR_UNAUTHORIZED', 'this agent listens on TCP without a credential and answers nobody; restart it with a token (--token-file, or the generated one) or client certificates')
      }
      return
    }
    const header = req.headers.authorization ?? ''
    const match = /^Bearer\s+(\S+)$/i.exec(header)
    if (!match || !tokensEqual(match[1]!, opts.token)) {
      throw new FaultlineError('FAULTLINE_ERR_UNAUTHORIZED', 'send "Authorization: Bearer <token>" with the agent\'s token: its --token-file, or <state dir>/agent.token (made at its first start, readable by root only)')
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
