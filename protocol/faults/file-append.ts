import { Type } from 'typebox'
import { defineFaultSpec } from './define.js'
import { FileSpecFields, fileKindTargets } from './fields.js'

export const fileAppendSpec = defineFaultSpec({
  kind: 'file-append',
  summary: 'Append text or bytes to a file; recovery cuts exactly them out (or restores the backup)',
  targets: fileKindTargets,
  recoverable: true,
  specSchema: Type.Object(
    {
      kind: Type.Literal('file-append'),
      ...FileSpecFields,
      text: Type.Optional(Type.String({ minLength: 1, maxLength: 32768, description: 'Text to append (UTF-8), exactly as given: no escapes are interpreted, so end it with a real newline if you want one (in bash: $\'line\\n\'), or give the bytes with base64' })),
      base64: Type.Optional(Type.String({ minLength: 1, maxLength: 43692, pattern: '^[A-Za-z0-9+/]+={0,2}$', description: 'Bytes to append, base64 (at most 32 KiB)' })),
    },
    { additionalProperties: false, title: 'file-append' },
  ),
  example: { path: '/etc/app/app.conf', text: 'garbage' },
})
