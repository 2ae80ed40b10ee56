import { Type, type TLiteral, type TObject, type TProperties } from 'typebox'
import { PlanStepSchema } from '../../../protocol/plan.js'
import { netnsOf } from '../../net/netns.js'
import { NetworkFilterFields, protectedTcpPorts, resolvePeers, type NetworkFilterSpec } from './network.js'
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

/**
 * Kinds that only netem can do (corrupt, duplicate, reorder): egress on one device, refused
 * with the probe's reason on kernels without sch_netem.
 */
export function netemOnlyKind<Kind extends string, Extra extends TProperties>(def: {
  kind: Kind
  summary: string
  extra: Extra
  netem: (spec: { percent: number; correlation?: number } & Record<string, unknown>) => NetemArgs
}) {
  const properties = { kind: Type.Literal(def.kind), ...def.extra, ...NetworkFilterFields }
  const specSchema = Type.Object(properties, {
    additionalProperties: false,
    title: def.kind,
    description: 'netem acts on egress (packets leaving the device)',
  }) as unknown as TObject<{ kind: TLiteral<Kind> } & Extra & typeof NetworkFilterFields>
  return defineFault({
    kind: def.kind,
    summary: def.summary,
    specSchema,
    planSchema: Type.Object({ ...NetemPlanFields, steps: Type.Array(PlanStepSchema), claims: Type.Array(Type.String()) }),
    stateSchema: Type.Object({ netns: NetemPlanFields.netns, tcRecover: NetemPlanFields.tcRecover }),
    recoverable: true,
    targets: ['host', 'netns', 'container'],
    requires: ['tool:tc', 'qdisc:netem'],
    exclusive: false,

    async gather(spec, target, ctx): Promise<NetemFacts> {
      const filters = spec as NetworkFilterSpec
      const peers = await resolvePeers(filters.peers)
      return gatherNetem(netnsOf(target), filters, peers, protectedTcpPorts(filters, target, ctx.control))
    },

    plan(spec, target, ctx) {
      const s = spec as unknown as { percent: number; ports?: number[]; localPorts?: number[]; protocol?: 'tcp' | 'udp' | 'icmp' | 'all' } & Record<string, unknown>
      const ns = netnsOf(target)
      const f = ctx.facts
      const tc = planNetem({
        ns,
        tc: f.tc,
        device: f.device,
        handle: tcHandleFor(ctx.injectionId),
        netem: def.netem(s),
        peers: f.peers,
        ports: s.ports,
        localPorts: s.localPorts,
        protocol: s.protocol ?? 'all',
        protectedTcpPorts: f.protectedTcpPorts,
      })
      return { netns: ns, device: f.device, tcApply: tc.apply, tcRecover: tc.recover, claims: [rootClaim(ns, f.device)], steps: netemSteps(tc, `${def.kind} on ${f.device}`) }
    },

    undoFromPlan: (plan) => ({ netns: plan.netns, tcRecover: plan.tcRecover }),

    async apply(plan) {
      await applyTc(plan.netns, plan.tcApply)
      return { netns: plan.netns, tcRecover: plan.tcRecover }
    },

    recover: (state) => recoverTc(state.netns, state.tcRecover),
  })
}
