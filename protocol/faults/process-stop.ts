import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'

export const processStopSpec = defineFaultSpec({
  kind: 'process-stop',
  summary: 'Stop a process (SIGSTOP) or freeze a container (cgroup freezer); recovery resumes it',
  targets: ['process', 'container'],
  recoverable: true,
  specSchema: Type.Object({ kind: Type.Literal('process-stop') }, { additionalProperties: false, title: 'process-stop' }),
  example: {},
})
