import type { AuditEntry, FleetEvent } from '../protocol/views.js'
import type { AuditRow, EventRow } from './store.js'

/** Rows as the API shows them: one mapping, shared by GET /v1/events, GET /v1/audit and the event stream. */

export const iso = (ms: number): string => new Date(ms).toISOString()

export function fleetEventView(e: EventRow): FleetEvent {
  return {
    id: e.id,
    at: iso(e.at),
    type: e.type,
    ...(e.agentId ? { agentId: e.agentId } : {}),
    ...(e.runId ? { runId: e.runId } : {}),
    message: e.message,
    ...(e.data !== null ? { data: e.data } : {}),
  }
}

export function auditEntryView(e: AuditRow): AuditEntry {
  return { id: e.id, at: iso(e.at), who: e.who, role: e.role, method: e.method, route: e.route, url: e.url, status: e.status, outcome: e.outcome, source: e.source }
}
