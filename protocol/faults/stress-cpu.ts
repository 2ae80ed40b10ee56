import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'
import { EngineField, stressKindTargets } from './fields.js'

export const stressCpuSpec = defineFaultSpec({
  kind: 'stress-cpu',
  summary: "Load the target's CPU by a percentage per worker, charged to the target's cgroups",
  targets: stressKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('stress-cpu'),
      load: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: 'Load of each worker in percent of one CPU (default 100)' })),
      workers: Type.Optional(Type.Integer({ minimum: 1, maximum: 256, description: 'Number of workers (default 1): the total load is workers × load % of one CPU' })),
      engine: EngineField,
    },
    { additionalProperties: false, title: 'stress-cpu' },
  ),
  example: {},
})
