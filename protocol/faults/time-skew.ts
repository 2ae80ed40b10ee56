import { Type } from 'typebox'
import { DURATION_PATTERN } from '../duration.js'
import { defineFaultSpec } from './define.js'

/** "-15m", "+2h", "30s" (no sign: forward): a sign, then a duration (protocol/duration.ts). */
export const OFFSET_PATTERN = `^[+-]?${DURATION_PATTERN.slice(1)}`

export const clockNames = ['realtime', 'monotonic', 'boottime'] as const
export type ClockName = (typeof clockNames)[number]
export const ClockField = Type.Enum(clockNames)

/** How often, with children: true, the agent looks for processes started under the target. */
export const RESCAN_INTERVAL_MS = 200

export const timeSkewSpec = defineFaultSpec({
  kind: 'time-skew',
  summary: "Skew a process's or a container's clock by an offset (vDSO patch through ptrace); the host clock is untouched",
  targets: ['process', 'container'],
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('time-skew'),
      offset: Type.String({
        pattern: OFFSET_PATTERN,
        maxLength: 33,
        description: 'Signed offset added to the clocks: "-15m", "+2h", "30s" (no sign: forward); at most 50 years',
        examples: ['-15m', '+2h', '30s'],
      }),
      clocks: Type.Optional(
        Type.Array(ClockField, {
          minItems: 1,
          maxItems: 3,
          uniqueItems: true,
          description: 'Clocks to skew. Default ["realtime"] (wall-clock time: clock_gettime(CLOCK_REALTIME), gettimeofday, time)',
        }),
      ),
      children: Type.Optional(
        Type.Boolean({
          description: `Default false. true: also every process under the target — its descendants now and those started later (looked for every ${RESCAN_INTERVAL_MS} ms while active); for a container, processes that join it later (docker exec)`,
        }),
      ),
    },
    { additionalProperties: false, title: 'time-skew' },
  ),
  example: { offset: '-15m' },
})
