import type { Logger } from 'pino'
import { FaultlineError } from '../../../protocol/errors.js'
import type { ResolvedContainer, TargetSelector } from '../../../protocol/target.js'
import type { TargetContext, TargetResolver } from '../types.js'
import { discoverFromCgroups, type CgroupContainer } from './cgroups.js'
import { firstSocket, inspectCrioContainer, listContainerdContainers, listEngineContainers, type RuntimeContainer } from './runtimes.js'

type ContainerSelector = Extract<TargetSelector, { type: 'container' }>

export interface DiscoveryReport {
  containers: ResolvedContainer[]
  /** Runtime sockets that answered, and those that failed (with why). */
  sockets: { runtime: string; path: string; ok: boolean; error?: string }[]
}

/**
 * Finds containers through cgroupfs (always), then adds names, labels and images from whichever
 * runtime sockets answer. A socket that is missing or fails leaves its containers unnamed, never
 * unfound.
 */
export async function discoverContainers(ctx: TargetContext, log?: Logger): Promise<DiscoveryReport> {
  const found = discoverFromCgroups({ procRoot: ctx.paths.procRoot, containerdTaskDir: ctx.paths.containerdTaskDir }).filter(
    (c) => c.netnsInode !== undefined,
  )
  const runtimesSeen = new Set(found.map((c) => c.runtime))
  const sockets: DiscoveryReport['sockets'] = []
  const infos = new Map<string, RuntimeContainer>()
  const key = (runtime: string, id: string) => `${runtime}/${id}`

  const ask = async (runtime: string, paths: readonly string[], list: (path: string) => Promise<RuntimeContainer[]>) => {
    const path = firstSocket(paths)
    if (!path) return
    try {
      for (const info of await list(path)) if (!infos.has(key(info.runtime, info.id))) infos.set(key(info.runtime, info.id), info)
      sockets.push({ runtime, path, ok: true })
    } catch (err) {
      const error = (err as Error).message
      sockets.push({ runtime, path, ok: false, error })
      log?.warn({ runtime, path, error }, 'runtime socket did not answer; its containers stay unnamed')
    }
  }
  const s = ctx.runtimeSockets
  await Promise.all([
    runtimesSeen.has('docker') ? ask('docker', s.docker, listEngineContainers) : undefined,
    runtimesSeen.has('podman') ? ask('podman', s.podman, listEngineContainers) : undefined,
    runtimesSeen.has('containerd') ? ask('containerd', s.containerd, listContainerdContainers) : undefined,
  ])
  if (runtimesSeen.has('crio')) {
    const path = firstSocket(s.crio)
    if (path) {
      for (const c of found.filter((f) => f.runtime === 'crio')) {
        const info = await inspectCrioContainer(path, c.id)
        if (info) infos.set(key('crio', c.id), info)
      }
      sockets.push({ runtime: 'crio', path, ok: true })
    }
  }
  return { containers: found.map((c) => toResolved(c, infos.get(key(c.runtime, c.id)))), sockets }
}

function toResolved(c: CgroupContainer, info: RuntimeContainer | undefined): ResolvedContainer {
  const name = info?.name ?? c.name
  return {
    type: 'container',
    id: c.id,
    runtime: c.runtime,
    ...(c.namespace ? { namespace: c.namespace } : {}),
    ...(name ? { name } : {}),
    ...(info?.image ? { image: info.image } : {}),
    labels: info?.labels ?? {},
    initPid: c.initPid,
    initStartTime: c.initStartTime,
    netnsInode: c.netnsInode!,
    cgroupPaths: c.cgroupPaths,
  }
}

/** Image references match exactly, or by repository when the selector has no tag or digest. */
export function imageMatches(wanted: string, actual: string | undefined): boolean {
  if (!actual) return false
  const norm = (ref: string) => ref.replace(/^(docker\.io\/)?library\//, '').replace(/^docker\.io\//, '')
  const a = norm(actual)
  const w = norm(wanted)
  if (a === w) return true
  const hasTag = /[:@][^/]*$/.test(w)
  return !hasTag && a.replace(/[:@][^/]*$/, '') === w
}

function matcher(selector: ContainerSelector): { test: (c: ResolvedContainer) => boolean; what: string } {
  const runtimeOk = (c: ResolvedContainer) => !selector.runtime || c.runtime === selector.runtime
  if ('id' in selector) {
    const id = selector.id.toLowerCase()
    return { test: (c) => runtimeOk(c) && c.id.toLowerCase().startsWith(id), what: `with id ${selector.id}` }
  }
  if ('name' in selector) return { test: (c) => runtimeOk(c) && c.name === selector.name, what: `named ${selector.name}` }
  if ('labels' in selector) {
    const wanted = Object.entries(selector.labels)
    return {
      test: (c) => runtimeOk(c) && wanted.every(([k, v]) => c.labels[k] === v),
      what: `with labels ${wanted.map(([k, v]) => `${k}=${v}`).join(',')}`,
    }
  }
  return { test: (c) => runtimeOk(c) && imageMatches(selector.image, c.image), what: `of image ${selector.image}` }
}

export const containerResolver: TargetResolver<'container'> = {
  type: 'container',
  async resolve(selector, ctx) {
    const report = await discoverContainers(ctx)
    const { test, what } = matcher(selector)
    const matched = report.containers.filter(test)
    if (matched.length === 0) {
      const needsSocket = 'name' in selector || 'labels' in selector || 'image' in selector
      const failed = report.sockets.filter((s) => !s.ok)
      const hint = needsSocket && report.sockets.every((s) => !s.ok)
        ? `; names, labels and images come from runtime sockets and none answered${failed.length ? ` (${failed.map((f) => `${f.runtime}: ${f.error}`).join('; ')})` : ''}: select by id`
        : ''
      throw new FaultlineError(
        'FAULTLINE_ERR_TARGET_NOT_FOUND',
        `no running container ${what}${selector.runtime ? ` in ${selector.runtime}` : ''} (${report.containers.length} containers found)${hint}`,
      )
    }
    return matched
  },
  async discover(ctx) {
    return (await discoverContainers(ctx)).containers
  },
}
