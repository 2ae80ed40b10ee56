import { networkPartitionSpec } from '../../../protocol/faults/network-partition.js'
import { Type } from 'typebox'
import { PlanStepSchema } from '../../../protocol/plan.js'
import { netnsOf } from '../../net/netns.js'
import {
  NetnsRefSchema,
  buildNftTable,
  createNftTable,
  deleteNftTable,
  gatherNft,
  nftSteps,
  ownTableName,
  type NftFacts,
} from '../shared/network.js'
import { defineFault } from '../types.js'

const TableFields = { netns: NetnsRefSchema, nft: Type.String(), table: Type.String() }

/** Drops the filtered traffic in an nft table the injection owns. */
export const networkPartition = defineFault(networkPartitionSpec, {
  planSchema: Type.Object({ ...TableFields, script: Type.String(), steps: Type.Array(PlanStepSchema) }),
  stateSchema: Type.Object(TableFields),
  requires: ['tool:nft', 'nft:tables'],
  exclusive: false,

  gather: (spec, target, ctx): Promise<NftFacts> => gatherNft(spec, target, ctx),

  plan(spec, target, ctx) {
    const ns = netnsOf(target, ctx.paths)
    const table = buildNftTable({
      table: ownTableName(ctx.injectionId),
      direction: spec.direction ?? 'both',
      match: { peers: ctx.facts.peers, ports: spec.ports, localPorts: spec.localPorts, protocol: spec.protocol ?? 'all', device: spec.device },
      verdict: 'drop',
      protectedTcpPorts: ctx.facts.protectedTcpPorts,
      comment: `faultline network-partition ${ctx.injectionId}`,
    })
    return { netns: ns, nft: ctx.facts.nft, table: table.name, script: table.script, steps: nftSteps(ns, ctx.facts.nft, table, 'drop matching packets') }
  },

  undoFromPlan: (plan) => ({ netns: plan.netns, nft: plan.nft, table: plan.table }),

  async apply(plan) {
    await createNftTable(plan.netns, plan.nft, { family: 'inet', name: plan.table, script: plan.script })
    return { netns: plan.netns, nft: plan.nft, table: plan.table }
  },

  recover: (state) => deleteNftTable(state.netns, state.nft, state.table),
})
