import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'
import { FileSpecFields, fileKindTargets } from './fields.js'

export const fileReplaceSpec = defineFaultSpec({
  kind: 'file-replace',
  summary: 'Replace a pattern in a file (literal or regex); recovery restores the original',
  targets: fileKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('file-replace'),
      ...FileSpecFields,
      pattern: Type.String({ minLength: 1, maxLength: 4096, description: 'What to replace: literal text (matched on the bytes), or a regular expression with regex: true' }),
      replacement: Type.String({ maxLength: 32768, description: 'What to put instead (may be empty). With regex: $1, $<name>, $& and $$ as in JavaScript' }),
      regex: Type.Optional(Type.Boolean({ description: 'pattern is a JavaScript regular expression (the file must be UTF-8)' })),
      ignoreCase: Type.Optional(Type.Boolean({ description: 'Match regardless of case (the file must be UTF-8)' })),
      limit: Type.Optional(Type.Integer({ minimum: 1, description: 'Replace at most this many matches, from the start (default: all)' })),
    },
    { additionalProperties: false, title: 'file-replace' },
  ),
  example: { path: '/etc/app/app.conf', pattern: 'listen 80', replacement: 'listen 81' },
})
