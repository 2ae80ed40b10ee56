import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import sjson from 'secure-json-parse'
import { FaultlineError, errorCatalog, isFaultlineError, type ErrorCode } from '../protocol/errors.js'

/** Fastify's own error codes, mapped into our catalogue. */
const fastifyCodes: Record<string, ErrorCode> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'FAULTLINE_ERR_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'FAULTLINE_ERR_BAD_JSON',
  FST_ERR_CTP_BODY_TOO_LARGE: 'FAULTLINE_ERR_PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'FAULTLINE_ERR_BAD_JSON',
  FST_ERR_CTP_INVALID_JSON_BODY: 'FAULTLINE_ERR_BAD_JSON',
}

/**
 * The one error handler: every error leaves as { code, message } with the status its code
 * carries. Bad input never becomes a 500; a real 500 is logged with its stack.
 */
export const errorsPlugin = fp(async function errorsPlugin(app: FastifyInstance) {
  // Our own JSON parser, so __proto__ / constructor.prototype keys get their own error code.
  app.removeContentTypeParser(['application/json', 'text/plain'])
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = String(body)
    if (text.trim() === '') {
      done(new FaultlineError('FAULTLINE_ERR_BAD_JSON', 'the body is empty; send a JSON object, or no content-type header'), undefined)
      return
    }
    try {
      done(null, sjson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' }))
    } catch (err) {
      const message = (err as Error).message
      if (/forbidden prototype property/i.test(message)) {
        done(new FaultlineError('FAULTLINE_ERR_FORBIDDEN_KEY', 'the body contains a __proto__ or constructor.prototype key, which is refused'), undefined)
      } else {
        done(new FaultlineError('FAULTLINE_ERR_BAD_JSON', `the body is not valid JSON: ${message}`), undefined)
      }
    }
  })

  app.setErrorHandler((err: FastifyError | FaultlineError, req, reply) => {
    if (isFaultlineError(err)) {
      if (err.statusCode >= 500) req.log.error({ err }, 'request failed')
      return reply.status(err.statusCode).send(err.toBody())
    }
    const fe = err as FastifyError
    if (fe.validation) {
      // Unions report every branch's error; keep each distinct one, most specific first.
      const seen = new Set<string>()
      const issues = fe.validation
        .map((v) => ({ path: v.instancePath, message: v.message ?? 'is invalid', params: v.params }))
        .filter((v) => v.message !== 'must match a schema in anyOf' && !seen.has(v.path + v.message) && seen.add(v.path + v.message))
      const first = issues[0] ?? { path: '', message: 'is invalid', params: {} as Record<string, unknown> }
      const extra = first.params && 'additionalProperty' in first.params ? ` (${String(first.params.additionalProperty)})` : ''
      return reply.status(400).send({
        code: 'FAULTLINE_ERR_VALIDATION',
        message: `${fe.validationContext ?? 'request'}${first.path} ${first.message}${extra}`,
        details: issues.slice(0, 5),
      })
    }
    const mapped = fe.code ? fastifyCodes[fe.code] : undefined
    if (mapped) return reply.status(errorCatalog[mapped].status).send({ code: mapped, message: fe.message })
    if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
      return reply.status(fe.statusCode).send({ code: 'FAULTLINE_ERR_VALIDATION', message: fe.message })
    }
    req.log.error({ err }, 'unexpected error')
    return reply.status(500).send({ code: 'FAULTLINE_ERR_INTERNAL', message: 'internal error; see the agent log' })
  })

  app.setNotFoundHandler((req, reply) => {
    reply.status(404).send({ code: 'FAULTLINE_ERR_ROUTE_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}; see /docs` })
  })
})
