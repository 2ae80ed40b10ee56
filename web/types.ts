import type { AgentView, ApiTokenView } from '../protocol/views.js'

/** What the views of protocol/views.ts gain in the API additions of issue 15 (optional: older servers lack them). */

export interface AgentInjection {
  runId: string
  experiment: string
  injectionId: string
  kind: string
  target: string
  status: string
}

export type FleetAgent = AgentView & {
  /** Kinds the host cannot run, with why. */
  unavailable?: Record<string, string>
  /** Server injections open on the host now. */
  injections?: AgentInjection[]
}

export type TokenView = ApiTokenView & { expiresAt?: string }

export interface CheckIssue {
  path: string
  message: string
  line: number
  column: number
  endLine: number
  endColumn: number
}

export type CheckResult = { valid: true; experiment: unknown; warnings: string[] } | { valid: false; issues: CheckIssue[] }
