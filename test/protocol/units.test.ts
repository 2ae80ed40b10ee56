// The one size grammar (protocol/units.ts) every kind's sizes use: IEC units are 1024-based,
// SI units 1000-based, bare K/M/G/T 1024-based, never bits; the same in every kind's schema.
import t from 'tap'
import type { TSchema } from 'typebox'
import { Value } from 'typebox/value'
import { diskFillSpec } from '../../protocol/faults/disk-fill.js'
import { networkBandwidthSpec } from '../../protocol/faults/network-bandwidth.js'
import { stressIoSpec } from '../../protocol/faults/stress-io.js'
import { stressMemorySpec } from '../../protocol/faults/stress-memory.js'
import { SIZE_OR_PERCENT_PATTERN, SIZE_PATTERN, formatBytes, parseSize, parseSizeOrPercent } from '../../protocol/units.js'

t.test('units as users expect them', async (t) => {
  const cases: [string, number][] = [
    ['4096', 4096],
    ['512B', 512],
    ['1KiB', 1024],
    ['1K', 1024],
    ['1kB', 1000],
    ['1KB', 1000],
    ['1kb', 1000],
    ['128MiB', 128 * 2 ** 20],
    ['128M', 128 * 2 ** 20],
    ['128MB', 128e6],
    ['1.5 GiB', 1.5 * 2 ** 30],
    ['2GB', 2e9],
    ['1TiB', 2 ** 40],
    ['1TB', 1e12],
    ['1PiB', 2 ** 50],
  ]
  for (const [text, bytes] of cases) {
    t.equal(parseSize(text), bytes, text)
    t.ok(new RegExp(SIZE_PATTERN).test(text), `${text} matches the schema pattern`)
  }
})

t.test('bits, garbage and overflow are refused with the grammar in the message', async (t) => {
  for (const text of ['1Mbit', '1 Gbit', '10mbps', 'MiB', '-1MiB', '1 MiBs', '1e6', '']) {
    t.throws(() => parseSize(text, 'burst'), { code: 'FAULTLINE_ERR_VALIDATION', message: /burst ".*" is not a size/ }, text)
    t.notOk(new RegExp(SIZE_PATTERN).test(text), `${JSON.stringify(text)} does not match the schema pattern`)
  }
  t.throws(() => parseSize('8Mbit'), { message: /sizes are bytes/ })
  t.throws(() => parseSize('99999999999999PiB'), { message: /too large/ })
})

t.test('percentages', async (t) => {
  t.equal(parseSizeOrPercent('1%', 1000), 10)
  t.equal(parseSizeOrPercent('0.5%', 1001), 6, 'rounded up')
  t.equal(parseSizeOrPercent('64MiB', 1), 64 * 2 ** 20)
  t.throws(() => parseSizeOrPercent('101%', 1000), { message: /more than 100 %/ })
  t.ok(new RegExp(SIZE_OR_PERCENT_PATTERN).test('50%'))
  t.ok(new RegExp(SIZE_OR_PERCENT_PATTERN).test('1.5GiB'))
  t.notOk(new RegExp(SIZE_OR_PERCENT_PATTERN).test('50%%'))
})

t.test('formatting is always 1024-based', async (t) => {
  t.equal(formatBytes(0), '0 B')
  t.equal(formatBytes(1000), '1000 B')
  t.equal(formatBytes(1536), '1.5 KiB')
  t.equal(formatBytes(64 * 2 ** 20), '64 MiB')
  t.equal(formatBytes(2 ** 30), '1 GiB')
})

t.test('every size field of every kind takes the same grammar', async (t) => {
  const accepts = (schema: TSchema, body: object) => Value.Check(schema, body)
  for (const size of ['100MB', '100MiB', '1.5G', '4096']) {
    t.ok(accepts(diskFillSpec.specSchema, { kind: 'disk-fill', path: '/x', size }), `disk-fill size ${size}`)
    t.ok(accepts(stressMemorySpec.specSchema, { kind: 'stress-memory', size }), `stress-memory size ${size}`)
    t.ok(accepts(stressIoSpec.specSchema, { kind: 'stress-io', bytes: size }), `stress-io bytes ${size}`)
    t.ok(accepts(networkBandwidthSpec.specSchema, { kind: 'network-bandwidth', rate: '1mbit', burst: size, limit: size }), `network-bandwidth burst/limit ${size}`)
  }
})
