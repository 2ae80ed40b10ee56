import { Value } from 'typebox/value'
import { CapabilitiesSchema, type Capabilities } from '../protocol/capabilities.js'
import { formatDuration, parseDuration } from '../protocol/duration.js'
import { FaultlineError } from '../protocol/errors.js'
import type { Experiment } from '../protocol/experiment.js'
import { faultSpecNamed } from '../protocol/faults/index.js'
import { compileCmdlinePattern, compileReplacePattern } from '../protocol/patterns.js'
import { matchesHosts } from './runs.js'
import { checkSchedule } from './scheduler.js'
import type { AgentRow } from './store.js'

/**
 * An experiment is checked when it is applied for everything that can be known then, so that it
 * does not fail at a cron tick with nobody watching: what the schema cannot say (durations that
 * parse, guard intervals, a usable cron expression, the kind acting on the target type, regular
 * expressions that are safe and match something), and what the agents it selects reported in
 * their hello (their longest duration, their host policy's, the kind being available there).
 *
 * Throws for what makes every run fail (or fail on some selected host, for durations); returns
 * warnings for what makes runs fail on some hosts only.
 */
export function checkExperiment(spec: Experiment, agents: AgentRow[]): string[] {
  const durationMs = parseDuration(spec.duration)
  for (const guard of spec.guards ?? []) {
    if (parseDuration(guard.every) < 100) throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `guard every ${guard.every} is too often; at least 100ms`)
  }
  if (spec.schedule !== undefined) checkSchedule(spec.schedule)

  const kind = faultSpecNamed(spec.fault.kind)!
  if (!(kind.targets as readonly string[]).includes(spec.target.type)) {
    throw new FaultlineError(
      'FAULTLINE_ERR_TARGET_UNSUPPORTED',
      `${kind.kind} acts on ${kind.targets.join(', ')} targets, not on a ${spec.target.type} target`,
      { kind: kind.kind, targets: kind.targets },
    )
  }
  if (spec.target.type === 'process' && 'cmdline' in spec.target) compileCmdlinePattern(spec.target.cmdline)
  if (spec.fault.kind === 'file-replace') compileReplacePattern(spec.fault)

  const selected = agents.filter((a) => matchesHosts(spec.hosts, a)).flatMap((a) => {
    const caps = Value.Check(CapabilitiesSchema, a.capabilities) ? (a.capabilities as Capabilities) : undefined
    return caps ? [{ agent: a.id, caps }] : []
  })

  const tooLong = selected.flatMap(({ agent, caps }) => {
    const limits = [caps.limits?.maxDuration, caps.policy?.rules.maxDuration].filter((d): d is string => d !== undefined).map(parseDuration)
    const max = limits.length > 0 ? Math.min(...limits) : undefined
    return max !== undefined && durationMs > max ? [`${agent} (at most ${formatDuration(max)})`] : []
  })
  if (tooLong.length > 0) {
    throw new FaultlineError(
      'FAULTLINE_ERR_BAD_DURATION',
      `duration ${spec.duration} is longer than ${tooLong.length === 1 ? 'a selected agent' : `${tooLong.length} selected agents`} accept${tooLong.length === 1 ? 's' : ''}: ${tooLong.join(', ')}; shorten it, or raise their --max-duration (and their policy's maxDuration)`,
      { agents: tooLong },
    )
  }

  const unavailable = selected.flatMap(({ agent, caps }) => {
    const k = caps.kinds[kind.kind]
    return k && !k.available ? [`${agent}: ${k.reason ?? 'not available'}`] : []
  })
  if (selected.length > 0 && unavailable.length === selected.length) {
    throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `${kind.kind} is not available on any agent this experiment selects: ${unavailable.join('; ')}`, { agents: unavailable })
  }
  return unavailable.map((u) => `${kind.kind} is not available on ${u}; runs will fail there`)
}
