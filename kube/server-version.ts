// The API server's version, read once at start by the commands that build objects for it. The
// API server may be briefly unreachable when the platform starts with the cluster (or restarts
// with it), so this retries with backoff, logging each failure, before giving up with a clear
// message instead of a stack trace; the kubelet then restarts the process.
import { VersionApi } from '@kubernetes/client-node';
import type { KubeConfig, VersionInfo } from '@kubernetes/client-node';
import type { Logger } from 'pino';

import { StartupError } from '../flags/errors.ts';

/** Waits between attempts: about a minute in all. */
export const VERSION_RETRY_DELAYS_MS = [1000, 2000, 4000, 8000, 15_000, 30_000];

/** The innermost cause's message: fetch's own is only "fetch failed". */
export function rootCause(error: unknown): string {
  let current = error as { message?: string; cause?: unknown } | undefined;
  const messages: string[] = [];
  while (current) {
    if (current.message) messages.push(current.message);
    current = current.cause as typeof current;
  }
  return messages.at(-1) ?? String(error);
}

export async function readServerVersion(
  kc: KubeConfig,
  logger: Logger,
  delaysMs: readonly number[] = VERSION_RETRY_DELAYS_MS,
): Promise<VersionInfo> {
  const server = kc.getCurrentCluster()?.server ?? '(in-cluster)';
  const api = kc.makeApiClient(VersionApi);
  for (let attempt = 0; ; attempt++) {
    try {
      return await api.getCode();
    } catch (error) {
      const reason = rootCause(error);
      const delay = delaysMs[attempt];
      if (delay === undefined) {
        throw new StartupError(
          `cannot reach the API server at ${server} (GET /version, ${attempt + 1} attempts): ${reason}`,
        );
      }
      logger.warn({ server, attempt: attempt + 1, retryInMs: delay, reason }, 'API server unreachable');
      logger.flush();
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
