import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'
import { FileSpecFields, fileKindTargets } from './fields.js'

export const fileChmodSpec = defineFaultSpec({
  kind: 'file-chmod',
  summary: "Change a file's permission bits (e.g. 000); recovery restores the original mode",
  targets: fileKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('file-chmod'),
      ...FileSpecFields,
      mode: Type.String({ pattern: '^[0-7]{3,4}$', description: 'New permission bits in octal: 000, 0444, 1777 (set-uid and set-gid are refused)' }),
    },
    { additionalProperties: false, title: 'file-chmod' },
  ),
  example: { path: '/etc/app/app.conf', mode: '000' },
})
