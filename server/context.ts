import type { EventStreams } from './event-stream.js'
import type { Hub } from './hub.js'
import type { ServerMetrics } from './metrics.js'
import type { Runs } from './runs.js'
import type { Scheduler } from './scheduler.js'
import type { AuditRow, EventRow, Store } from './store.js'

/** What the route plugins share: the store, the agent hub, the runs and the scheduler. */
export interface ServerContext {
  store: Store
  hub: Hub
  runs: Runs
  scheduler: Scheduler
  /** Live event streams (GET /v1/events/stream). */
  streams: EventStreams
  metrics: ServerMetrics
  /** Writes an event row and hands it to live listeners (the event streams). */
  event: (type: string, message: string, refs?: { agentId?: string; runId?: string; data?: unknown }) => EventRow
  /** Writes an audit row and hands it to live listeners, as `event` does. */
  audit: (entry: Omit<AuditRow, 'id' | 'at'>) => AuditRow
}
