import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { recordStatuses, runStatuses } from '../protocol/views.js'

/** What the gauges read at scrape time. */
export interface ServerMetricsSources {
  agentsConnected: () => number
  agentsKnown: () => number
  runCounts: () => Map<string, number>
  recordCounts: () => Map<string, number>
  eventStreamClients: () => number
}

const PREFIX = 'faultline_server_'

/**
 * Prometheus metrics of one server instance, in a registry of its own (no global default), so
 * several servers in one process (tests) do not collide. Gauges of the state (agents, runs,
 * records) are computed when scraped, by counts in SQL; counters are kept by the hub and the routes.
 */
export function createServerMetrics(sources: ServerMetricsSources) {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: PREFIX, eventLoopMonitoringPrecision: 200 })
  const countBy = (gauge: Gauge<'status'>, statuses: readonly string[], counts: Map<string, number>) => {
    // Every status gets a series, 0 included, so a rate or an alert never sees it vanish.
    for (const status of statuses) gauge.set({ status }, counts.get(status) ?? 0)
  }
  return {
    registry,
    linkMessages: new Counter({
      name: `${PREFIX}link_messages_total`,
      help: 'Messages on the agent links, by direction (in: from agents, out: to agents)',
      labelNames: ['direction'] as const,
      registers: [registry],
    }),
    linkRejected: new Counter({
      name: `${PREFIX}link_messages_rejected_total`,
      help: 'Messages from agents refused as invalid (malformed, wrong version, out of order)',
      registers: [registry],
    }),
    haltSeconds: new Histogram({
      name: `${PREFIX}halt_duration_seconds`,
      help: 'POST /v1/halt: from the request to the acknowledgement of every connected agent',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    agentsConnected: new Gauge({
      name: `${PREFIX}agents_connected`,
      help: 'Agents connected now (hello received)',
      registers: [registry],
      collect() {
        this.set(sources.agentsConnected())
      },
    }),
    agentsKnown: new Gauge({
      name: `${PREFIX}agents_known`,
      help: 'Agents enrolled (connected or not)',
      registers: [registry],
      collect() {
        this.set(sources.agentsKnown())
      },
    }),
    runs: new Gauge({
      name: `${PREFIX}runs`,
      help: 'Runs by status',
      labelNames: ['status'] as const,
      registers: [registry],
      collect() {
        countBy(this, runStatuses, sources.runCounts())
      },
    }),
    records: new Gauge({
      name: `${PREFIX}records`,
      help: 'Records (one per run, host and target) by status',
      labelNames: ['status'] as const,
      registers: [registry],
      collect() {
        countBy(this, recordStatuses, sources.recordCounts())
      },
    }),
    eventStreamClients: new Gauge({
      name: `${PREFIX}event_stream_clients`,
      help: 'Clients of GET /v1/events/stream connected now',
      registers: [registry],
      collect() {
        this.set(sources.eventStreamClients())
      },
    }),
  }
}
export type ServerMetrics = ReturnType<typeof createServerMetrics>

/** What the hub counts (kept narrow, so the hub does not depend on prom-client). */
export interface LinkCounters {
  messageIn(): void
  messageOut(): void
  rejected(): void
}
