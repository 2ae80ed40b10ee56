import { existsSync, statSync } from 'node:fs'
import type * as grpc from '@grpc/grpc-js'
import type { RuntimeName } from './cgroups.js'

/**
 * Names, labels, images and states from the runtimes' own APIs, when their sockets are there.
 * One small client per API: the Docker Engine API (served by dockerd and by podman's
 * `system service`), containerd's gRPC API, and CRI-O's info endpoints. None is needed to
 * find containers (cgroups.ts does that); each only enriches, with a short timeout, and a
 * failing or missing socket just leaves the containers unenriched.
 */
export interface RuntimeContainer {
  id: string
  runtime: RuntimeName
  namespace?: string
  name?: string
  image?: string
  labels: Record<string, string>
  state?: string
  pid?: number
}

export interface RuntimeSockets {
  docker: readonly string[]
  containerd: readonly string[]
  podman: readonly string[]
  crio: readonly string[]
}

const TIMEOUT_MS = 2_000

export function firstSocket(paths: readonly string[]): string | undefined {
  return paths.find((p) => {
    try {
      return existsSync(p) && statSync(p).isSocket()
    } catch {
      return false
    }
  })
}

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
}

/** One GET on a fresh connection to the socket; any HTTP status resolves. */
async function request(socketPath: string, path: string): Promise<Answer> {
  // undici is loaded at the first runtime request, like gRPC below: an idle agent does not need it.
  const { Client } = await import('undici')
  const client = new Client('http://localhost', { socketPath, headersTimeout: TIMEOUT_MS, bodyTimeout: TIMEOUT_MS, connectTimeout: TIMEOUT_MS })
  try {
    const res = await client.request({ method: 'GET', path, headers: { host: 'localhost' } })
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() }
  } finally {
    await client.close()
  }
}

async function get(socketPath: string, path: string): Promise<Answer> {
  const res = await request(socketPath, path)
  if (res.status >= 400) throw new Error(`GET ${path}: HTTP ${res.status} ${res.text.slice(0, 200)}`)
  return res
}

async function getJson<T>(socketPath: string, path: string): Promise<T> {
  return JSON.parse((await get(socketPath, path)).text) as T
}

// ---- Docker Engine API (dockerd, podman system service) -----------------------------------------

interface EngineContainer {
  Id: string
  /** "/web" from the Docker API, "web" from libpod's. */
  Names?: string[]
  Image?: string
  Labels?: Record<string, string> | null
  State?: string
}

/** podman marks every answer with this header (its API server's version middleware). */
const isPodman = (res: Answer) => res.headers['libpod-api-version'] !== undefined

/**
 * Lists running containers through a Docker-compatible API, and tells dockerd and podman apart
 * by the answer itself (no /_ping round trip). With `libpodFirst` (the socket is configured as
 * podman's) it asks podman's own listing first: about twice as fast as its Docker-compatible
 * one, which converts every container (podman 4.3, 34 containers: ~30 ms against ~55 ms); any
 * version prefix works there. Anything but a podman 200 falls back to the Docker listing.
 */
export async function listEngineContainers(socketPath: string, opts: { libpodFirst?: boolean } = {}): Promise<RuntimeContainer[]> {
  let res: Answer | undefined
  if (opts.libpodFirst) {
    const libpod = await request(socketPath, '/v4.0.0/libpod/containers/json')
    if (libpod.status === 200 && isPodman(libpod)) res = libpod
  }
  res ??= await get(socketPath, '/containers/json')
  const runtime: 'docker' | 'podman' = isPodman(res) ? 'podman' : 'docker'
  const list = JSON.parse(res.text) as EngineContainer[]
  return list.map((c) => ({
    id: c.Id,
    runtime,
    ...(runtime === 'docker' ? { namespace: 'moby' } : {}),
    ...(c.Names?.[0] ? { name: c.Names[0].replace(/^\//, '') } : {}),
    ...(c.Image ? { image: c.Image } : {}),
    labels: c.Labels ?? {},
    ...(c.State ? { state: c.State } : {}),
  }))
}

// ---- containerd gRPC API ---------------------------------------------------------------------------

/**
 * gRPC and protobufjs are loaded at the first containerd lookup, not at start: together they
 * are ~14 MiB of an idle agent's RSS, and most hosts never need them (issue 18).
 */
let containerd: Promise<{ grpc: typeof grpc; Client: grpc.ServiceClientConstructor }> | undefined

function loadContainerd() {
  containerd ??= (async () => {
    const [grpcModule, { default: protobufjs }] = await Promise.all([import('@grpc/grpc-js'), import('protobufjs')])
    // The subset of containerd's API (api/services/{containers,namespaces}/v1/*.proto) we read;
    // field numbers are containerd's. Unknown fields are skipped by the decoder.
    const containerdProto = protobufjs.parse(`
    syntax = "proto3";
    package containerd.services.containers.v1;
    message Container { string id = 1; map<string, string> labels = 2; string image = 3; }
    message ListContainersRequest { repeated string filters = 1; }
    message ListContainersResponse { repeated Container containers = 1; }
    message Namespace { string name = 1; map<string, string> labels = 2; }
    message ListNamespacesRequest { string filter = 1; }
    message ListNamespacesResponse { repeated Namespace namespaces = 1; }
    `).root

    function unaryMethod(path: string, req: string, res: string): grpc.MethodDefinition<object, object> {
      const reqType = containerdProto.lookupType(req)
      const resType = containerdProto.lookupType(res)
      return {
        path,
        requestStream: false,
        responseStream: false,
        requestSerialize: (v: object) => Buffer.from(reqType.encode(reqType.fromObject(v)).finish()),
        requestDeserialize: (b: Buffer) => reqType.toObject(reqType.decode(b)),
        responseSerialize: (v: object) => Buffer.from(resType.encode(resType.fromObject(v)).finish()),
        responseDeserialize: (b: Buffer) => resType.toObject(resType.decode(b), { defaults: true }),
      }
    }

    const containerdService = {
      listNamespaces: unaryMethod('/containerd.services.namespaces.v1.Namespaces/List', 'ListNamespacesRequest', 'ListNamespacesResponse'),
      listContainers: unaryMethod('/containerd.services.containers.v1.Containers/List', 'ListContainersRequest', 'ListContainersResponse'),
    }
    const ContainerdClient = grpcModule.makeGenericClientConstructor(containerdService, 'Containerd')
    return { grpc: grpcModule, Client: ContainerdClient }
  })()
  return containerd
}

function call<T>(grpcModule: typeof grpc, client: grpc.Client, method: 'listNamespaces' | 'listContainers', req: object, namespace?: string): Promise<T> {
  const metadata = new grpcModule.Metadata()
  if (namespace) metadata.set('containerd-namespace', namespace)
  return new Promise((resolve, reject) => {
    const fn = (client as unknown as Record<string, Function>)[method]!.bind(client)
    fn(req, metadata, { deadline: Date.now() + TIMEOUT_MS }, (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res)))
  })
}

/**
 * Lists the containers of the given containerd namespaces, or of every namespace (docker's
 * "moby" included) when none are given. containerd has no container names: nerdctl keeps its
 * name in the "nerdctl/name" label.
 */
export async function listContainerdContainers(socketPath: string, namespaces?: readonly string[]): Promise<RuntimeContainer[]> {
  const { grpc: grpcModule, Client } = await loadContainerd()
  const client = new Client(`unix://${socketPath}`, grpcModule.credentials.createInsecure())
  try {
    const names = namespaces ?? (await call<{ namespaces: { name: string }[] }>(grpcModule, client, 'listNamespaces', {})).namespaces.map((ns) => ns.name)
    const lists = await Promise.all(
      names.map(async (namespace) => {
        const { containers } = await call<{ containers: { id: string; labels: Record<string, string>; image: string }[] }>(grpcModule, client, 'listContainers', {}, namespace)
        return containers.map((c): RuntimeContainer => {
          const labels = c.labels ?? {}
          const name = labels['nerdctl/name']
          return { id: c.id, runtime: 'containerd', namespace, labels, ...(name ? { name } : {}), ...(c.image ? { image: c.image } : {}) }
        })
      }),
    )
    return lists.flat()
  } finally {
    client.close()
  }
}

// ---- CRI-O -----------------------------------------------------------------------------------------

interface CrioContainer {
  name?: string
  image?: string
  labels?: Record<string, string>
  pid?: number
}

/** CRI-O's inspect endpoint: GET /containers/<id> on its socket (names, image, labels, pid). */
export async function inspectCrioContainer(socketPath: string, id: string): Promise<RuntimeContainer | undefined> {
  try {
    const c = await getJson<CrioContainer>(socketPath, `/containers/${encodeURIComponent(id)}`)
    return {
      id,
      runtime: 'crio',
      namespace: 'k8s.io',
      ...(c.name ? { name: c.name } : {}),
      ...(c.image ? { image: c.image } : {}),
      labels: c.labels ?? {},
      ...(c.pid ? { pid: c.pid } : {}),
    }
  } catch {
    return undefined
  }
}
