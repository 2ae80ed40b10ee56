// The `sh` examples of docs/server.md run as written against real agents and servers (see doc-runner.ts).
import t from 'tap'
import { testPages } from './doc-runner.js'

testPages(t, 'server')
