import { Type } from 'typebox'
import { SizeOrPercentField } from '../units.js'
import { defineFaultSpec } from './define.js'
import { EngineField, stressKindTargets } from './fields.js'

export const stressMemorySpec = defineFaultSpec({
  kind: 'stress-memory',
  summary: "Hold a size (or a percentage of the target cgroup's memory limit) of memory in the target's memory cgroup, steady",
  targets: stressKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('stress-memory'),
      size: SizeOrPercentField(
        'How much memory to hold, e.g. "128MiB"; or a percentage of the memory limit that binds the target\'s cgroup (the smallest of its own, its ancestors\' and the host RAM), e.g. "50%"',
        ['256MiB', '50%'],
      ),
      engine: EngineField,
    },
    { additionalProperties: false, title: 'stress-memory' },
  ),
  example: { size: '256MiB' },
})
