// The certificate component's watches (its Secret, its webhook configurations) on the project's one
// self-healing list+watch, kube/informer.ts: list, then watch from the list's resourceVersion, by one
// field or label selector; every failure restarts with backoff and resumes where it left off.
//
// Events are hints to re-check, never the only source of truth: the caller checks periodically
// anyway, so a missed event costs at most one interval. Hence no periodic resync (it would only
// repeat what the periodic check does), and a 403 (RBAC forbids the list or the watch) is logged
// once and the watch given up instead of retried: the periodic check is then all there is.
import { KubeConfig } from '@kubernetes/client-node';
import type { KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

import { errorStatus } from '../kube/errors.ts';
import { Informer } from '../kube/informer.ts';
import type { WatchFn } from '../kube/informer.ts';

/** What the list and the watch select: objects by name (`metadata.name=...`) or by labels. */
export interface WatchSelector {
  fieldSelector?: string;
  labelSelector?: string;
}

/** The API calls behind a watch; tests replace them. */
export interface WatchCalls<T extends KubernetesObject> {
  /** The list the watch starts from (its resourceVersion), by the watch's selector. */
  list(selector: WatchSelector): Promise<KubernetesListObject<T>>;
  watch: WatchFn;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface KeptWatch {
  stop(): Promise<void>;
}

export interface KeepWatchingOptions<T extends KubernetesObject> {
  /** Collection path the watch uses, e.g. `/api/v1/namespaces/ns/secrets`. */
  path: string;
  selector: WatchSelector;
  calls: WatchCalls<T>;
  /** For logs and the informer metrics: what is watched. */
  what: string;
  logger: Logger;
  /** Where the informer metrics go; default a registry of its own. */
  registry?: Registry;
  /**
   * An object as listed or watched: the first list delivers every object as ADDED, later lists
   * (after a 410) what changed meanwhile; an object deleted is delivered with its last known state.
   */
  onEvent(type: WatchEventType, object: T): void;
  /** Called once when RBAC forbids the list or the watch; it is not retried. */
  onForbidden?(error: unknown): void;
  /** Keep only what onEvent reads (applied before the informer caches an object). */
  transform?(object: T): T;
  /** First restart delay after a failure (doubling, up to 30 s); default 1 s. */
  restartBaseMs?: number;
}

export function keepWatching<T extends KubernetesObject>(options: KeepWatchingOptions<T>): KeptWatch {
  const { logger, what, calls, selector } = options;
  const informer = new Informer<T>({
    // Only for client-node's Watch class, which the informer wraps: every call goes through calls.watch.
    kubeConfig: new KubeConfig(),
    source: {
      resource: options.path.split('/').at(-1)!,
      path: options.path,
      list: () => calls.list(selector),
      ...(selector.fieldSelector !== undefined ? { fieldSelector: selector.fieldSelector } : {}),
      ...(selector.labelSelector !== undefined ? { labelSelector: selector.labelSelector } : {}),
      ...(options.transform ? { transform: options.transform } : {}),
    },
    name: `certs: ${what}`,
    logger,
    ...(options.registry ? { registry: options.registry } : {}),
    watch: calls.watch,
    resyncMs: 0,
    ...(options.restartBaseMs !== undefined ? { restartBaseMs: options.restartBaseMs } : {}),
    onForbidden: (error) => {
      logger.warn(
        { watch: what, status: errorStatus(error) },
        'watch forbidden by RBAC; relying on the periodic check',
      );
      options.onForbidden?.(error);
    },
  });
  informer.addEventHandler({
    onAdd: (object) => options.onEvent('ADDED', object),
    // old === object only on a periodic resync, which is off; never a change.
    onUpdate: (object, old) => {
      if (object !== old) options.onEvent('MODIFIED', object);
    },
    onDelete: (object) => options.onEvent('DELETED', object),
  });
  informer.start();
  return { stop: () => informer.stop() };
}
