import { Cron } from 'croner'
import type { Logger } from 'pino'
import { FaultlineError } from '../protocol/errors.js'

const cronOptions = { mode: '5-or-6-parts' as const, paused: true }

/** Throws FAULTLINE_ERR_BAD_SCHEDULE with croner's reason when the expression is not valid cron. */
export function checkSchedule(expression: string): void {
  try {
    const job = new Cron(expression, cronOptions)
    const next = job.nextRun()
    job.stop()
    if (!next) throw new Error('it never fires')
  } catch (err) {
    throw new FaultlineError('FAULTLINE_ERR_BAD_SCHEDULE', `schedule ${JSON.stringify(expression)} is not a cron expression the server can use: ${(err as Error).message}; e.g. "*/30 * * * *" (every 30 minutes)`)
  }
}

/**
 * One croner job per scheduled experiment, evaluated by the server in its local time zone.
 * A firing that finds the previous run still going is skipped (the run refuses to start and the
 * reason is written to the event log), never queued.
 */
export class Scheduler {
  readonly #jobs = new Map<string, Cron>()
  readonly #fire: (name: string) => void
  readonly #log: Logger

  constructor(fire: (name: string) => void, log: Logger) {
    this.#fire = fire
    this.#log = log
  }

  /** Replaces the job of `name` (none when schedule is undefined). */
  set(name: string, schedule: string | undefined): void {
    this.#jobs.get(name)?.stop()
    this.#jobs.delete(name)
    if (!schedule) return
    const job = new Cron(schedule, { mode: '5-or-6-parts', protect: true, catch: (err) => this.#log.error({ err, experiment: name }, 'scheduled run failed') }, () => this.#fire(name))
    this.#jobs.set(name, job)
  }

  nextRun(name: string): Date | null {
    return this.#jobs.get(name)?.nextRun() ?? null
  }

  stop(): void {
    for (const job of this.#jobs.values()) job.stop()
    this.#jobs.clear()
  }
}
