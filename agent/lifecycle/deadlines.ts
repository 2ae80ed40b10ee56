/**
 * One timer for many deadlines. Deadlines are wall-clock times (they come from the journal and
 * must hold across restarts); the timer is re-armed at most every `maxSleepMs` so a wall-clock
 * step is noticed within that time rather than after a long monotonic sleep.
 */
export class DeadlineScheduler {
  readonly #due = new Map<string, number>()
  readonly #onDue: (id: string) => void
  readonly #maxSleepMs: number
  #timer: NodeJS.Timeout | undefined
  #stopped = false

  constructor(onDue: (id: string) => void, maxSleepMs = 1_000) {
    this.#onDue = onDue
    this.#maxSleepMs = maxSleepMs
  }

  set(id: string, atMs: number): void {
    if (this.#stopped) return
    this.#due.set(id, atMs)
    this.#arm()
  }

  delete(id: string): void {
    this.#due.delete(id)
    if (this.#due.size === 0) this.#disarm()
  }

  /** Deadlines scheduled now. */
  get size(): number {
    return this.#due.size
  }

  has(id: string): boolean {
    return this.#due.has(id)
  }

  stop(): void {
    this.#stopped = true
    this.#due.clear()
    this.#disarm()
  }

  #disarm(): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #arm(): void {
    this.#disarm()
    if (this.#stopped || this.#due.size === 0) return
    const next = Math.min(...this.#due.values())
    const sleep = Math.max(0, Math.min(next - Date.now(), this.#maxSleepMs))
    this.#timer = setTimeout(() => this.#fire(), sleep)
  }

  #fire(): void {
    this.#timer = undefined
    const now = Date.now()
    for (const [id, at] of [...this.#due]) {
      if (at <= now) {
        this.#due.delete(id)
        this.#onDue(id)
      }
    }
    this.#arm()
  }
}
