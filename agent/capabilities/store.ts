import type { Logger } from 'pino'
import type { Capabilities } from '../../protocol/capabilities.js'
import { probeCapabilities, type ProbeOptions } from './probe.js'

/** Probes once (started at agent start) and serves the cached result until refreshed. */
export class CapabilityStore {
  readonly #opts: ProbeOptions
  readonly #log: Logger
  #current: Promise<Capabilities> | undefined

  constructor(opts: ProbeOptions, log: Logger) {
    this.#opts = opts
    this.#log = log
  }

  get(): Promise<Capabilities> {
    return (this.#current ??= this.#probe())
  }

  refresh(): Promise<Capabilities> {
    this.#current = this.#probe()
    return this.#current
  }

  #probe(): Promise<Capabilities> {
    const probing = probeCapabilities(this.#opts).then((caps) => {
      const missing = Object.entries(caps.features).filter(([, f]) => !f.available).map(([name]) => name)
      this.#log.info({ probeMs: caps.probeMs, missing }, 'capabilities probed')
      return caps
    })
    // A failed probe must not stay cached: the next call probes again.
    probing.catch(() => {
      if (this.#current === probing) this.#current = undefined
    })
    return probing
  }
}
