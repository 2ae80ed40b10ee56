import { Type } from 'typebox'
import type { FeatureMap, FeatureName } from '../../../protocol/capabilities.js'
import { FaultlineError } from '../../../protocol/errors.js'
import { networkBandwidthSpec } from '../../../protocol/faults/network-bandwidth.js'
import { PlanStepSchema, type PlanStep } from '../../../protocol/plan.js'
import { describeNetns, inNetns, netnsOf } from '../../net/netns.js'
import { NetnsRefSchema } from '../shared/network.js'
import { defineFault } from '../types.js'
import { applyOps, gatherBandwidth, recoverOwned, type BandwidthFacts } from './host.js'
import { buildOps, describeResource, ifbName, isFiltered, OpSchema, removeArgv, ResourceSchema, u32Filters, type U32Filter } from './tc.js'
import { formatRate, shapingFor } from './units.js'

// Bandwidth slows a device down but cuts no link, so it has no control-channel exemption (issue
// 3 scopes that to partition, loss, delay and reject): SSH and the agent's link share the shaped
// rate. An exemption would need htb on every egress (tbf is classless) and a pass filter ahead
// of the ingress redirect; to leave traffic unshaped today, narrow the fault with peers/ports.
// (The spec, protocol/faults/network-bandwidth.ts, has no protectControlChannel field.)

const Tools = { netns: NetnsRefSchema, tc: Type.String(), ip: Type.String() }

const egressNeeds = (filtered: boolean): FeatureName[] => (filtered ? ['qdisc:htb', 'tc-filter:u32'] : [])
const ingressNeeds: FeatureName[] = ['qdisc:ingress', 'tc-filter:u32', 'tc-action:mirred', 'link:ifb']

function requireFeatures(features: FeatureMap, needs: FeatureName[], what: string): void {
  const missing = needs.filter((f) => !features[f]?.available)
  if (missing.length === 0) return
  throw new FaultlineError(
    'FAULTLINE_ERR_UNSUPPORTED',
    `${what} needs ${missing.join(', ')}, which this host lacks: ${missing.map((f) => features[f]?.detail ?? 'not probed').join('; ')}`,
  )
}

/** The lowest free ingress preference for each filter protocol (1 first: ours classify before later ones). */
function allocatePrios(filters: U32Filter[], used: number[]): Partial<Record<U32Filter['protocol'], number>> {
  const taken = new Set(used)
  const prios: Partial<Record<U32Filter['protocol'], number>> = {}
  for (const f of filters) {
    if (prios[f.protocol] !== undefined) continue
    let p = 1
    while (taken.has(p)) p++
    if (p > 0xffff) throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', 'every ingress filter preference of the device is taken')
    prios[f.protocol] = p
    taken.add(p)
  }
  return prios
}

/**
 * Limits a device's bandwidth: tbf as the device's root qdisc (egress), and for ingress the
 * injection's own IFB device with a tbf, fed by a u32 + mirred filter on the device's ingress
 * hook. With peers/ports/protocol, egress uses htb: matching packets go to a shaped class,
 * everything else takes htb's direct path, unshaped.
 */
export const networkBandwidth = defineFault(networkBandwidthSpec, {
  planSchema: Type.Object({
    injectionId: Type.String(),
    ...Tools,
    device: Type.String(),
    deviceFrom: Type.String(),
    direction: Type.String(),
    rate: Type.String(),
    rateBitsPerSecond: Type.Integer(),
    burstBytes: Type.Integer(),
    limitBytes: Type.Integer(),
    ops: Type.Array(OpSchema),
    steps: Type.Array(PlanStepSchema),
    claims: Type.Array(Type.String()),
  }),
  stateSchema: Type.Object({ ...Tools, owned: Type.Array(ResourceSchema) }),
  requires: ['tool:tc', 'tool:ip', 'qdisc:tbf'],
  exclusive: false,

  gather: (spec, target, ctx): Promise<BandwidthFacts> => gatherBandwidth(spec, target, ctx),

  plan(spec, target, ctx) {
    const facts = ctx.facts
    const ns = netnsOf(target, ctx.paths)
    const where = describeNetns(ns)
    const { device } = facts
    const direction = spec.direction ?? 'egress'
    const shaping = shapingFor(spec, facts.mtu)
    const traffic = { peers: facts.peers, ports: spec.ports, localPorts: spec.localPorts, protocol: spec.protocol }
    const egress = direction !== 'ingress' ? u32Filters('egress', traffic) : undefined
    const ingress = direction !== 'egress' ? u32Filters('ingress', traffic) : undefined
    if (egress) requireFeatures(ctx.features, egressNeeds(isFiltered(traffic)), 'egress shaping with peers/ports/protocol')
    if (ingress) requireFeatures(ctx.features, ingressNeeds, 'ingress shaping')

    // A device's root qdisc, and the redirect of its ingress, can each serve one injection.
    const claims = [...(egress ? [`tc-root:${ns.inode}:${device}`] : []), ...(ingress ? [`tc-ingress:${ns.inode}:${device}`] : [])]
    for (const claim of claims) {
      const holder = facts.openClaims.find((c) => c.claim === claim)
      if (holder) {
        throw new FaultlineError(
          'FAULTLINE_ERR_TARGET_BUSY',
          `${device} in ${where} is already shaped (${claim.split(':')[0]}) by network-bandwidth injection "${holder.injectionId}"; recover it first`,
          { injectionIds: [holder.injectionId], claim },
        )
      }
    }
    if (egress && facts.root.handle !== '0:') {
      throw new FaultlineError(
        'FAULTLINE_ERR_TARGET_STATE',
        `${device} in ${where} already has a root qdisc (${facts.root.kind} ${facts.root.handle}) that is not a kernel default; Faultline never replaces a qdisc it did not create: remove it, or shape ingress only`,
      )
    }
    const ifb = ifbName(ctx.injectionId)
    if (ingress && facts.links.includes(ifb)) {
      throw new FaultlineError('FAULTLINE_ERR_TARGET_STATE', `a link named ${ifb} already exists in ${where}; it is not this injection's, so nothing was changed`)
    }
    const prios = ingress ? allocatePrios(ingress, facts.ingressPrefs) : {}
    const ops = buildOps({
      tc: facts.tc,
      ip: facts.ip,
      device,
      frameBytes: facts.mtu + 14,
      injectionId: ctx.injectionId,
      shaping,
      ...(egress ? { egress } : {}),
      ...(ingress ? { ingress: { filters: ingress, createQdisc: facts.ingressQdisc === 'none', prios } } : {}),
    })

    const rate = formatRate(shaping.rateBps)
    const queueMs = ((shaping.limitBytes * 8) / shaping.rateBps) * 1000
    const notes: PlanStep[] = [
      {
        phase: 'apply',
        action: 'note',
        detail: `shape ${direction} of ${device} in ${where} (device ${facts.deviceFrom === 'spec' ? 'given' : `from the ${facts.deviceFrom === 'peer-route' ? 'route to the peers' : 'default route'}`}, MTU ${facts.mtu}): rate ${rate}, burst ${shaping.burstBytes} bytes, queue limit ${shaping.limitBytes} bytes (at most ${queueMs.toFixed(0)} ms of queueing)`,
      },
    ]
    const ours = Object.values(prios)
    const before = facts.ingressPrefs.filter((p) => ours.some((o) => p < o))
    const after = facts.ingressPrefs.filter((p) => !before.includes(p))
    if (ingress && before.length > 0) {
      notes.push({
        phase: 'apply',
        action: 'note',
        detail: `ingress filters that were there before, at preferences ${before.join(', ')}, classify first: traffic they claim is not shaped`,
      })
    }
    if (ingress && after.length > 0) {
      // The IFB hands packets back with tc classification skipped (drivers/net/ifb.c).
      notes.push({
        phase: 'apply',
        action: 'note',
        detail: `while the fault is active, the device's other ingress filters (preferences ${after.join(', ')}) do not see the packets redirected to the IFB`,
      })
    }
    const tools = { tc: facts.tc, ip: facts.ip }
    const created = ops.flatMap((op) => (op.creates ? [op.creates] : []))
    const steps: PlanStep[] = [
      ...notes,
      ...ops.map((op) => ({ phase: 'apply' as const, action: 'exec', detail: op.detail, argv: inNetns(ns, op.argv) })),
      ...created.reverse().map((r) => ({
        phase: 'recover' as const,
        action: 'exec',
        detail: `remove the ${describeResource(r)}${r.type === 'ingress-qdisc' ? ' (only if no filters of anyone else are on it)' : ''}; gone counts as recovered`,
        argv: inNetns(ns, removeArgv(tools, r)),
      })),
    ]
    return {
      injectionId: ctx.injectionId,
      netns: ns,
      tc: facts.tc,
      ip: facts.ip,
      device,
      deviceFrom: facts.deviceFrom,
      direction,
      rate,
      rateBitsPerSecond: shaping.rateBps,
      burstBytes: shaping.burstBytes,
      limitBytes: shaping.limitBytes,
      ops,
      steps,
      claims,
    }
  },

  undoFromPlan: (plan) => ({ netns: plan.netns, tc: plan.tc, ip: plan.ip, owned: [] }),

  apply: (plan, ctx) => applyOps({ netns: plan.netns, tc: plan.tc, ip: plan.ip }, plan.ops, ctx),

  recover: (state) => recoverOwned(state),
})
