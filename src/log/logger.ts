/**
 * The process logger: pino, JSON lines by default, pretty only when asked (log.pretty), and every
 * record passed through the personal-data redaction of redact.ts first.
 */
import { type DestinationStream, type Logger, type LoggerOptions, pino } from 'pino';
import pretty from 'pino-pretty';
import { redactText, redactValue } from './redact.js';

export type { Logger } from 'pino';

/** Options of createLogger(). */
export interface CreateLoggerOptions {
  /** pino level; default "info". */
  level?: string;
  /** Human-readable output (pino-pretty, synchronous); default false. */
  pretty?: boolean;
  /** Where lines go; default stdout. Tests pass a stream to read them back. */
  destination?: DestinationStream;
  /** Fields on every line, e.g. { node: 'gw-1' }. */
  base?: Record<string, unknown>;
}

/**
 * Creates the root logger. Children (logger.child({ component: 'sip' })) inherit the redaction.
 * Redaction runs on the merged record (formatters.log) and on string arguments (hooks.logMethod),
 * so personal data is removed whatever shape a call site logs it in.
 */
export function createLogger(opts: CreateLoggerOptions = {}): Logger {
  const options: LoggerOptions = {
    level: opts.level ?? 'info',
    base: { pid: process.pid, ...opts.base },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: {
      level: (label) => ({ level: label }),
      log: (record) => redactValue(record) as Record<string, unknown>,
    },
    hooks: {
      logMethod(args, method) {
        const cleaned = args.map((a: unknown) => (typeof a === 'string' ? redactText(a) : a));
        method.apply(this, cleaned as Parameters<typeof method>);
      },
    },
  };
  if (opts.pretty) {
    return pino(options, pretty({ sync: true, colorize: process.stdout.isTTY, destination: opts.destination ?? 1 }) as DestinationStream);
  }

  return pino(options, opts.destination ?? pino.destination({ dest: 1, sync: false }));
}
