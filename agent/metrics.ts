import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/**
 * Prometheus metrics of one agent instance. Each agent owns its registry (no global default),
 * so several agents in one process (tests, benchmarks) do not collide.
 */
export function createMetrics(openByKind: () => Map<string, number>) {
  const registry = new Registry()
  // The event-loop delay monitor wakes the loop at its precision; 10 ms (the default) costs
  // ~1 % of a core on an idle agent, 200 ms is plenty for a lag metric.
  collectDefaultMetrics({ register: registry, prefix: 'faultline_agent_', eventLoopMonitoringPrecision: 200 })
  const seconds = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
  return {
    registry,
    injections: new Counter({
      name: 'faultline_injections_total',
      help: 'Injections by kind and outcome (active, failed, dry_run)',
      labelNames: ['kind', 'outcome'] as const,
      registers: [registry],
    }),
    recoveries: new Counter({
      name: 'faultline_recoveries_total',
      help: 'Recoveries by kind, reason (api, deadline, shutdown, restart, rollback) and outcome',
      labelNames: ['kind', 'reason', 'outcome'] as const,
      registers: [registry],
    }),
    applySeconds: new Histogram({
      name: 'faultline_apply_seconds',
      help: 'Time to apply one injection to the host',
      labelNames: ['kind'] as const,
      buckets: seconds,
      registers: [registry],
    }),
    recoverSeconds: new Histogram({
      name: 'faultline_recover_seconds',
      help: 'Time to recover one injection',
      labelNames: ['kind'] as const,
      buckets: seconds,
      registers: [registry],
    }),
    open: new Gauge({
      name: 'faultline_injections_open',
      help: 'Injections that are pending, applying, active or recovering',
      labelNames: ['kind'] as const,
      registers: [registry],
      collect() {
        this.reset()
        for (const [kind, n] of openByKind()) this.set({ kind }, n)
      },
    }),
  }
}
export type AgentMetrics = ReturnType<typeof createMetrics>
