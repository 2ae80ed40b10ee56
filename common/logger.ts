import pino, { type Logger } from 'pino'

/**
 * The root logger of a process (agent or server). Pretty output only for a person at a terminal;
 * JSON lines for journald and collectors. Modules take `log.child({ component })` from it.
 */
export function createLogger(level: string): Logger {
  if (process.stdout.isTTY) {
    return pino({ level, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l' } } })
  }
  return pino({ level })
}

/** The logger of a component built without one (tests, embedding): says nothing. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}
