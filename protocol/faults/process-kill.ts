import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'

/** Signals that end or disturb a process. STOP/CONT belong to process-stop, which undoes itself. */
export const killSignals = ['KILL', 'TERM', 'INT', 'HUP', 'QUIT', 'ABRT', 'USR1', 'USR2', 'ALRM', 'SEGV', 'BUS', 'PIPE'] as const
export const SignalSchema = Type.Enum(killSignals, { description: 'Signal name without the SIG prefix (default KILL)' })

export const processKillSpec = defineFaultSpec({
  kind: 'process-kill',
  summary: "Send a signal (default KILL) to a process or a container's init; not recoverable",
  targets: ['process', 'container'],
  recoverable: false,
  specSchema: Type.Object({ kind: Type.Literal('process-kill'), signal: Type.Optional(SignalSchema) }, { additionalProperties: false, title: 'process-kill' }),
  example: {},
})
