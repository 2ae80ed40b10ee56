import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'
import { FileSpecFields, fileKindTargets } from './fields.js'

export const fileDeleteSpec = defineFaultSpec({
  kind: 'file-delete',
  summary: 'Remove a file (moved aside into the backup dir); recovery puts it back byte-identical',
  targets: fileKindTargets,
  recoverable: true,
  specSchema: Type.Object({ kind: Type.Literal('file-delete'), ...FileSpecFields }, { additionalProperties: false, title: 'file-delete' }),
  example: { path: '/etc/app/app.conf' },
})
