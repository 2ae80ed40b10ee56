import type { Hub } from './hub.js'
import type { Runs } from './runs.js'
import type { Scheduler } from './scheduler.js'
import type { EventRow, Store } from './store.js'

/** What the route plugins share: the store, the agent hub, the runs and the scheduler. */
export interface ServerContext {
  store: Store
  hub: Hub
  runs: Runs
  scheduler: Scheduler
  /** Writes an event row and hands it to live listeners (the dashboard, later). */
  event: (type: string, message: string, refs?: { agentId?: string; runId?: string; data?: unknown }) => EventRow
}
