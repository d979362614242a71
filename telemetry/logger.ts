// The pino logger of every long-running component: JSON lines on stdout, batched. One write()
// per line was a visible share of the webhook's CPU per review when profiled; batching up to
// 4 KiB with a flush at least every second keeps the one-line-per-decision logs at most a second
// late (docs/benchmarks.md has the profile).
import { pino } from 'pino';
import type { DestinationStream, Logger } from 'pino';

export interface LoggerOptions {
  level: string;
  component: string;
  /**
   * File descriptor or path (stdout by default) for JSON lines; or a stream that formats them for
   * a person watching, such as pino-pretty under `npm start` (then written as they come).
   */
  destination?: number | string | DestinationStream;
  flushIntervalMs?: number;
}

export function createLogger(options: LoggerOptions): Logger {
  const base = { level: options.level, base: { component: options.component } };
  if (typeof options.destination === 'object') return pino(base, options.destination);
  const destination = pino.destination({ dest: options.destination ?? 1, sync: false, minLength: 4096 });
  const logger = pino(base, destination);
  const timer = setInterval(() => logger.flush(), options.flushIntervalMs ?? 1000);
  timer.unref();
  // a process that exits (normally or by signal handler) must not lose its last lines
  process.once('exit', () => {
    try {
      destination.flushSync();
    } catch {
      // nothing left to do at exit
    }
  });
  return logger;
}
