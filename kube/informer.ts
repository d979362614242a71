// A list+watch cache around client-node's ListWatch that keeps itself alive.
//
// client-node 2.x relists on 410 Gone and reconnects after its 30 s client timeout, but on any
// other error (API server restarting, connection reset, 5xx, a CRD not installed yet) it fires
// 'error' and stops for good, with a cache that silently goes stale. Here every such error
// restarts it with exponential backoff (except a 403 when the caller asked, with onForbidden,
// to stop on it instead); the restart resumes from the last resourceVersion (and
// relists through the 410 path when that is too old), so the cache diffs instead of replaying
// everything as new.
//
// Also guarded here, because client-node calls into us from async callbacks whose rejections
// nobody handles (an unhandled rejection ends the process on Node 24): a throwing event handler,
// a watch request that throws before it starts (e.g. exec credential plugins), and a stop() that
// races a list or a connect still in progress (client-node would open the watch anyway).
import { ListWatch, Watch } from '@kubernetes/client-node';
import type { KubeConfig, KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Counter, Gauge, Registry } from 'prom-client';

import { realClock } from './clock.ts';
import { errorMessage, errorReason, isForbidden } from './errors.ts';
import type { Clock, Timer } from './clock.ts';

/** What to list and watch. The list and the watch must select the same objects. */
export interface ListWatchSource<T extends KubernetesObject> {
  /** For logs and metrics, e.g. `configmaps` or `buildkits.buildkit.seatgeek.io`. */
  resource: string;
  /** Collection path the watch uses, e.g. `/api/v1/namespaces/ns/configmaps`. */
  path: string;
  list(): Promise<KubernetesListObject<T>>;
  labelSelector?: string;
  fieldSelector?: string;
  /**
   * Turns a watch event's raw JSON into the shape `list` returns. Typed client-node APIs turn
   * timestamps into Date objects in lists but watches deliver strings; without this a cache would
   * hold both shapes depending on how an object arrived.
   */
  fromWatch?(raw: unknown): T;
  /**
   * Applied to every object before it enters the cache, listed or watched (after fromWatch):
   * keep only what the controller reads (see slim.ts).
   */
  transform?(object: T): T;
}

/** client-node's Watch.watch; injectable so tests can break connections. */
export type WatchFn = (
  path: string,
  query: Record<string, string | number | boolean | undefined>,
  onEvent: (type: string, object: unknown, raw: unknown) => void,
  onDone: (error: unknown) => void,
) => Promise<{ abort(): void }>;

export interface InformerHandlers<T> {
  onAdd?(object: T): void;
  /** `old` is the object as the cache held it before; on a resync `old === object`. */
  onUpdate?(object: T, old: T): void;
  /** The last state the cache knew (the final state when the watch saw the deletion). */
  onDelete?(object: T): void;
}

export interface InformerOptions<T extends KubernetesObject> {
  kubeConfig: KubeConfig;
  source: ListWatchSource<T>;
  logger: Logger;
  registry?: Registry;
  /** For logs and the `informer` metric label. Default: the source's resource. */
  name?: string;
  /** Every cached object is delivered again as an update this often. Default 10 minutes; 0 turns it off. */
  resyncMs?: number;
  /** First delay before restarting a failed list/watch; doubles per consecutive failure. Default 1 s. */
  restartBaseMs?: number;
  /** Cap of the restart delay. Default 30 s (client-node's own reconnect cap). */
  restartMaxMs?: number;
  clock?: Clock;
  watch?: WatchFn;
  /**
   * When set, a 403 from the list or the watch (RBAC forbids it) stops the informer for good
   * instead of restarting it, and this is called once with the error; the cache keeps what it
   * held. For callers for which the watch is only a shortcut (they also poll) and a permission
   * that is missing now will not appear by itself. The informer does not log the 403 as a
   * failure: the callback knows what it means. Without it a 403 is restarted like any failure.
   */
  onForbidden?: (error: unknown) => void;
}

export class InformerStoppedError extends Error {
  constructor(name: string) {
    super(`informer ${name} stopped`);
    this.name = 'InformerStoppedError';
  }
}

interface InformerMetrics {
  restarts: Counter<'informer' | 'reason'>;
  events: Counter<'informer' | 'type'>;
  resyncs: Counter<'informer'>;
  handlerErrors: Counter<'informer'>;
  synced: Gauge<'informer'>;
  objects: Gauge<'informer'>;
  informers: Set<Informer<KubernetesObject>>;
}

const metricsByRegistry = new WeakMap<Registry, InformerMetrics>();

function informerMetrics(registry: Registry): InformerMetrics {
  const existing = metricsByRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const informers = new Set<Informer<KubernetesObject>>();
  const metrics: InformerMetrics = {
    informers,
    restarts: new Counter({
      name: 'buildkit_fleet_informer_restarts_total',
      help: 'List/watch failures that client-node does not recover from itself and that were restarted, by informer and reason (HTTP status or error code).',
      labelNames: ['informer', 'reason'] as const,
      registers,
    }),
    events: new Counter({
      name: 'buildkit_fleet_informer_watch_events_total',
      help: 'Watch events received, by informer and type (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR).',
      labelNames: ['informer', 'type'] as const,
      registers,
    }),
    resyncs: new Counter({
      name: 'buildkit_fleet_informer_resyncs_total',
      help: 'Periodic resyncs (every cached object delivered again as an update), by informer.',
      labelNames: ['informer'] as const,
      registers,
    }),
    handlerErrors: new Counter({
      name: 'buildkit_fleet_informer_handler_errors_total',
      help: 'Event handlers that threw, by informer.',
      labelNames: ['informer'] as const,
      registers,
    }),
    synced: new Gauge({
      name: 'buildkit_fleet_informer_synced',
      help: '1 once the informer has completed its first list, by informer.',
      labelNames: ['informer'] as const,
      registers,
      collect() {
        for (const i of informers) this.set({ informer: i.name }, i.hasSynced() ? 1 : 0);
      },
    }),
    objects: new Gauge({
      name: 'buildkit_fleet_informer_objects',
      help: 'Objects in the informer cache, by informer.',
      labelNames: ['informer'] as const,
      registers,
      collect() {
        for (const i of informers) this.set({ informer: i.name }, i.size());
      },
    }),
  };
  metricsByRegistry.set(registry, metrics);
  return metrics;
}

const objectKey = (o: KubernetesObject): string => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
const objectFields = (o: KubernetesObject) => ({ namespace: o.metadata?.namespace, name: o.metadata?.name });

export function kubeWatchFn(kc: KubeConfig): WatchFn {
  const watch = new Watch(kc);
  return (path, query, onEvent, onDone) => watch.watch(path, query, onEvent, onDone);
}

export class Informer<T extends KubernetesObject> {
  readonly name: string;
  private readonly source: ListWatchSource<T>;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly metrics: InformerMetrics;
  private readonly resyncMs: number;
  private readonly restartBaseMs: number;
  private readonly restartMaxMs: number;
  private readonly watchFn: WatchFn;
  private readonly onForbidden: ((error: unknown) => void) | undefined;
  private readonly inner: ListWatch<T>;
  private readonly handlers: InformerHandlers<T>[] = [];
  /** What handlers last saw of each object, so updates can carry the old state. */
  private readonly known = new Map<string, T>();

  private started = false;
  private stopped = false;
  private synced = false;
  private failures = 0;
  private restartTimer: Timer | undefined;
  private resyncTimer: Timer | undefined;
  private readonly syncWaiters: { resolve(): void; reject(error: Error): void }[] = [];

  constructor(options: InformerOptions<T>) {
    this.source = options.source;
    this.name = options.name ?? options.source.resource;
    this.logger = options.logger;
    this.clock = options.clock ?? realClock;
    this.metrics = informerMetrics(options.registry ?? new Registry());
    this.resyncMs = options.resyncMs ?? 10 * 60_000;
    this.restartBaseMs = options.restartBaseMs ?? 1000;
    this.restartMaxMs = options.restartMaxMs ?? 30_000;
    this.watchFn = options.watch ?? kubeWatchFn(options.kubeConfig);
    this.onForbidden = options.onForbidden;

    // ListWatch takes a Watch; this one routes through our guards (and an injected WatchFn).
    const open = (path: string, query: Record<string, string>, cb: WatchCallback, done: DoneCallback) =>
      this.openWatch(path, query, cb, done);
    class GuardedWatch extends Watch {
      override watch(path: string, query: Record<string, string>, cb: WatchCallback, done: DoneCallback) {
        // ListWatch only ever calls abort() on what this returns.
        return open(path, query, cb, done) as Promise<AbortController>;
      }
    }
    this.inner = new ListWatch<T>(
      this.source.path,
      new GuardedWatch(options.kubeConfig),
      () => this.listObjects(),
      false,
      this.source.labelSelector,
      this.source.fieldSelector,
    );
    this.inner.on('add', (o) => this.deliverAdd(o));
    this.inner.on('update', (o) => this.deliverUpdate(o));
    this.inner.on('delete', (o) => this.deliverDelete(o));
    this.inner.on('error', (e: unknown) => this.failed(e));
  }

  /**
   * Adds handlers. Objects already cached are delivered to them as adds first (as client-go
   * does), so a handler added late misses nothing. Returns a function that removes them.
   */
  addEventHandler(handlers: InformerHandlers<T>): () => void {
    this.handlers.push(handlers);
    if (this.synced && handlers.onAdd) {
      for (const object of this.inner.list()) this.call(handlers, 'onAdd', object);
    }
    return () => {
      const i = this.handlers.indexOf(handlers);
      if (i >= 0) this.handlers.splice(i, 1);
    };
  }

  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.metrics.informers.add(this as unknown as Informer<KubernetesObject>);
    this.logger.info(
      { informer: this.name, path: this.source.path, labelSelector: this.source.labelSelector },
      'informer starting',
    );
    this.runInner();
    this.scheduleResync();
  }

  /** Stops watching for good; waiters of waitForSync are rejected. The cache stays readable. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.restartTimer?.cancel();
    this.resyncTimer?.cancel();
    this.metrics.informers.delete(this as unknown as Informer<KubernetesObject>);
    for (const w of this.syncWaiters.splice(0)) w.reject(new InformerStoppedError(this.name));
    await this.inner.stop();
    this.logger.info({ informer: this.name }, 'informer stopped');
  }

  hasSynced(): boolean {
    return this.synced;
  }

  /** Resolves once the first list is in the cache and delivered to handlers. */
  waitForSync(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<void> {
    if (this.synced) return Promise.resolve();
    if (this.stopped) return Promise.reject(new InformerStoppedError(this.name));
    return new Promise((resolve, reject) => {
      let timer: Timer | undefined;
      const cleanup = () => {
        timer?.cancel();
        options.signal?.removeEventListener('abort', onAbort);
        const i = this.syncWaiters.indexOf(waiter);
        if (i >= 0) this.syncWaiters.splice(i, 1);
      };
      const waiter = {
        resolve: () => {
          cleanup();
          resolve();
        },
        reject: (error: Error) => {
          cleanup();
          reject(error);
        },
      };
      const onAbort = () => waiter.reject(new Error(`waiting for informer ${this.name} to sync was aborted`));
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (options.timeoutMs !== undefined) {
        timer = this.clock.setTimeout(
          () => waiter.reject(new Error(`informer ${this.name} did not sync within ${options.timeoutMs} ms`)),
          options.timeoutMs,
        );
      }
      this.syncWaiters.push(waiter);
    });
  }

  /** Cached objects, of one namespace or all. */
  list(namespace?: string): readonly T[] {
    return this.inner.list(namespace);
  }

  /** A cached object; `namespace` is undefined for cluster-scoped resources. */
  get(namespace: string | undefined, name: string): T | undefined {
    return this.inner.get(name, namespace);
  }

  size(): number {
    return this.known.size;
  }

  /** The resourceVersion the watch resumes from. */
  resourceVersion(): string {
    return this.inner.latestResourceVersion();
  }

  private runInner(): void {
    // start() rejects only when something below the list/watch threw synchronously; treat it
    // like any other failure rather than leaving the informer dead.
    this.inner.start().catch((error: unknown) => this.failed(error));
  }

  private async listObjects(): Promise<KubernetesListObject<T>> {
    const list = await this.source.list();
    // Stopped while listing: failing here keeps client-node from opening a watch nobody stops.
    if (this.stopped) throw new InformerStoppedError(this.name);
    const transform = this.source.transform?.bind(this.source);
    return transform ? { ...list, items: list.items.map(transform) } : list;
  }

  private async openWatch(
    path: string,
    query: Record<string, string>,
    onEvent: WatchCallback,
    onDone: DoneCallback,
  ): Promise<{ abort(): void }> {
    const idle = new AbortController();
    if (this.stopped) return idle;
    // client-node opens the watch only after the list is in the cache and delivered.
    this.markSynced();
    const fromWatch = this.source.fromWatch?.bind(this.source);
    const transform = this.source.transform?.bind(this.source);
    const convert = (object: unknown): T => {
      const typed = fromWatch ? fromWatch(object) : (object as T);
      return transform ? transform(typed) : typed;
    };
    const event = (type: string, object: unknown, raw: unknown) => {
      if (this.stopped) return;
      this.metrics.events.inc({ informer: this.name, type });
      if (type === 'ERROR') {
        const status = object as { code?: number; message?: string };
        this.logger.debug(
          { informer: this.name, code: status?.code, reason: status?.message },
          'watch error event (410 relists)',
        );
      } else {
        // Any event proves the watch works: the next failure starts from the short delay again.
        this.failures = 0;
      }
      const converted = type !== 'ERROR' && type !== 'BOOKMARK' ? convert(object) : object;
      onEvent(type, converted, raw);
    };
    const done = (error: unknown) => {
      // A watch that ran until it was closed or timed out was healthy.
      if (!error || (error as Error).name === 'TimeoutError') this.failures = 0;
      onDone(error);
    };
    try {
      const request = await this.watchFn(path, query, event, done);
      if (this.stopped) request.abort();
      return request;
    } catch (error) {
      done(error);
      return idle;
    }
  }

  private failed(error: unknown): void {
    if (this.stopped) return;
    if (this.onForbidden && isForbidden(error)) return this.forbidden(this.onForbidden, error);
    this.failures++;
    const delayMs = Math.min(this.restartMaxMs, this.restartBaseMs * 2 ** Math.min(this.failures - 1, 30));
    const reason = errorReason(error);
    this.metrics.restarts.inc({ informer: this.name, reason });
    this.logger.warn(
      { informer: this.name, reason, err: errorMessage(error), failures: this.failures, delayMs },
      'list/watch failed; restarting',
    );
    this.restartTimer?.cancel();
    this.restartTimer = this.clock.setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.stopped) this.runInner();
    }, delayMs);
  }

  private forbidden(onForbidden: (error: unknown) => void, error: unknown): void {
    this.logger.debug(
      { informer: this.name, reason: errorReason(error), err: errorMessage(error) },
      'list/watch forbidden; stopping (onForbidden)',
    );
    void this.stop();
    try {
      onForbidden(error);
    } catch (e) {
      this.logger.error({ informer: this.name, err: errorMessage(e) }, 'onForbidden callback threw');
    }
  }

  private markSynced(): void {
    if (this.synced) return;
    this.synced = true;
    this.logger.info({ informer: this.name, objects: this.known.size }, 'informer synced');
    for (const w of this.syncWaiters.splice(0)) w.resolve();
  }

  private scheduleResync(): void {
    if (this.resyncMs <= 0 || this.stopped) return;
    this.resyncTimer = this.clock.setTimeout(() => {
      if (this.stopped) return;
      if (this.synced) {
        this.metrics.resyncs.inc({ informer: this.name });
        this.logger.debug({ informer: this.name, objects: this.known.size }, 'resync');
        for (const object of this.inner.list()) {
          this.known.set(objectKey(object), object);
          for (const h of [...this.handlers]) this.call(h, 'onUpdate', object, object);
        }
      }
      this.scheduleResync();
    }, this.resyncMs);
  }

  private deliverAdd(object: T): void {
    if (this.stopped) return;
    this.known.set(objectKey(object), object);
    for (const h of [...this.handlers]) this.call(h, 'onAdd', object);
  }

  private deliverUpdate(object: T): void {
    if (this.stopped) return;
    const key = objectKey(object);
    const old = this.known.get(key) ?? object;
    this.known.set(key, object);
    for (const h of [...this.handlers]) this.call(h, 'onUpdate', object, old);
  }

  private deliverDelete(object: T): void {
    if (this.stopped) return;
    this.known.delete(objectKey(object));
    for (const h of [...this.handlers]) this.call(h, 'onDelete', object);
  }

  private call(handlers: InformerHandlers<T>, which: keyof InformerHandlers<T>, object: T, old?: T): void {
    try {
      if (which === 'onUpdate') handlers.onUpdate?.(object, old ?? object);
      else handlers[which]?.(object);
    } catch (error) {
      this.metrics.handlerErrors.inc({ informer: this.name });
      this.logger.error(
        { informer: this.name, ...objectFields(object), handler: which, err: errorMessage(error) },
        'informer event handler threw; event dropped for this handler',
      );
    }
  }
}

type WatchCallback = (phase: string, apiObj: unknown, watchObj?: unknown) => void;
type DoneCallback = (err: unknown) => void;
