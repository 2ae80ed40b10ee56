import { LogController, type FastifyReply, type FastifyServerOptions } from 'fastify'
import type { Logger } from 'pino'
import type { TlsFiles } from './config.js'

/**
 * The Fastify options the agent and the server share: no per-request log lines (the auth plugin
 * writes one per request with who and what instead), prototype-poisoning refused, 503 while
 * closing, router-level errors (over-long or malformed path parameters) answered with a code like
 * any other, no type coercion, TLS 1.2 or later. `clientCerts`: with a CA, 'require' refuses
 * callers without a valid certificate (the agent); 'request' checks a certificate when one is
 * presented and leaves authentication to tokens (the server: agents dial in without one).
 */
export function hardenedFastifyOptions(opts: { log: Logger; bodyLimit: number; tls?: TlsFiles; clientCerts: 'require' | 'request' }) {
  return {
    loggerInstance: opts.log,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: opts.bodyLimit,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: true,
    frameworkErrors: (err: Error, _req: unknown, reply: unknown) => {
      void (reply as FastifyReply).status(400).send({ code: 'FAULTLINE_ERR_VALIDATION', message: err.message })
    },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false } },
    ...(opts.tls
      ? {
          https: {
            cert: opts.tls.cert,
            key: opts.tls.key,
            ...(opts.tls.ca ? { ca: opts.tls.ca, requestCert: true, rejectUnauthorized: opts.clientCerts === 'require' } : {}),
            minVersion: 'TLSv1.2' as const,
          },
        }
      : {}),
  } satisfies FastifyServerOptions & Record<string, unknown>
}
