// The import graph of the sources keeps its layers (README "Layout", docs/development.md):
//   protocol/  the wire contract: imports nothing of ours
//   common/    what agent, server and CLI share as processes: protocol/ only
//   agent/, server/  the two processes: protocol/, common/ and themselves, never each other
//   cli/       protocol/, common/ and itself; it starts the agent and the server only through
//              their process entries (agent/main.ts, server/main.ts)
//   web/       the dashboard, bundled for the browser: protocol/ (its types, roles) and itself
// and it has no cycle. Read from the files themselves, so a new import that breaks a rule
// fails here with the file and the line.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import t from 'tap'
import { repoRoot } from './helpers.js'

const layers = ['protocol', 'common', 'agent', 'server', 'cli', 'web'] as const
type Layer = (typeof layers)[number]

const allowed: Record<Layer, readonly Layer[]> = {
  protocol: ['protocol'],
  common: ['protocol', 'common'],
  agent: ['protocol', 'common', 'agent'],
  server: ['protocol', 'common', 'server'],
  cli: ['protocol', 'common', 'cli'],
  web: ['protocol', 'web'],
}
/** Process entries the CLI may start (dynamically imported by `faultline agent` / `faultline server`). */
const entries = new Set(['agent/main.ts', 'server/main.ts'])

function sources(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) out.push(...sources(path))
    else if ((name.endsWith('.ts') || name.endsWith('.tsx')) && !name.endsWith('.d.ts')) out.push(path)
  }
  return out
}

interface Edge {
  from: string
  to: string
  line: number
}

const importRe = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g

function edgesOf(file: string): Edge[] {
  const text = readFileSync(file, 'utf8')
  const edges: Edge[] = []
  for (const m of text.matchAll(importRe)) {
    const spec = m[1] ?? m[2]!
    if (!spec.startsWith('.')) continue
    // "./x.js" is x.ts, or x.tsx in web/
    const ts = resolve(dirname(file), spec.replace(/\.js$/, '.ts'))
    const target = spec.endsWith('.js') && !existsSync(ts) && existsSync(`${ts}x`) ? `${ts}x` : ts
    const line = text.slice(0, m.index).split('\n').length + (m[0].startsWith('\n') ? 1 : 0)
    edges.push({ from: relative(repoRoot, file), to: relative(repoRoot, target), line })
  }
  return edges
}

const files = layers.flatMap((l) => sources(join(repoRoot, l)))
const edges = files.flatMap(edgesOf)
const layerOf = (path: string) => path.split('/')[0] as Layer

t.test('the sources were found', async (t) => {
  t.ok(files.length > 100, `${files.length} source files`)
  t.ok(edges.length > 300, `${edges.length} imports between them`)
  for (const e of edges) t.ok(files.includes(join(repoRoot, e.to)), `${e.from}:${e.line} imports ${e.to}, which exists`)
})

t.test('no import runs against the layers', async (t) => {
  const wrong = edges.filter((e) => {
    const from = layerOf(e.from)
    const to = layerOf(e.to)
    if (!(layers as readonly string[]).includes(to)) return true
    if (allowed[from].includes(to)) return false
    return !(from === 'cli' && entries.has(e.to))
  })
  t.same(
    wrong.map((e) => `${e.from}:${e.line} -> ${e.to}`),
    [],
    'protocol imports nothing of ours; common only protocol; agent and server never each other; cli only their process entries',
  )
})

t.test('the import graph has no cycle', async (t) => {
  // Tarjan's strongly connected components: any component of more than one file is a cycle.
  const next = new Map<string, string[]>()
  for (const e of edges) next.set(e.from, [...(next.get(e.from) ?? []), e.to])
  let index = 0
  const indexOf = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const cycles: string[][] = []
  const visit = (v: string): void => {
    indexOf.set(v, index)
    low.set(v, index++)
    stack.push(v)
    onStack.add(v)
    for (const w of next.get(v) ?? []) {
      if (!indexOf.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v)!, low.get(w)!))
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, indexOf.get(w)!))
      }
    }
    if (low.get(v) === indexOf.get(v)) {
      const component: string[] = []
      let w: string
      do {
        w = stack.pop()!
        onStack.delete(w)
        component.push(w)
      } while (w !== v)
      if (component.length > 1 || (next.get(v) ?? []).includes(v)) cycles.push(component.sort())
    }
  }
  for (const f of files.map((f) => relative(repoRoot, f))) if (!indexOf.has(f)) visit(f)
  t.same(cycles, [], 'no file reaches itself through its imports')
})
