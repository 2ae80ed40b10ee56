// The environment our nft commands run with (agent/faults/shared/network.ts nftEnv): glibc's
// malloc tunables that cut nft 1.0.x's per-table cache cost, unless the operator set their own.
// Runs a stand-in for nft in the agent's own namespace; needs no root.
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { createNftTable, deleteNftTable, nftEnv } from '../../../../agent/faults/shared/network.js'
import { tmpDir } from '../../../helpers.js'

t.test('nftEnv adds the malloc tunables, and keeps an operator GLIBC_TUNABLES as it is', async (t) => {
  const env = nftEnv({ PATH: '/usr/bin', LANG: 'C' })
  t.equal(env.PATH, '/usr/bin', 'the rest of the environment is kept')
  t.equal(env.LANG, 'C')
  t.match(env.GLIBC_TUNABLES, /^glibc\.malloc\.hugetlb=1:glibc\.malloc\.mmap_threshold=\d+:glibc\.malloc\.top_pad=\d+$/)
  const operator = { PATH: '/usr/bin', GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }
  t.same(nftEnv(operator), operator, "an operator's tunables win")
  t.same(nftEnv({ PATH: '/usr/bin', GLIBC_TUNABLES: '' }).GLIBC_TUNABLES, '', 'also when set empty')
})

t.test('create and delete run nft with that environment and the exact script', async (t) => {
  const dir = tmpDir(t)
  const log = join(dir, 'calls')
  const fakeNft = join(dir, 'nft')
  // Records its argv, its GLIBC_TUNABLES and its stdin, one block per call.
  writeFileSync(fakeNft, `#!/bin/sh\n{ echo "argv: $*"; echo "tunables: $GLIBC_TUNABLES"; cat; echo "--"; } >> '${log}'\n`)
  chmodSync(fakeNft, 0o755)
  const ns = { kind: 'host' as const, inode: 0 }
  const script = 'create table inet faultline_x_00000000\n'
  await createNftTable(ns, fakeNft, { family: 'inet', name: 'faultline_x_00000000', script })
  t.same(await deleteNftTable(ns, fakeNft, 'faultline_x_00000000'), {})
  const tunables = process.env.GLIBC_TUNABLES ?? nftEnv({}).GLIBC_TUNABLES
  t.equal(
    readFileSync(log, 'utf8'),
    [
      'argv: -f -',
      `tunables: ${tunables}`,
      script.trimEnd(),
      '--',
      'argv: delete table inet faultline_x_00000000',
      `tunables: ${tunables}`,
      '--',
      '',
    ].join('\n'),
  )
})
