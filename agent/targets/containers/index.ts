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
  /**
   * Runtimes that have containers here but no socket that answered: their containers carry no
   * names (but LXC's and nspawn's, from the cgroup), labels or images.
   */
  unenriched: { runtime: string; reason: string }[]
}

/** Runtimes whose containers' names, labels and images come from a socket. */
const socketRuntimes = ['docker', 'podman', 'containerd', 'crio'] as const

/**
 * Finds containers through cgroupfs (always), then adds names, labels and images from whichever
 * runtime sockets answer. A socket that is missing or fails leaves its containers unnamed, never
 * unfound. Only the sockets of runtimes that have containers here are asked.
 */
export async function discoverContainers(ctx: TargetContext, log?: Logger): Promise<DiscoveryReport> {
  const found = discoverFromCgroups({ procRoot: ctx.paths.procRoot, containerdTaskDir: ctx.paths.containerdTaskDir }).filter(
    (c) => c.netnsInode !== undefined,
  )
  const runtimesSeen = new Set(found.map((c) => c.runtime))
  const sockets: DiscoveryReport['sockets'] = []
  const unenriched: DiscoveryReport['unenriched'] = []
  const infos = new Map<string, RuntimeContainer>()

  const ask = async (runtime: (typeof socketRuntimes)[number], list: (path: string) => Promise<RuntimeContainer[]>) => {
    if (!runtimesSeen.has(runtime)) return
    const paths = ctx.runtimeSockets[runtime]
    const path = firstSocket(paths)
    if (!path) {
      unenriched.push({ runtime, reason: `no socket at ${paths.join(' or ') || '(none configured)'}` })
      return
    }
    try {
      for (const info of await list(path)) if (!infos.has(infoKey(info))) infos.set(infoKey(info), info)
      sockets.push({ runtime, path, ok: true })
    } catch (err) {
      const error = (err as Error).message
      sockets.push({ runtime, path, ok: false, error })
      unenriched.push({ runtime, reason: `${path}: ${error}` })
      log?.warn({ runtime, path, error }, 'runtime socket did not answer; its containers stay unnamed')
    }
  }
  // containerd: only the namespaces its containers here live in (not docker's "moby", say).
  const containerdNamespaces = [...new Set(found.filter((c) => c.runtime === 'containerd').map((c) => c.namespace))]
  const crioIds = found.filter((f) => f.runtime === 'crio').map((f) => f.id)
  await Promise.all([
    ask('docker', listEngineContainers),
    ask('podman', (path) => listEngineContainers(path, { libpodFirst: true })),
    ask('containerd', (path) =>
      listContainerdContainers(path, containerdNamespaces.every((ns) => ns !== undefined) ? (containerdNamespaces as string[]) : undefined),
    ),
    ask('crio', async (path) => {
      const inspected = await Promise.all(crioIds.map((id) => inspectCrioContainer(path, id)))
      if (inspected.every((i) => i === undefined)) throw new Error('the CRI-O inspect endpoint answered for none of its containers')
      return inspected.filter((i): i is RuntimeContainer => i !== undefined)
    }),
  ])
  return { containers: found.map((c) => toResolved(c, infos.get(infoKey(c)))), sockets, unenriched }
}

/** containerd ids are unique per namespace only; the other runtimes' ids are global. */
function infoKey(c: { runtime: string; namespace?: string | undefined; id: string }): string {
  return c.runtime === 'containerd' ? `containerd/${c.namespace ?? ''}/${c.id}` : `${c.runtime}/${c.id}`
}

function toResolved(c: CgroupContainer, info: RuntimeContainer | undefined): ResolvedContainer {
  // containerd has no names; ids chosen by people (ctr run IMAGE web) serve as one, generated
  // 64-hex ones (Kubernetes, docker's "moby" namespace) do not.
  const name = info?.name ?? c.name ?? (c.runtime === 'containerd' && !/^[0-9a-f]{64}$/.test(c.id) ? c.id : undefined)
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

/**
 * Image references match exactly (tag or digest), or by repository when the selector has no
 * tag or digest. Docker Hub's implicit parts are ignored on both sides ("busybox",
 * "library/busybox" and "docker.io/library/busybox" are one repository), as is the implicit
 * ":latest" of a reference without tag or digest.
 */
export function imageMatches(wanted: string, actual: string | undefined): boolean {
  if (!actual) return false
  const w = parseImageRef(wanted)
  const a = parseImageRef(actual)
  if (w.repository !== a.repository) return false
  if (w.digest) return w.digest === a.digest && (!w.tag || w.tag === a.tag)
  if (w.tag) return w.tag === (a.tag ?? (a.digest ? undefined : 'latest'))
  return true
}

function parseImageRef(ref: string): { repository: string; tag?: string; digest?: string } {
  let rest = ref.replace(/^docker\.io\//, '').replace(/^library\//, '')
  let digest: string | undefined
  const at = rest.indexOf('@')
  if (at >= 0) {
    digest = rest.slice(at + 1)
    rest = rest.slice(0, at)
  }
  // A colon after the last slash starts the tag; one before it belongs to a registry port.
  const colon = rest.lastIndexOf(':')
  const tag = colon > rest.lastIndexOf('/') ? rest.slice(colon + 1) : undefined
  return { repository: tag === undefined ? rest : rest.slice(0, colon), ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) }
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
      const blind = report.unenriched.filter((u) => !selector.runtime || u.runtime === selector.runtime)
      const hint =
        needsSocket && blind.length > 0
          ? `; names, labels and images come from the runtimes' sockets, and none answered for ${blind.map((u) => `${u.runtime} (${u.reason})`).join(', ')}: ` +
            'select those containers by id (GET /v1/targets?type=container lists them), or configure the socket paths'
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
