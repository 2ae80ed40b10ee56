import { networkLossSpec } from '../../../protocol/faults/network-loss.js'
import { Type } from 'typebox'
import { FaultlineError } from '../../../protocol/errors.js'
import { PlanStepSchema } from '../../../protocol/plan.js'
import { netnsOf, type NetnsRef } from '../../net/netns.js'
import {
  applyTc,
  gatherNetem,
  netemMissing,
  netemSteps,
  planNetem,
  recoverTc,
  rootClaim,
  tcHandleFor,
  type NetemFacts,
} from '../shared/netem.js'
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

/** What recovery needs: the table to delete, or the root qdisc commands to run. */
function undoState(plan: { mechanism: 'nft' | 'netem'; netns: NetnsRef; nft?: string; table?: string; tcRecover?: string[][] }) {
  return plan.mechanism === 'netem'
    ? { mechanism: plan.mechanism, netns: plan.netns, tcRecover: plan.tcRecover ?? [] }
    : { mechanism: plan.mechanism, netns: plan.netns, nft: plan.nft ?? 'nft', table: plan.table ?? '' }
}

type LossFacts = { mechanism: 'nft'; nft: NftFacts } | { mechanism: 'netem'; netem: NetemFacts }

const MechanismFields = {
  mechanism: Type.Enum(['nft', 'netem']),
  netns: NetnsRefSchema,
  nft: Type.Optional(Type.String()),
  table: Type.Optional(Type.String()),
  tcRecover: Type.Optional(Type.Array(Type.Array(Type.String()))),
}

/**
 * Drops a given share of the matching packets. With sch_netem (egress): a netem qdisc, which
 * also honours `correlation`. Without it, or for ingress: nft `numgen random mod 10000 < N drop`
 * in a table the injection owns — exact to 0.01 %, uncorrelated.
 */
export const networkLoss = defineFault(networkLossSpec, {
  planSchema: Type.Object({
    ...MechanismFields,
    script: Type.Optional(Type.String()),
    tcApply: Type.Optional(Type.Array(Type.Array(Type.String()))),
    steps: Type.Array(PlanStepSchema),
    claims: Type.Optional(Type.Array(Type.String())),
  }),
  stateSchema: Type.Object(MechanismFields),
  requires: [],
  unavailableReason(features) {
    if (features['tool:nft']?.available && features['nft:numgen']?.available) return undefined
    if (features['tool:tc']?.available && features['qdisc:netem']?.available) return undefined
    return `needs nft with numgen (${features['nft:numgen']?.detail}) or tc with netem (${features['qdisc:netem']?.detail})`
  },
  exclusive: false,

  async gather(spec, target, ctx): Promise<LossFacts> {
    const direction = spec.direction ?? 'egress'
    const netem = !netemMissing(ctx.features) && direction === 'egress'
    if (spec.correlation && !netem) {
      const why = netemMissing(ctx.features) ?? 'netem shapes egress only'
      throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `correlation needs netem on egress (${why}); drop correlation to use nft numgen`)
    }
    const nft = await gatherNft(spec, target, ctx)
    if (!netem) return { mechanism: 'nft', nft }
    return { mechanism: 'netem', netem: await gatherNetem(netnsOf(target, ctx.paths), spec, nft.peers, nft.protectedTcpPorts) }
  },

  plan(spec, target, ctx) {
    const ns = netnsOf(target, ctx.paths)
    if (ctx.facts.mechanism === 'netem') {
      const f = ctx.facts.netem
      const tc = planNetem({
        ns,
        tc: f.tc,
        device: f.device,
        handle: tcHandleFor(ctx.injectionId),
        netem: { loss: { percent: spec.percent, ...(spec.correlation ? { correlation: spec.correlation } : {}) } },
        peers: f.peers,
        ports: spec.ports,
        localPorts: spec.localPorts,
        protocol: spec.protocol ?? 'all',
        protectedTcpPorts: f.protectedTcpPorts,
      })
      return {
        mechanism: 'netem' as const,
        netns: ns,
        tcApply: tc.apply,
        tcRecover: tc.recover,
        claims: [rootClaim(ns, f.device)],
        steps: netemSteps(tc, `netem loss ${spec.percent}% on ${f.device}`),
      }
    }
    const f = ctx.facts.nft
    const table = buildNftTable({
      table: ownTableName(ctx.injectionId),
      direction: spec.direction ?? 'egress',
      match: { peers: f.peers, ports: spec.ports, localPorts: spec.localPorts, protocol: spec.protocol ?? 'all', device: spec.device },
      verdict: `numgen random mod 10000 < ${Math.round(spec.percent * 100)} drop`,
      protectedTcpPorts: f.protectedTcpPorts,
      comment: `faultline network-loss ${ctx.injectionId}`,
    })
    return {
      mechanism: 'nft' as const,
      netns: ns,
      nft: f.nft,
      table: table.name,
      script: table.script,
      steps: nftSteps(ns, f.nft, table, `drop ${spec.percent}% of matching packets (nft numgen)`),
    }
  },

  undoFromPlan: undoState,

  async apply(plan) {
    if (plan.mechanism === 'netem') await applyTc(plan.netns, plan.tcApply ?? [])
    else await createNftTable(plan.netns, plan.nft!, { family: 'inet', name: plan.table!, script: plan.script! })
    return undoState(plan)
  },

  recover: (state) =>
    state.mechanism === 'netem' ? recoverTc(state.netns, state.tcRecover ?? []) : deleteNftTable(state.netns, state.nft!, state.table!),
})
