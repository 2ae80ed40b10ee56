import { randomUUID } from 'node:crypto'
import type { TLSSocket } from 'node:tls'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import { Type } from 'typebox'
import type { TlsFiles } from '../../common/config.js'
import { hardenedFastifyOptions } from '../../common/fastify-options.js'
import { FAULTLINE_VERSION } from '../../common/version.js'
import { isFaultlineError } from '../../protocol/errors.js'
import { isOpenStatus, type Injection } from '../../protocol/injection.js'
import type { TargetSelector } from '../../protocol/target.js'
import type { ChaosdOrigin, Injector, Origin } from '../lifecycle/injector.js'
import { chaosdKinds, type ChaosdKind } from './schemas.js'
import { ChaosdRequestError, translate } from './translate.js'

/**
 * chaosd's HTTP API (github.com/chaos-mesh/chaosd, pkg/server/httpserver) on its own Fastify
 * instance and listener, so Chaos Mesh's PhysicalMachineChaos can drive this agent. Every attack
 * becomes an injection through the same Injector as /v1/injections: journaled before it touches
 * the host, bound to a deadline, recovered at every start. The journal is the only state: the
 * experiment uid is the injection request's id, and chaosd's kind, action and body ride in the
 * injection's origin.
 */
export interface ChaosdApiOptions {
  injector: Injector
  log: Logger
  /** Serve HTTPS; with `ca`, client certificates signed by it are required (Chaos Mesh's security mode). */
  tls?: TlsFiles
  /** 'system': only /api/system/* (chaosd's plain listener once its TLS listener is on). */
  routes: 'all' | 'system'
  /** The deadline of an attack whose body has no duration (Chaos Mesh sends none). */
  defaultDurationMs: number
  /** What network attacks act on (default: the host's network namespace). */
  networkTarget?: TargetSelector
}

/** chaosd's error body (pkg/server/utils/error.go): error codes are errorx type names. */
export interface ChaosdErrorBody {
  error: true
  message: string
  code: string
  full_text: string
}

export const ChaosdErrorSchema = Type.Object({ error: Type.Literal(true), message: Type.String(), code: Type.String(), full_text: Type.String() })
const ChaosdResponseSchema = Type.Object({ status: Type.Integer(), message: Type.String(), uid: Type.String() })
const chaosdErrors = { '4xx': ChaosdErrorSchema, '5xx': ChaosdErrorSchema }

/** An answer with chaosd's error shape and a status. */
class ChaosdHttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: 'error.api.invalid_request' | 'error.api.resource_not_found' | 'error.api.auth' | 'error.api.internal_server_error',
    message: string,
  ) {
    super(message)
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The chaosd caller for the log and the journal: "chaosd:cert:<CN>" or "chaosd:<address>". */
    chaosdWho: string
  }
}

export async function buildChaosdApi(opts: ChaosdApiOptions): Promise<FastifyInstance> {
  const { injector } = opts
  const log = opts.log.child({ component: 'chaosd' })
  const app = Fastify(
    hardenedFastifyOptions({ log, bodyLimit: 64 * 1024, clientCerts: 'require', ...(opts.tls ? { tls: opts.tls } : {}) }),
  ).withTypeProvider<TypeBoxTypeProvider>()
  const networkTarget: TargetSelector = opts.networkTarget ?? { type: 'host' }

  app.decorateRequest('chaosdWho', '')
  app.addHook('onRequest', async (req) => {
    const cn = certSubject(req)
    req.chaosdWho = cn ? `chaosd:cert:${cn}` : `chaosd:${req.ip}`
  })
  // The audit trail, as the main API keeps it: who, from where, what, outcome.
  app.addHook('onResponse', async (req, reply) => {
    const entry = { who: req.chaosdWho, from: req.ip, method: req.method, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) }
    if (req.method !== 'GET' && req.method !== 'HEAD') req.log.info(entry, 'mutating request')
    else req.log.debug(entry, 'request')
  })

  app.setErrorHandler((err: FastifyError | Error, req, reply) => {
    const body = (status: number, code: string, message: string, detail = message): ChaosdErrorBody => ({ error: true, message, code, full_text: `${code}: ${detail}` })
    if (err instanceof ChaosdHttpError) return reply.status(err.statusCode).send(body(err.statusCode, err.code, err.message))
    if (err instanceof ChaosdRequestError) return reply.status(400).send(body(400, 'error.api.invalid_request', `attack config validation failed: ${err.message}`))
    if (isFaultlineError(err)) {
      const status = err.statusCode
      // A fault this host cannot do, a target not there, a busy target: Chaos Mesh shows the
      // reason of a 400; 404 stays 404 (Chaos Mesh reads it as "recovered" on DELETE).
      const [code, out]: [string, number] =
        status === 404 ? ['error.api.resource_not_found', 404] : status === 401 || status === 403 ? ['error.api.auth', status] : status < 500 ? ['error.api.invalid_request', 400] : ['error.api.internal_server_error', status]
      if (out >= 500) req.log.error({ err }, 'chaosd request failed')
      return reply.status(out).send(body(out, code, err.message, `${err.code}: ${err.message}`))
    }
    const fe = err as FastifyError
    if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) return reply.status(400).send(body(400, 'error.api.invalid_request', fe.message))
    req.log.error({ err }, 'unexpected error')
    return reply.status(500).send(body(500, 'error.api.internal_server_error', 'internal error; see the agent log'))
  })
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0] ?? ''
    if (opts.routes === 'system' && path.startsWith('/api/') && !path.startsWith('/api/system/')) {
      // Not 404: Chaos Mesh reads a 404 on DELETE as "recovered" and would stop asking.
      reply.status(403).send({ error: true, code: 'error.api.auth', message: 'this plain-HTTP chaosd listener serves only /api/system/*: attacks go to the TLS listener (--chaosd-tls-listen)', full_text: 'error.api.auth: TLS is on' })
      return
    }
    reply.status(404).send({ error: true, code: 'error.api.resource_not_found', message: `no route ${req.method} ${path}`, full_text: `error.api.resource_not_found: no route ${req.method} ${path}` })
  })

  app.get('/api/system/health', async () => ({ status: 0, message: '' }))
  app.get('/api/system/version', async () => ({
    gitVersion: `v${FAULTLINE_VERSION}`,
    gitCommit: '',
    buildDate: '',
    goVersion: `node ${process.version}`,
    compiler: 'faultline',
    platform: `${process.platform}/${process.arch === 'x64' ? 'amd64' : process.arch}`,
  }))
  if (opts.routes === 'system') return app as unknown as FastifyInstance

  for (const kind of chaosdKinds) {
    app.post(
      `/api/attack/${kind}`,
      { schema: { body: Type.Unknown(), response: { 200: ChaosdResponseSchema, ...chaosdErrors } } },
      async (req) => attack(kind, req),
    )
  }

  async function attack(kind: ChaosdKind, req: FastifyRequest) {
    const defaults = { defaultDurationMs: opts.defaultDurationMs, networkTarget }
    const { action, request } = translate(kind, req.body, defaults)
    const given = (req.body as { uid?: string }).uid
    const uid = given || randomUUID()
    const prior = injector.requestWithOrigin(uid)
    if (prior.length > 0) {
      if (!prior.every((p) => p.origin?.chaosd)) throw new ChaosdHttpError(400, 'error.api.invalid_request', `uid "${uid}" is the id of an injection not made through this API; use another uid`)
      if (!prior.some((p) => isOpenStatus(p.injection.status))) {
        throw new ChaosdHttpError(400, 'error.api.invalid_request', `experiment "${uid}" already ran and was recovered; a new attack needs a new uid`)
      }
    }
    const chaosd: ChaosdOrigin = { uid, kind, action, body: req.body }
    const origin: Origin = { who: req.chaosdWho, address: req.ip, chaosd }
    req.log.info({ who: origin.who, uid, kind, action, fault: (request.fault as { kind: string }).kind }, 'chaosd attack')
    await injector.create({ ...request, id: uid }, origin)
    return { status: 200, message: 'attack successfully', uid }
  }

  app.delete(
    '/api/attack/:uid',
    { schema: { params: Type.Object({ uid: Type.String({ maxLength: 80 }) }), response: { 200: ChaosdResponseSchema, ...chaosdErrors } } },
    async (req) => {
      const { uid } = req.params
      const rows = injector.requestWithOrigin(uid).filter((r) => r.origin?.chaosd)
      const open = rows.filter((r) => isOpenStatus(r.injection.status) || (r.injection.status === 'failed' && r.injection.error?.code === 'FAULTLINE_ERR_RECOVER_FAILED'))
      // Unknown, or already recovered (its deadline, a restart, an earlier DELETE): Chaos Mesh
      // reads 404 as "recovered" (controllers/chaosimpl/physicalmachinechaos/impl.go).
      if (open.length === 0) {
        throw new ChaosdHttpError(404, 'error.api.resource_not_found', rows.length === 0 ? `experiment ${uid} not found` : `experiment ${uid} is already recovered`)
      }
      req.log.info({ who: req.chaosdWho, uid }, 'chaosd recover')
      for (const r of open) await injector.recover(r.injection.id, 'api')
      return { status: 200, message: 'attack recover successfully', uid }
    },
  )

  const listExperiments = async (req: FastifyRequest) => {
    const mode = (req.query as { launch_mode?: string }).launch_mode
    const experiments = experimentsOf(injector.listWithOrigin())
    return mode === undefined || mode === 'svr' ? experiments : []
  }
  app.get('/api/experiments', listExperiments)
  app.get('/api/experiments/', listExperiments)
  app.get('/api/experiments/:uid/runs', { schema: { params: Type.Object({ uid: Type.String({ maxLength: 80 }) }) } }, async (req) => {
    const rows = injector.requestWithOrigin(req.params.uid).filter((r) => r.origin?.chaosd)
    const experiment = experimentsOf(rows)[0]
    return rows.map(({ injection }, i) => ({
      id: i + 1,
      uid: injection.id,
      start_at: injection.createdAt,
      finished_at: injection.recoveredAt ?? GO_ZERO_TIME,
      status: runStatus(injection),
      error: injection.error?.message ?? '',
      experiment,
    }))
  })
  return app as unknown as FastifyInstance
}

/** What Go's time.Time{} marshals to: chaosd's finished_at of a run still going. */
const GO_ZERO_TIME = '0001-01-01T00:00:00Z'

export interface ChaosdExperiment {
  uid: string
  created_at: string
  updated_at: string
  status: 'created' | 'success' | 'error' | 'destroyed'
  error: string
  kind: string
  action: string
  recover_command: string
  launch_mode: 'svr'
}

/** chaosd's experiment records (pkg/core/experiment.go), one per uid, from the journal's rows. */
export function experimentsOf(rows: { injection: Injection; origin: Origin | null }[]): ChaosdExperiment[] {
  const byUid = new Map<string, { chaosd: ChaosdOrigin; injections: Injection[] }>()
  for (const { injection, origin } of rows) {
    if (!origin?.chaosd) continue
    const entry = byUid.get(origin.chaosd.uid) ?? { chaosd: origin.chaosd, injections: [] }
    entry.injections.push(injection)
    byUid.set(origin.chaosd.uid, entry)
  }
  return [...byUid.values()].map(({ chaosd, injections }) => {
    const statuses = injections.map((i) => i.status)
    const status: ChaosdExperiment['status'] = statuses.some((s) => s === 'active' || s === 'recovering')
      ? 'success'
      : statuses.some((s) => s === 'pending' || s === 'applying')
        ? 'created'
        : statuses.some((s) => s === 'failed')
          ? 'error'
          : 'destroyed'
    const failed = injections.find((i) => i.error)
    return {
      uid: chaosd.uid,
      created_at: injections.map((i) => i.createdAt).sort()[0]!,
      updated_at: injections.map((i) => i.updatedAt).sort().at(-1)!,
      status,
      error: failed?.error?.message ?? '',
      kind: chaosd.kind,
      action: chaosd.action,
      recover_command: JSON.stringify(chaosd.body),
      launch_mode: 'svr',
    }
  })
}

function runStatus(injection: Injection): 'started' | 'success' | 'failed' | 'recovered' {
  switch (injection.status) {
    case 'pending':
    case 'applying':
      return 'started'
    case 'active':
      return 'success'
    case 'failed':
      return 'failed'
    default:
      return 'recovered'
  }
}

function certSubject(req: FastifyRequest): string | undefined {
  const socket = req.raw.socket as Partial<TLSSocket>
  if (typeof socket.getPeerCertificate !== 'function') return undefined
  const cn = socket.getPeerCertificate()?.subject?.CN
  return Array.isArray(cn) ? cn[0] : cn
}
