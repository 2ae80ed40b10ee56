// io-latency, io-error and io-corrupt on the host's own mount namespace, on the real kernel: a
// Python process reading or opening files in a directory the test made under /tmp, against a
// baseline measured in the same test; recovery leaves the directory exactly the real one (no
// mount of ours, files written through the mount on disk). Needs root, /dev/fuse and
// native/iofault built (libfuse3-dev).
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import type { Injection } from '../../../../protocol/injection.js'
import { testAgent } from '../../../helpers.js'
import { OPEN_RESULTS, READ_HEX, READ_TIMES, canRun, ioTmp, iofaultMounts, makeDir, median, python } from './io.js'

const skip = canRun()
t.setTimeout(300_000)

const post = (app: Awaited<ReturnType<typeof testAgent>>, fault: Record<string, unknown>, duration = '120s') =>
  app.inject({ method: 'POST', url: '/v1/injections', payload: { fault, target: { type: 'host' }, duration } })

t.test('io-latency 20ms on read: the median per-read time rises by 20 ± 3 ms; another directory is unaffected', { skip }, async (t) => {
  const tmp = ioTmp(t)
  const data = makeDir(tmp, 'data', { 'f.bin': Buffer.alloc(8192, 7) })
  const other = makeDir(tmp, 'other', { 'f.bin': Buffer.alloc(8192, 7) })
  const app = await testAgent(t)
  const baseline = median(await python<number[]>(READ_TIMES, [join(data, 'f.bin'), '200']))

  const res = await post(app, { kind: 'io-latency', path: data, latency: '20ms', operations: ['read'] })
  t.equal(res.statusCode, 201, res.statusCode === 201 ? 'created' : res.body)
  const inj = res.json<Injection>()
  t.same(iofaultMounts().filter((m) => m.mountPoint === data).map((m) => m.source), [`faultline-iofault-${inj.id}`], 'mounted over the directory, named by the injection')
  const faulted = median(await python<number[]>(READ_TIMES, [join(data, 'f.bin'), '200']))
  const unaffected = median(await python<number[]>(READ_TIMES, [join(other, 'f.bin'), '200']))
  t.comment(`median read: baseline ${baseline.toFixed(3)} ms, faulted ${faulted.toFixed(3)} ms, other dir ${unaffected.toFixed(3)} ms`)
  t.ok(Math.abs(faulted - baseline - 20) <= 3, `rise ${(faulted - baseline).toFixed(2)} ms is 20 ± 3 ms`)
  t.ok(unaffected < baseline + 1, 'the other directory reads as fast as before')

  const del = await app.inject({ method: 'DELETE', url: `/v1/injections/${inj.id}` })
  t.equal(del.json<Injection>().status, 'recovered')
  t.match(del.json<Injection>().notes.join('\n'), /counters: rule 0 \(delay 20ms read/, 'the counters are noted')
  t.same(iofaultMounts().filter((m) => m.mountPoint.startsWith(tmp)), [], 'no mount of ours is left')
  const after = median(await python<number[]>(READ_TIMES, [join(data, 'f.bin'), '200']))
  t.ok(after < baseline + 1, `after recovery: ${after.toFixed(3)} ms`)
})

t.test('io-error EIO at 50 % on open: 45-55 % of 1000 opens fail with EIO, the rest succeed', { skip }, async (t) => {
  const tmp = ioTmp(t)
  const data = makeDir(tmp, 'data', { 'f.txt': 'hello\n' })
  const app = await testAgent(t)
  const res = await post(app, { kind: 'io-error', path: data, errno: 'EIO', percent: 50, operations: ['open'] })
  t.equal(res.statusCode, 201, res.statusCode === 201 ? 'created' : res.body)
  const r = await python<{ ok: number; errors: Record<string, number> }>(OPEN_RESULTS, [join(data, 'f.txt'), '1000'])
  t.comment(`1000 opens: ${r.ok} succeeded, errors ${JSON.stringify(r.errors)}`)
  t.same(Object.keys(r.errors), ['EIO'], 'every failure is EIO')
  t.ok(r.errors.EIO! >= 450 && r.errors.EIO! <= 550, `${r.errors.EIO} of 1000 failed`)
  t.equal(r.ok + r.errors.EIO!, 1000)
  const del = await app.inject({ method: 'DELETE', url: `/v1/injections/${res.json<Injection>().id}` })
  t.equal(del.json<Injection>().status, 'recovered')
  const after = await python<{ ok: number; errors: Record<string, number> }>(OPEN_RESULTS, [join(data, 'f.txt'), '200'])
  t.equal(after.ok, 200, 'every open succeeds after recovery')
})

t.test('io-corrupt on reads: the data differs while active, identical after recovery; the file on disk is never changed', { skip }, async (t) => {
  const tmp = ioTmp(t)
  const content = Buffer.from('0123456789abcdef'.repeat(256))
  const data = makeDir(tmp, 'data', { 'f.bin': content })
  const app = await testAgent(t)
  const res = await post(app, { kind: 'io-corrupt', path: data, bytes: 4 })
  t.equal(res.statusCode, 201, res.statusCode === 201 ? 'created' : res.body)
  const seen = Buffer.from(await python<string>(READ_HEX, [join(data, 'f.bin')]), 'hex')
  t.equal(seen.length, content.length, 'same length')
  t.not(seen.toString('hex'), content.toString('hex'), 'the data read differs')
  const differing = [...seen].filter((b, i) => b !== content[i]).length
  t.ok(differing >= 1 && differing <= 4, `${differing} bytes differ (at most 4 per read)`)
  const del = await app.inject({ method: 'DELETE', url: `/v1/injections/${res.json<Injection>().id}` })
  t.equal(del.json<Injection>().status, 'recovered')
  const after = Buffer.from(await python<string>(READ_HEX, [join(data, 'f.bin')]), 'hex')
  t.equal(after.toString('hex'), content.toString('hex'), 'identical after recovery')
})

t.test('files written through the mount are on the real disk after recovery; a glob limits the fault', { skip }, async (t) => {
  const tmp = ioTmp(t)
  const data = makeDir(tmp, 'data', { 'a.db': 'a', 'b.log': 'b' })
  const app = await testAgent(t)
  const res = await post(app, { kind: 'io-error', path: data, errno: 'EACCES', glob: '*.db', operations: ['open'] })
  t.equal(res.statusCode, 201, res.statusCode === 201 ? 'created' : res.body)
  t.throws(() => readFileSync(join(data, 'a.db')), { code: 'EACCES' }, '*.db fails')
  t.equal(readFileSync(join(data, 'b.log'), 'utf8'), 'b', 'b.log does not match the glob')
  writeFileSync(join(data, 'new.txt'), 'written through the mount')
  const del = await app.inject({ method: 'DELETE', url: `/v1/injections/${res.json<Injection>().id}` })
  t.equal(del.json<Injection>().status, 'recovered')
  t.equal(readFileSync(join(data, 'new.txt'), 'utf8'), 'written through the mount')
  t.equal(readFileSync(join(data, 'a.db'), 'utf8'), 'a')
})

t.test('dryRun shows the mount, the rules and the exact helper argv, and mounts nothing', { skip }, async (t) => {
  const tmp = ioTmp(t)
  const data = makeDir(tmp, 'data')
  const app = await testAgent(t)
  const res = await app.inject({
    method: 'POST',
    url: '/v1/injections',
    payload: { fault: { kind: 'io-latency', path: data, latency: '5ms', jitter: '1ms', percent: 25 }, target: { type: 'host' }, duration: '30s', dryRun: true },
  })
  t.equal(res.statusCode, 200, res.statusCode === 200 ? 'planned' : res.body)
  const plan = res.json<Injection>().plan as unknown as { helperArgv: string[]; fsname: string; rules: { arg: string }[] }
  t.match(plan.helperArgv.join(' '), new RegExp(`faultline-iofault --mount ${data} --fsname faultline-iofault-\\S+ --deadline <deadline.*> --attr-timeout-ms 1000 --direct-io 1 --rule d:6:2500:5000:1000:\\*$`))
  t.same(iofaultMounts().filter((m) => m.mountPoint.startsWith(tmp)), [], 'nothing mounted')
})
