// The `sh` examples of docs/faults.md and docs/containers.md run as written against real agents and servers (see doc-runner.ts).
import t from 'tap'
import { testPages } from './doc-runner.js'

testPages(t, 'faults')
