// What both data paths say when the sidecar runs out of file descriptors (or socket memory) and
// cannot take new clients: one error line when it starts and one info line when it is over. A
// proxy at its descriptor limit retries every moment; a line per retry would bury everything else
// in the log.
import type { Logger } from 'pino';

/** errno names that say the process or the machine is out of descriptors or socket memory */
const OUT_OF_RESOURCES = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM']);

export function isOutOfResources(errorName: string): boolean {
  return OUT_OF_RESOURCES.has(errorName);
}

export function logAcceptFailing(logger: Logger, err: string): void {
  logger.error(
    { err },
    isOutOfResources(err)
      ? 'proxy cannot take new connections: out of file descriptors or socket memory (open connections keep flowing; retrying)'
      : 'proxy listener error: could not accept a connection (retrying)',
  );
}

export function logAcceptingAgain(logger: Logger, ms: number): void {
  logger.info({ ms }, 'proxy accepting new connections again');
}

/** The JavaScript engine's bookkeeping of one such episode (the native engine keeps its own). */
export class AcceptTrouble {
  private since: number | undefined;
  private readonly logger: Logger;

  constructor(logger: Logger) {
    this.logger = logger;
  }

  get failing(): boolean {
    return this.since !== undefined;
  }

  failed(err: string): void {
    if (this.since !== undefined) return;
    this.since = Date.now();
    logAcceptFailing(this.logger, err);
  }

  recovered(): void {
    if (this.since === undefined) return;
    logAcceptingAgain(this.logger, Date.now() - this.since);
    this.since = undefined;
  }
}
