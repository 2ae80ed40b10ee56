/**
 * The dead-man's switch (DESIGN section 2). The server renews the lease over the link at least
 * every leaseMs / 3; when no renewal arrived for leaseMs, `onExpire` runs once (the link then
 * recovers every lease-bound injection and drops the connection it no longer trusts). The clock
 * keeps running while the link is down: that is the point.
 */
export class LeaseWatch {
  readonly #onExpire: () => void
  #timer: NodeJS.Timeout | undefined
  #expiresAt = 0
  #leaseMs = 0

  constructor(onExpire: () => void) {
    this.#onExpire = onExpire
  }

  /** A renewal: the lease now ends leaseMs from now. */
  renew(leaseMs: number): void {
    this.#leaseMs = leaseMs
    this.#expiresAt = Date.now() + leaseMs
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#onExpire()
    }, leaseMs)
  }

  /** True when a lease was granted and has lapsed (or none was ever granted). */
  get expired(): boolean {
    return this.#timer === undefined
  }

  get leaseMs(): number {
    return this.#leaseMs
  }

  get expiresAt(): number {
    return this.#expiresAt
  }

  stop(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }
}
