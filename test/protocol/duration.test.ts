import t from 'tap'
import { formatDuration, parseDuration } from '../../protocol/duration.js'

t.test('parses whole numbers with units, largest first', async (t) => {
  t.equal(parseDuration('500ms'), 500)
  t.equal(parseDuration('30s'), 30_000)
  t.equal(parseDuration('5m'), 300_000)
  t.equal(parseDuration('2h'), 7_200_000)
  t.equal(parseDuration('1h30m'), 5_400_000)
  t.equal(parseDuration('1m30s250ms'), 90_250)
})

t.test('refuses anything else with a message that shows the grammar', async (t) => {
  for (const bad of ['', '30', '5 s', '1.5s', '-5s', '1y', '1h1h', '1s1m', 'ms', 'PT30S', '30s;reboot', 'x'.repeat(40)]) {
    t.throws(() => parseDuration(bad), { code: 'FAULTLINE_ERR_BAD_DURATION', message: /h, m, s, ms|largest first|too large/ }, JSON.stringify(bad))
  }
})

t.test('formats back into the same grammar', async (t) => {
  t.equal(formatDuration(5_400_000), '1h30m')
  t.equal(formatDuration(90_250), '1m30s250ms')
  t.equal(formatDuration(0), '0s')
  for (const text of ['1h', '1h30m', '45s', '2m5s', '999ms']) t.equal(formatDuration(parseDuration(text)), text)
})
