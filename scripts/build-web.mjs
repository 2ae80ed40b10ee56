// Builds the dashboard (web/) into dist/web/: index.html, hashed assets in dist/web/assets/
// (JS as ES modules, split so the YAML editor is a chunk loaded when first opened, one CSS file)
// and a .gz copy of each, which the server sends to browsers that accept gzip. Nothing is
// fetched at run time from anywhere but the server (no CDN, no web fonts).
//   node scripts/build-web.mjs [--out DIR]     (npm run build runs it)
import { build } from 'esbuild'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { basename, dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const outArg = process.argv.indexOf('--out')
const out = outArg > 0 ? process.argv[outArg + 1] : join(root, 'dist', 'web')
const assets = join(out, 'assets')

rmSync(out, { recursive: true, force: true })
mkdirSync(assets, { recursive: true })

const result = await build({
  absWorkingDir: root,
  entryPoints: ['web/main.tsx'],
  tsconfig: 'web/tsconfig.json',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022', 'chrome109', 'firefox115', 'safari16'],
  outdir: assets,
  entryNames: '[name]-[hash]',
  chunkNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  minify: true,
  legalComments: 'none',
  metafile: true,
  jsx: 'automatic',
  jsxImportSource: 'preact',
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
})

// index.html: the template with the entry's script and stylesheet (external files only: the
// server's Content-Security-Policy allows no inline script or style).
const outputs = result.metafile.outputs
const entry = Object.entries(outputs).find(([, o]) => o.entryPoint === 'web/main.tsx')
if (!entry) throw new Error('build-web: esbuild made no entry for web/main.tsx')
const [entryJs, entryMeta] = entry
const url = (file) => `/assets/${basename(file)}`
const css = entryMeta.cssBundle
const tags = [
  css ? `<link rel="stylesheet" href="${url(css)}" />` : '',
  `<script type="module" src="${url(entryJs)}"></script>`,
  // The entry's static imports, fetched in parallel rather than one after the other.
  ...entryMeta.imports.filter((i) => i.kind === 'import-statement').map((i) => `<link rel="modulepreload" href="${url(i.path)}" />`),
].filter(Boolean)
const template = readFileSync(join(root, 'web', 'index.html'), 'utf8')
writeFileSync(join(out, 'index.html'), template.replace('<!--assets-->', tags.join('\n    ')))

// Precompressed copies, and the weights: what the first page loads (the entry, its static
// imports, the CSS) and what opening the editor adds.
const gz = (file) => {
  const data = readFileSync(file)
  const zipped = gzipSync(data, { level: 9 })
  writeFileSync(`${file}.gz`, zipped)
  return zipped.length
}
const sizes = new Map()
for (const file of [...Object.keys(outputs).filter((f) => !f.endsWith('.map')), relative(root, join(out, 'index.html'))]) sizes.set(file, gz(join(root, file)))
const staticClosure = (file, seen = new Set()) => {
  if (seen.has(file)) return seen
  seen.add(file)
  for (const i of outputs[file]?.imports ?? []) if (i.kind === 'import-statement') staticClosure(i.path, seen)
  return seen
}
const first = [...staticClosure(entryJs), ...(css ? [css] : [])]
const lazy = Object.keys(outputs).filter((f) => f.endsWith('.js') && !first.includes(f))
const kb = (files) => (files.reduce((n, f) => n + (sizes.get(f) ?? 0), 0) / 1024).toFixed(1)
const report = {
  firstPageGzipKiB: Number(kb(first)),
  editorChunkGzipKiB: Number(kb(lazy)),
  files: Object.fromEntries([...sizes].map(([f, n]) => [relative(relative(root, out), f), { bytes: outputs[f]?.bytes, gzip: n }])),
}
writeFileSync(join(out, 'build.json'), JSON.stringify(report, null, 2) + '\n')
console.log(`dashboard: ${relative(root, out)}: first page ${kb(first)} KiB (JS+CSS, gzip), editor ${kb(lazy)} KiB more`)
