import { join } from 'node:path'
import { Type, type Static } from 'typebox'
import type { FeatureMap } from '../../../protocol/capabilities.js'
import { parseDuration } from '../../../protocol/duration.js'
import { FaultlineError } from '../../../protocol/errors.js'
import { networkDelaySpec } from '../../../protocol/faults/network-delay.js'
import { PlanStepSchema, type PlanStep } from '../../../protocol/plan.js'
import type { ResolvedTarget } from '../../../protocol/target.js'
import { run } from '../../exec.js'
import { describeNetns, inNetns, netnsOf, type NetnsRef } from '../../net/netns.js'
import {
  applyTc,
  gatherNetem,
  netemMissing,
  netemSteps,
  planNetem,
  recoverTc,
  resolveDevice,
  rootClaim,
  tcHandleFor,
  type NetemFacts,
} from '../shared/netem.js'
import {
  NetnsRefSchema,
  protectedTcpPorts,
  requireSameNetns,
  resolvePeers,
  toolPath,
  type PeerFacts,
} from '../shared/network.js'
import { defineFault, type ApplyContext, type HostPaths } from '../types.js'
import { HELPER_NAME, HELPER_NICE, findHelpers, netdelayHelperPath, startHelper, stopHelper, type HelperProcess } from './helper.js'
import {
  RuleSetPlanSchema,
  RuleSetStateSchema,
  applyRuleSet,
  buildRuleSet,
  gatherIptables,
  nftTableOwnership,
  removeRuleSet,
  ruleSetSteps,
  type IptablesFacts,
  type RuleSetPlan,
  type RuleSetState,
} from './iptables.js'

/**
 * Delays matching packets by latency ± jitter. Two mechanisms, chosen in the plan:
 * - netem (egress, where the kernel has sch_netem): a root netem qdisc the injection owns;
 * - NFQUEUE (everywhere else, and for ingress): iptables rules in a chain the injection owns
 *   queue the packets to native/netdelay (faultline-netdelay), which accepts each one when its
 *   time has come. --queue-bypass and the helper's fail-open queue mean that a dead helper or a
 *   full queue lets traffic pass rather than black-holing it; the helper's own deadline means a
 *   delay ends even if the agent never comes back.
 */

const MAX_LATENCY_MS = 60_000
/** First NFQUEUE queue number we use: low numbers are where IDS/IPS setups usually sit. */
export const FIRST_QUEUE = 1000
const LAST_QUEUE = 65535
/** Stands for the injection's deadline in the planned helper argv until apply knows it. */
export const DEADLINE_ARG = '<deadline: expiresAt in seconds since the epoch>'

type Spec = Static<typeof networkDelaySpec.specSchema>

export type Mechanism = 'netem' | 'nfqueue'

export interface DelayParams {
  latencyMs: number
  jitterMs: number
  correlation: number
}

/** Checks and converts the timing fields; 400 with the field named when they do not make sense. */
export function delayParams(spec: Pick<Spec, 'latency' | 'jitter' | 'correlation'>): DelayParams {
  const field = (name: string, text: string) => {
    try {
      return parseDuration(text)
    } catch (err) {
      throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `${name}: ${(err as Error).message}`)
    }
  }
  const latencyMs = field('latency', spec.latency)
  const jitterMs = spec.jitter === undefined ? 0 : field('jitter', spec.jitter)
  if (latencyMs < 1 || latencyMs > MAX_LATENCY_MS) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `latency ${spec.latency} is out of range: give 1ms to 1m`)
  }
  if (jitterMs > latencyMs) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', `jitter ${spec.jitter} exceeds latency ${spec.latency}: the delay would have to go below zero`)
  }
  const correlation = spec.correlation ?? 0
  if (correlation > 0 && jitterMs === 0) {
    throw new FaultlineError('FAULTLINE_ERR_VALIDATION', 'correlation applies to jitter: give jitter too, or drop correlation')
  }
  return { latencyMs, jitterMs, correlation }
}

/** Why NFQUEUE cannot be used on this host, or undefined. */
export function nfqueueMissing(features: FeatureMap): string | undefined {
  for (const f of ['tool:iptables', 'iptables:nfqueue', 'helper:netdelay'] as const) {
    if (!features[f]?.available) return features[f]?.detail ?? `${f} was not probed`
  }
  return undefined
}

type MechanismSpec = Partial<Pick<Spec, 'direction' | 'mechanism' | 'peers' | 'ports' | 'localPorts' | 'protocol' | 'protectControlChannel'>>

/** Why netem cannot serve this spec here. Filters and protected ports need a prio root with u32 filters. */
function netemUnusable(features: FeatureMap, spec: MechanismSpec): string | undefined {
  for (const f of ['tool:tc', 'qdisc:netem'] as const) {
    if (!features[f]?.available) return f === 'qdisc:netem' ? netemMissing(features) : (features[f]?.detail ?? `${f} was not probed`)
  }
  if ((spec.direction ?? 'egress') !== 'egress') return 'netem delays egress only'
  const filtered = Boolean(spec.peers?.length || spec.ports?.length || spec.localPorts?.length || (spec.protocol && spec.protocol !== 'all'))
  if (filtered || spec.protectControlChannel !== false) {
    for (const f of ['qdisc:prio', 'tc-filter:u32'] as const) {
      if (!features[f]?.available) return `netem with filters or protected ports needs ${f}: ${features[f]?.detail ?? 'not probed'}`
    }
  }
  return undefined
}

/**
 * Pure: which mechanism serves this spec on a host with these features. netem for egress
 * where sch_netem exists (no helper process, the kernel keeps time); NFQUEUE otherwise.
 */
export function chooseMechanism(spec: MechanismSpec, features: FeatureMap): Mechanism {
  const direction = spec.direction ?? 'egress'
  const wanted = spec.mechanism ?? 'auto'
  const netemWhy = netemUnusable(features, spec)
  const nfqueueWhy = nfqueueMissing(features)
  if (wanted === 'netem') {
    if (netemWhy) throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `mechanism netem is not usable here: ${netemWhy}; use mechanism nfqueue (or auto)`)
    return 'netem'
  }
  if (wanted === 'nfqueue') {
    if (nfqueueWhy) throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `mechanism nfqueue is not usable here: ${nfqueueWhy}`)
    return 'nfqueue'
  }
  if (!netemWhy) return 'netem'
  if (!nfqueueWhy) return 'nfqueue'
  throw new FaultlineError('FAULTLINE_ERR_UNSUPPORTED', `network-delay (${direction}) needs tc netem (${netemWhy}) or NFQUEUE (${nfqueueWhy})`)
}

// ---- facts, plan and state -----------------------------------------------------------------------

interface NfqueueFacts {
  peers: PeerFacts
  protectedTcpPorts: number[]
  queue: number
  helper: string
  iptables: IptablesFacts
}

type DelayFacts = { mechanism: 'netem'; netem: NetemFacts } | { mechanism: 'nfqueue'; nfqueue: NfqueueFacts }

const HelperStateSchema = Type.Object({ pid: Type.Integer({ minimum: 1 }), startTime: Type.Integer({ minimum: 0 }) })

const StateSchema = Type.Object({
  mechanism: Type.Enum(['netem', 'nfqueue']),
  netns: NetnsRefSchema,
  // netem
  tcRecover: Type.Optional(Type.Array(Type.Array(Type.String()))),
  // nfqueue
  queue: Type.Optional(Type.Integer()),
  rules: Type.Optional(Type.Array(RuleSetStateSchema)),
  /** Recorded once the helper said "ready"; until then recovery looks it up by queue and netns. */
  helper: Type.Optional(HelperStateSchema),
})
type State = Static<typeof StateSchema>

const PlanSchema = Type.Object({
  mechanism: Type.Enum(['netem', 'nfqueue']),
  netns: NetnsRefSchema,
  latencyMs: Type.Number(),
  jitterMs: Type.Number(),
  correlation: Type.Number(),
  // netem
  device: Type.Optional(Type.String()),
  tcApply: Type.Optional(Type.Array(Type.Array(Type.String()))),
  tcRecover: Type.Optional(Type.Array(Type.Array(Type.String()))),
  // nfqueue
  queue: Type.Optional(Type.Integer()),
  /** The helper's argv; its last element is DEADLINE_ARG, replaced at apply. */
  helperArgv: Type.Optional(Type.Array(Type.String())),
  rules: Type.Optional(Type.Array(RuleSetPlanSchema)),
  steps: Type.Array(PlanStepSchema),
  claims: Type.Array(Type.String()),
})
type Plan = Static<typeof PlanSchema>

/** Queue numbers open network-delay injections hold in this namespace (from their plans). */
function queuesInUse(openPlans: unknown[], netnsInode: number): number[] {
  return openPlans.flatMap((p) => {
    const plan = p as Partial<Plan>
    return plan.mechanism === 'nfqueue' && plan.netns?.inode === netnsInode && typeof plan.queue === 'number' ? [plan.queue] : []
  })
}

/**
 * Queues some program (ours or not) has bound in the namespace: /proc/net/netfilter/nfnetlink_queue,
 * read by a `cat` inside the namespace (/proc/net shows the reader's own network namespace).
 */
async function boundQueues(ns: NetnsRef, paths: HostPaths): Promise<number[]> {
  const res = await run(inNetns(ns, [toolPath('cat'), join(paths.procRoot, 'net', 'netfilter', 'nfnetlink_queue')]))
  if (res.code !== 0) return []
  return res.stdout
    .split('\n')
    .map((l) => Number(l.trim().split(/\s+/)[0]))
    .filter((n) => Number.isInteger(n))
}

export function allocateQueue(taken: Iterable<number>): number {
  const used = new Set(taken)
  for (let q = FIRST_QUEUE; q <= LAST_QUEUE; q++) if (!used.has(q)) return q
  throw new FaultlineError('FAULTLINE_ERR_TARGET_BUSY', `every NFQUEUE queue number from ${FIRST_QUEUE} to ${LAST_QUEUE} is in use`)
}

function usec(ms: number): string {
  return String(Math.round(ms * 1000))
}

function helperArgvFor(ns: NetnsRef, helper: string, queue: number, d: DelayParams): string[] {
  return inNetns(ns, [helper, String(queue), usec(d.latencyMs), usec(d.jitterMs), String(d.correlation), DEADLINE_ARG])
}

function describeDelay(d: DelayParams): string {
  return `${d.latencyMs}ms${d.jitterMs ? ` ± ${d.jitterMs}ms (uniform${d.correlation ? `, ${d.correlation}% correlated` : ''})` : ''}`
}

function planNfqueue(spec: Spec, ns: NetnsRef, injectionId: string, f: NfqueueFacts, d: DelayParams): Plan {
  const direction = spec.direction ?? 'egress'
  const rules: RuleSetPlan[] = f.iptables.families.map((tools) =>
    buildRuleSet({
      tools,
      ...(f.iptables.nft ? { nft: f.iptables.nft } : {}),
      injectionId,
      direction,
      match: { peers: f.peers, ports: spec.ports, localPorts: spec.localPorts, protocol: spec.protocol ?? 'all', device: spec.device },
      queue: f.queue,
      protectedTcpPorts: f.protectedTcpPorts,
    }),
  )
  const helperArgv = helperArgvFor(ns, f.helper, f.queue, d)
  const steps: PlanStep[] = [
    {
      phase: 'apply',
      action: 'exec',
      detail:
        `start ${HELPER_NAME} in ${describeNetns(ns)}, detached, at nice ${HELPER_NICE}: it binds NFQUEUE queue ${f.queue} and accepts each packet ${describeDelay(d)} after it arrived; ` +
        'it exits by itself at the injection deadline (the last argument, filled in at apply)',
      argv: helperArgv,
    },
    ...(f.iptables.ipv6Note ? [{ phase: 'apply' as const, action: 'note', detail: f.iptables.ipv6Note }] : []),
    ...rules.flatMap((r) => ruleSetSteps(ns, r).filter((s) => s.phase === 'apply')),
    ...rules.flatMap((r) => ruleSetSteps(ns, r).filter((s) => s.phase === 'recover')),
    {
      phase: 'recover',
      action: 'signal',
      detail: `SIGTERM to ${HELPER_NAME} (pid + start time recorded at apply): it accepts every held packet at once and exits; SIGKILL after 2 s`,
    },
  ]
  return {
    mechanism: 'nfqueue',
    netns: ns,
    ...d,
    queue: f.queue,
    helperArgv,
    rules,
    steps,
    claims: [`nfqueue:${ns.inode}:${f.queue}`],
  }
}

function stateOfRules(rules: RuleSetPlan[]): RuleSetState[] {
  return rules.map(({ script: _script, ...state }) => state)
}

/** The helper stops by itself at the injection's deadline, so a delay never outlives it. */
function deadlineOf(ctx: ApplyContext): number {
  return ctx.expiresAt
}

async function applyNfqueue(plan: Plan, ctx: ApplyContext): Promise<State> {
  const state: State = { mechanism: 'nfqueue', netns: plan.netns, queue: plan.queue!, rules: stateOfRules(plan.rules ?? []) }
  ctx.checkpoint(state)
  requireSameNetns(plan.netns)
  const deadlineS = Math.ceil(deadlineOf(ctx) / 1000)
  const argv = plan.helperArgv!.map((a) => (a === DEADLINE_ARG ? String(deadlineS) : a))
  const helper: HelperProcess = await startHelper(argv, ctx.paths.procRoot)
  state.helper = helper
  ctx.checkpoint(state)
  ctx.log.debug({ pid: helper.pid, queue: plan.queue, deadline: new Date(deadlineS * 1000).toISOString() }, `${HELPER_NAME} ready`)
  for (const rules of plan.rules ?? []) {
    if (rules.backend === 'nft') {
      // Decided before our rules exist, so recovery knows whether the table was there before.
      const owned = await nftTableOwnership(plan.netns, rules)
      state.rules = state.rules!.map((r) => (r.family === rules.family ? { ...r, nftTableOwned: owned } : r))
      ctx.checkpoint(state)
    }
    await applyRuleSet(plan.netns, rules)
  }
  return state
}

async function recoverNfqueue(state: State, procRoot: string): Promise<{ note?: string }> {
  const notes: string[] = []
  for (const rules of state.rules ?? []) {
    const note = await removeRuleSet(state.netns, rules)
    if (note && !notes.includes(note)) notes.push(note)
  }
  if (state.helper) {
    const note = await stopHelper(procRoot, state.helper)
    if (note) notes.push(note)
  }
  // A helper the agent started but died before recording (or a second one, which cannot
  // exist while this injection holds the queue's claim): found by queue and namespace inode,
  // which also finds it after the namespace's name was deleted (the helper keeps it alive).
  if (state.queue !== undefined) {
    for (const stray of findHelpers(procRoot, state.queue, state.netns.inode)) {
      if (state.helper && stray.pid === state.helper.pid && stray.startTime === state.helper.startTime) continue
      await stopHelper(procRoot, stray)
      notes.push(`stopped ${HELPER_NAME} pid ${stray.pid} that the agent had started but not recorded`)
    }
  }
  return notes.length > 0 ? { note: notes.join('; ') } : {}
}

export const networkDelay = defineFault(networkDelaySpec, {
  planSchema: PlanSchema,
  stateSchema: StateSchema,
  requires: [],
  unavailableReason(features) {
    const netem = netemUnusable(features, { protectControlChannel: false })
    const nfqueue = nfqueueMissing(features)
    return netem && nfqueue ? `needs tc netem (${netem}) or NFQUEUE with ${HELPER_NAME} (${nfqueue})` : undefined
  },
  exclusive: false,

  async gather(spec, target: ResolvedTarget, ctx): Promise<DelayFacts> {
    delayParams(spec)
    const mechanism = chooseMechanism(spec, ctx.features)
    const ns = netnsOf(target, ctx.paths)
    const peers = await resolvePeers(spec.peers)
    const ports = protectedTcpPorts(spec, target, ctx.control)
    if (mechanism === 'netem') return { mechanism, netem: await gatherNetem(ns, spec, peers, ports) }
    requireSameNetns(ns)
    if (spec.device) await resolveDevice(ns, spec.device)
    const queue = allocateQueue([...queuesInUse(ctx.openPlans(), ns.inode), ...(await boundQueues(ns, ctx.paths))])
    const iptables = await gatherIptables(ctx.paths.procRoot, peers)
    return { mechanism, nfqueue: { peers, protectedTcpPorts: ports, queue, helper: netdelayHelperPath(), iptables } }
  },

  plan(spec, target, ctx): Plan {
    const d = delayParams(spec)
    const ns = netnsOf(target, ctx.paths)
    const mechanism = chooseMechanism(spec, ctx.features)
    if (mechanism !== ctx.facts.mechanism) throw new Error(`gathered facts for ${ctx.facts.mechanism}, but the plan needs ${mechanism}`)
    if (ctx.facts.mechanism === 'nfqueue') return planNfqueue(spec, ns, ctx.injectionId, ctx.facts.nfqueue, d)
    const f = ctx.facts.netem
    const tc = planNetem({
      ns,
      tc: f.tc,
      device: f.device,
      handle: tcHandleFor(ctx.injectionId),
      netem: { delay: { latencyMs: d.latencyMs, ...(d.jitterMs ? { jitterMs: d.jitterMs } : {}), ...(d.correlation ? { correlation: d.correlation } : {}) } },
      peers: f.peers,
      ports: spec.ports,
      localPorts: spec.localPorts,
      protocol: spec.protocol ?? 'all',
      protectedTcpPorts: f.protectedTcpPorts,
    })
    return {
      mechanism: 'netem',
      netns: ns,
      ...d,
      device: f.device,
      tcApply: tc.apply,
      tcRecover: tc.recover,
      steps: netemSteps(tc, `netem delay ${describeDelay(d)} on ${f.device}`),
      claims: [rootClaim(ns, f.device)],
    }
  },

  undoFromPlan(plan): State {
    if (plan.mechanism === 'netem') return { mechanism: 'netem', netns: plan.netns, tcRecover: plan.tcRecover ?? [] }
    return { mechanism: 'nfqueue', netns: plan.netns, queue: plan.queue!, rules: stateOfRules(plan.rules ?? []) }
  },

  async apply(plan, ctx): Promise<State> {
    if (plan.mechanism === 'nfqueue') return applyNfqueue(plan, ctx)
    await applyTc(plan.netns, plan.tcApply ?? [])
    return { mechanism: 'netem', netns: plan.netns, tcRecover: plan.tcRecover ?? [] }
  },

  recover(state, ctx) {
    if (state.mechanism === 'netem') return recoverTc(state.netns, state.tcRecover ?? [])
    return recoverNfqueue(state, ctx.paths.procRoot)
  },
})
