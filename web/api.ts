import { signal } from '@preact/signals'
import type { Role } from '../protocol/roles.js'

/**
 * The dashboard's one way to the server: fetch with the session's bearer token. Any 401 ends
 * the session (the token was revoked, expired or is wrong) and shows the server's message on
 * the sign-in page; other errors are thrown as ApiError with the server's code and message.
 */

export interface WhoAmI {
  who: string
  role: Role
  tokenId?: string
  expiresAt?: string
  version: string
}

const TOKEN_KEY = 'faultline.token'

/** The token, kept in sessionStorage only: it is gone when the tab closes. */
export const token = signal<string | null>(sessionStorage.getItem(TOKEN_KEY))
export const me = signal<WhoAmI | null>(null)
/** Why the last session ended (shown on the sign-in page). */
export const signedOutReason = signal('')

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message)
  }
}

export function signIn(secret: string, who: WhoAmI): void {
  sessionStorage.setItem(TOKEN_KEY, secret)
  signedOutReason.value = ''
  me.value = who
  token.value = secret
}

export function signOut(reason = ''): void {
  sessionStorage.removeItem(TOKEN_KEY)
  signedOutReason.value = reason
  me.value = null
  token.value = null
  if (location.hash !== '' && location.hash !== '#/') history.replaceState(null, '', '#/')
}

export interface ApiOptions {
  /** Send the body as YAML text (content-type application/yaml) instead of JSON. */
  yaml?: boolean
  /** Use this token instead of the session's (the sign-in check). */
  token?: string
  signal?: AbortSignal
}

async function errorOf(res: Response): Promise<ApiError> {
  const text = await res.text()
  try {
    const body = JSON.parse(text) as { code?: string; message?: string; details?: unknown }
    return new ApiError(res.status, body.code ?? `HTTP_${res.status}`, body.message ?? res.statusText, body.details)
  } catch {
    return new ApiError(res.status, `HTTP_${res.status}`, text.slice(0, 300) || res.statusText)
  }
}

export async function api<T>(method: string, path: string, body?: unknown, opts: ApiOptions = {}): Promise<T> {
  const secret = opts.token ?? token.value
  const headers: Record<string, string> = { accept: 'application/json' }
  if (secret) headers.authorization = `Bearer ${secret}`
  let payload: string | undefined
  if (body !== undefined) {
    headers['content-type'] = opts.yaml ? 'application/yaml' : 'application/json'
    payload = opts.yaml ? String(body) : JSON.stringify(body)
  }
  const res = await fetch(path, { method, headers, ...(payload !== undefined ? { body: payload } : {}), ...(opts.signal ? { signal: opts.signal } : {}) })
  if (!res.ok) {
    const err = await errorOf(res)
    // A session whose token stopped working ends here; a wrong token typed at sign-in does not
    // (opts.token): the sign-in form shows the message itself.
    if (res.status === 401 && opts.token === undefined) signOut(err.message)
    throw err
  }
  if (res.status === 204) return undefined as T
  return (await res.json()) as T
}

/** The message to show for a failed call. */
export function messageOf(err: unknown): string {
  if (err instanceof ApiError) return `${err.message} (${err.code})`
  return err instanceof Error ? err.message : String(err)
}
