import { networkRejectSpec } from '../../../protocol/faults/network-reject.js'
import { Type } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
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

/**
 * Refuses connections instead of dropping them: the caller sees ECONNREFUSED (tcp-reset) or an
 * ICMP port-unreachable at once, rather than a timeout.
 */
export const networkReject = defineFault(networkRejectSpec, {
  planSchema: Type.Object({ ...TableFields, script: Type.String(), steps: Type.Array(PlanStepSchema) }),
  stateSchema: Type.Object(TableFields),
  requires: ['tool:nft', 'nft:tables', 'nft:reject'],
  exclusive: false,

  gather: (spec, target, ctx): Promise<NftFacts> => gatherNft(spec, target, ctx),

  plan(spec, target, ctx) {
    const ns = netnsOf(target, ctx.paths)
    const how = spec.with ?? 'tcp-reset'
    if (how === 'tcp-reset' && spec.protocol && spec.protocol !== 'tcp') {
      throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `with: tcp-reset rejects TCP only; use protocol tcp, or with: icmp-unreachable for ${spec.protocol}`)
    }
    const table = buildNftTable({
      table: ownTableName(ctx.injectionId),
      direction: spec.direction ?? 'both',
      match: {
        peers: ctx.facts.peers,
        ports: spec.ports,
        localPorts: spec.localPorts,
        protocol: how === 'tcp-reset' ? 'tcp' : (spec.protocol ?? 'all'),
        device: spec.device,
      },
      verdict: how === 'tcp-reset' ? 'reject with tcp reset' : 'reject with icmpx type port-unreachable',
      protectedTcpPorts: ctx.facts.protectedTcpPorts,
      comment: `faultline network-reject ${ctx.injectionId}`,
    })
    return { netns: ns, nft: ctx.facts.nft, table: table.name, script: table.script, steps: nftSteps(ns, ctx.facts.nft, table, `reject matching packets (${how})`) }
  },

  undoFromPlan: (plan) => ({ netns: plan.netns, nft: plan.nft, table: plan.table }),

  async apply(plan) {
    await createNftTable(plan.netns, plan.nft, { family: 'inet', name: plan.table, script: plan.script })
    return { netns: plan.netns, nft: plan.nft, table: plan.table }
  },

  recover: (state) => deleteNftTable(state.netns, state.nft, state.table),
})
