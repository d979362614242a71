// A watch that keeps itself alive: reconnects after the server or client-node's 30 s inactivity
// timeout closes it, backs off on errors, and gives up only on 403 (then the caller's periodic
// check is all there is). Events are hints to re-check, never the only source of truth, so a
// missed event costs at most one periodic interval.
import { Watch } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';

export type WatchFn = (
  path: string,
  query: Record<string, string>,
  onEvent: (type: string, object: unknown) => void,
  onDone: (error: unknown) => void,
) => Promise<{ abort(): void }>;

export function kubeWatchFn(kc: KubeConfig): WatchFn {
  const watch = new Watch(kc);
  return (path, query, onEvent, onDone) => watch.watch(path, query, onEvent, onDone);
}

export interface KeptWatch {
  stop(): void;
}

export function watchStatus(error: unknown): number | undefined {
  const e = error as { statusCode?: unknown; code?: unknown } | null;
  const status = e?.statusCode ?? e?.code;
  return typeof status === 'number' ? status : undefined;
}

export function keepWatching(options: {
  watch: WatchFn;
  path: string;
  query: Record<string, string>;
  /** For logs: what is watched. */
  what: string;
  logger: Logger;
  onEvent: (type: string, object: unknown) => void;
  /** Called once when the API server forbids the watch; the watch is not retried. */
  onForbidden?: (error: unknown) => void;
}): KeptWatch {
  const { logger, what } = options;
  let stopped = false;
  let current: { abort(): void } | undefined;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;

  const connect = async (): Promise<void> => {
    if (stopped) return;
    const openedAt = Date.now();
    const done = (error: unknown) => {
      current = undefined;
      if (stopped) return;
      const status = watchStatus(error);
      if (status === 403) {
        logger.warn({ watch: what, status }, 'watch forbidden by RBAC; relying on the periodic check');
        options.onForbidden?.(error);
        return;
      }
      // A watch that lived a while and then ended is the normal server-side timeout: reconnect at once.
      if (error && Date.now() - openedAt < 5000) failures++;
      else failures = 0;
      const delay = failures === 0 ? 0 : Math.min(30_000, 500 * 2 ** Math.min(failures, 6));
      if (failures > 0) {
        logger.debug(
          { watch: what, err: String((error as Error)?.message ?? error), delayMs: delay },
          'watch ended',
        );
      }
      timer = setTimeout(() => void connect(), delay);
      timer.unref();
    };
    try {
      const handle = await options.watch(options.path, options.query, options.onEvent, done);
      if (stopped) handle.abort();
      else current = handle;
    } catch (error) {
      done(error);
    }
  };
  void connect();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      current?.abort();
      current = undefined;
    },
  };
}
