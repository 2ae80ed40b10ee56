// Bad io-* requests are refused with a 4xx and a code before anything is mounted: relative and
// non-normal paths, /, /proc, /sys, /dev, the agent's state dir and a directory holding it, a
// file instead of a directory, a missing directory, an unknown errno, percent 0 or > 100, and a
// jitter larger than the latency. Needs root, /dev/fuse and native/iofault built.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { testAgent, tmpDir } from '../../../helpers.js'
import { canRun, ioTmp, iofaultMounts, makeDir } from './io.js'

const skip = canRun()

t.test('bad input: 4xx with a code, nothing mounted', { skip }, async (t) => {
  const tmp = ioTmp(t)
  const data = makeDir(tmp, 'data')
  writeFileSync(join(tmp, 'file'), 'x')
  const stateDir = tmpDir(t)
  const app = await testAgent(t, { stateDir })
  const cases: [string, Record<string, unknown>, number, string][] = [
    ['relative path', { kind: 'io-error', path: 'data', errno: 'EIO' }, 400, 'FAULTLINE_ERR_VALIDATION'],
    ['non-normal path', { kind: 'io-error', path: `${data}/../data`, errno: 'EIO' }, 400, 'FAULTLINE_ERR_VALIDATION'],
    ['trailing slash', { kind: 'io-error', path: `${data}/`, errno: 'EIO' }, 400, 'FAULTLINE_ERR_VALIDATION'],
    ['/', { kind: 'io-error', path: '/', errno: 'EIO' }, 400, 'FAULTLINE_ERR_VALIDATION'],
    ['/proc', { kind: 'io-latency', path: '/proc', latency: '10ms' }, 422, 'FAULTLINE_ERR_PATH_FORBIDDEN'],
    ['/sys/fs', { kind: 'io-latency', path: '/sys/fs', latency: '10ms' }, 422, 'FAULTLINE_ERR_PATH_FORBIDDEN'],
    ['/dev', { kind: 'io-corrupt', path: '/dev' }, 422, 'FAULTLINE_ERR_PATH_FORBIDDEN'],
    ["the agent's state dir", { kind: 'io-error', path: stateDir, errno: 'EIO' }, 422, 'FAULTLINE_ERR_PATH_FORBIDDEN'],
    ['a directory holding the state dir', { kind: 'io-error', path: join(stateDir, '..'), errno: 'EIO' }, 422, 'FAULTLINE_ERR_PATH_FORBIDDEN'],
    ['a file', { kind: 'io-error', path: join(tmp, 'file'), errno: 'EIO' }, 422, 'FAULTLINE_ERR_PATH_NOT_FOUND'],
    ['a missing directory', { kind: 'io-error', path: join(tmp, 'missing'), errno: 'EIO' }, 422, 'FAULTLINE_ERR_PATH_NOT_FOUND'],
    ['unknown errno', { kind: 'io-error', path: data, errno: 'EWHATEVER' }, 400, 'FAULTLINE_ERR_VALIDATION'],
    ['percent 0', { kind: 'io-error', path: data, errno: 'EIO', percent: 0 }, 400, 'FAULTLINE_ERR_VALIDATION'],
    ['percent 101', { kind: 'io-error', path: data, errno: 'EIO', percent: 101 }, 400, 'FAULTLINE_ERR_VALIDATION'],
    ['unknown operation', { kind: 'io-latency', path: data, latency: '1ms', operations: ['frobnicate'] }, 400, 'FAULTLINE_ERR_VALIDATION'],
    ['jitter > latency', { kind: 'io-latency', path: data, latency: '1ms', jitter: '5ms' }, 400, 'FAULTLINE_ERR_VALIDATION'],
    ['corrupt bytes 0', { kind: 'io-corrupt', path: data, bytes: 0 }, 400, 'FAULTLINE_ERR_VALIDATION'],
  ]
  for (const [what, fault, status, code] of cases) {
    const res = await app.inject({ method: 'POST', url: '/v1/injections', payload: { fault, target: { type: 'host' }, duration: '30s' } })
    t.equal(res.statusCode, status, `${what}: ${res.statusCode} ${res.json<{ message?: string }>().message}`)
    t.equal(res.json<{ code: string }>().code, code, `${what}: ${code}`)
  }
  // (only these paths: other tests running alongside may have mounts of their own)
  const paths = new Set(cases.map(([, fault]) => fault.path))
  t.same(iofaultMounts().filter((m) => paths.has(m.mountPoint)), [], 'nothing is mounted at any of these paths')
})
