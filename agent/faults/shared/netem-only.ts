import { Type, type Static, type TObject } from 'typebox'
import type { FaultSpecDefinition } from '../../../protocol/faults/define.js'
import type { NetworkFilterSpec } from '../../../protocol/faults/fields.js'
import { PlanStepSchema } from '../../../protocol/plan.js'
import { netnsOf } from '../../net/netns.js'
import { protectedTcpPorts, resolvePeers } from './network.js'
import {
  NetemPlanFields,
  applyTc,
  gatherNetem,
  netemSteps,
  planNetem,
  recoverTc,
  rootClaim,
  tcHandleFor,
  type NetemArgs,
  type NetemFacts,
} from './netem.js'
import { defineFault } from '../types.js'

/** What every netem-only spec carries: a percent and the network filters. */
type NetemOnlySpec = { percent: number; correlation?: number } & NetworkFilterSpec

/**
 * Kinds that only netem can do (corrupt, duplicate, reorder): egress on one device, refused
 * with the probe's reason on kernels without sch_netem.
 */
export function netemOnlyKind<Kind extends string, Spec extends TObject>(
  spec: FaultSpecDefinition<Kind, Spec> & { example: unknown },
  netem: (spec: Static<Spec> & NetemOnlySpec) => NetemArgs,
) {
  const filters = (s: Static<Spec>) => s as Static<Spec> & NetemOnlySpec
  return defineFault(spec, {
    planSchema: Type.Object({ ...NetemPlanFields, steps: Type.Array(PlanStepSchema), claims: Type.Array(Type.String()) }),
    stateSchema: Type.Object({ netns: NetemPlanFields.netns, tcRecover: NetemPlanFields.tcRecover }),
    requires: ['tool:tc', 'qdisc:netem'],
    exclusive: false,

    async gather(s, target, ctx): Promise<NetemFacts> {
      const f = filters(s)
      const peers = await resolvePeers(f.peers)
      return gatherNetem(netnsOf(target, ctx.paths), f, peers, protectedTcpPorts(f, target, ctx.control))
    },

    plan(s, target, ctx) {
      const f = filters(s)
      const ns = netnsOf(target, ctx.paths)
      const facts = ctx.facts
      const tc = planNetem({
        ns,
        tc: facts.tc,
        device: facts.device,
        handle: tcHandleFor(ctx.injectionId),
        netem: netem(f),
        peers: facts.peers,
        ports: f.ports,
        localPorts: f.localPorts,
        protocol: f.protocol ?? 'all',
        protectedTcpPorts: facts.protectedTcpPorts,
      })
      return { netns: ns, device: facts.device, tcApply: tc.apply, tcRecover: tc.recover, claims: [rootClaim(ns, facts.device)], steps: netemSteps(tc, `${spec.kind} on ${facts.device}`) }
    },

    undoFromPlan: (plan) => ({ netns: plan.netns, tcRecover: plan.tcRecover }),

    async apply(plan) {
      await applyTc(plan.netns, plan.tcApply)
      return { netns: plan.netns, tcRecover: plan.tcRecover }
    },

    recover: (state) => recoverTc(state.netns, state.tcRecover),
  })
}
