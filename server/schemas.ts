import { Type } from 'typebox'
import { ErrorBodySchema } from '../protocol/errors.js'
import { recordStatuses, runStatuses } from '../protocol/experiment.js'
import { roles } from './roles.js'

/** Response schemas shared by the server's routes (request schemas sit with their route). */
export const errors = { '4xx': ErrorBodySchema, '5xx': ErrorBodySchema }

const ErrorInfo = Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()])

export const RunRecordSchema = Type.Object({
  agent: Type.String(),
  target: Type.String({ description: 'The concrete target, as the agent resolved it ("" before the agent answered)' }),
  injectionId: Type.String(),
  status: Type.Enum(recordStatuses),
  reason: Type.String({ description: 'deadline, abort, halt, guard, lease, apply, ...: why the record is in its status' }),
  error: ErrorInfo,
  updatedAt: Type.String({ format: 'date-time' }),
})

export const RunSchema = Type.Object(
  {
    id: Type.String(),
    experiment: Type.String(),
    status: Type.Enum(runStatuses),
    trigger: Type.String({ description: 'api or schedule' }),
    startedBy: Type.String(),
    startedAt: Type.String({ format: 'date-time' }),
    endedAt: Type.Optional(Type.String({ format: 'date-time' })),
    abortRequestedAt: Type.Optional(Type.String({ format: 'date-time' })),
    abortedBy: Type.Optional(Type.String()),
    selection: Type.Object({ matched: Type.Integer(), connected: Type.Integer(), chosen: Type.Integer(), mode: Type.String() }),
    duration: Type.String(),
    records: Type.Array(RunRecordSchema),
  },
  { title: 'Run' },
)

export const RunSummarySchema = Type.Object({
  id: Type.String(),
  experiment: Type.String(),
  status: Type.Enum(runStatuses),
  trigger: Type.String(),
  startedBy: Type.String(),
  startedAt: Type.String({ format: 'date-time' }),
  endedAt: Type.Optional(Type.String({ format: 'date-time' })),
})

export const RoleSchema = Type.Enum(roles)
