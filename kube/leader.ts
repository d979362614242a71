// Leader election on a coordination.k8s.io/v1 Lease, after client-go's leaderelection package:
// candidates try every retryPeriod (jittered) to take a Lease that is free or expired, the leader
// renews it every retryPeriod, every write carries the resourceVersion it read (409 = another
// replica wrote first), and a leader that cannot renew within renewDeadline stops leading before
// anyone else may take the Lease (leaseDuration > renewDeadline).
//
// Expiry, as client-go does it, is judged by when *this* replica saw the Lease last change
// (observed time), not by the renewTime another replica's clock wrote, so clock skew between
// replicas cannot make two of them lead. The written renewTime still counts when it is older than
// leaseDuration plus maxClockSkew: a replica starting long after the last leader died takes over
// at once instead of watching a dead Lease for a full leaseDuration.
//
// Differences from client-go, each on the safe side:
// - a leader that reads the Lease and finds another valid holder steps down at once instead of
//   retrying until its renew deadline;
// - the work started in onStartedLeading may return a promise; stop() and step-down wait for it
//   before onStoppedLeading and before releasing, so the next leader never overlaps with
//   this one's in-flight writes. Should it end on its own, the Lease is given up: a leader that
//   does no work must not keep another replica from leading.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

import { CoordinationV1Api, V1MicroTime } from '@kubernetes/client-node';
import type { KubeConfig, V1Lease, V1LeaseSpec } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Counter, Gauge, Registry } from 'prom-client';

import { realClock, sleep } from './clock.ts';
import type { Clock } from './clock.ts';
import { errorMessage, errorReason, isConflict, isNotFound } from './errors.ts';

/** The Lease calls the elector makes; injectable for tests. */
export interface LeaseClient {
  get(namespace: string, name: string): Promise<V1Lease>;
  create(namespace: string, lease: V1Lease): Promise<V1Lease>;
  replace(namespace: string, name: string, lease: V1Lease): Promise<V1Lease>;
}

export function kubeLeaseClient(kc: KubeConfig): LeaseClient {
  const api = kc.makeApiClient(CoordinationV1Api);
  return {
    get: (namespace, name) => api.readNamespacedLease({ namespace, name }),
    create: (namespace, body) => api.createNamespacedLease({ namespace, body }),
    replace: (namespace, name, body) => api.replaceNamespacedLease({ namespace, name, body }),
  };
}

export interface LeaderElectorOptions {
  namespace: string;
  name: string;
  /** Default: hostname + '_' + random hex, unique per process even in one pod. */
  identity?: string;
  kubeConfig?: KubeConfig;
  /** Instead of kubeConfig. */
  client?: LeaseClient;
  logger: Logger;
  registry?: Registry;
  clock?: Clock;
  /** How long others wait after the last renewal before taking over. Default 15 s; whole seconds on the Lease. */
  leaseDurationMs?: number;
  /** A leader that has not renewed for this long stops leading. Default 10 s. */
  renewDeadlineMs?: number;
  /** Between attempts to acquire or renew. Default 2 s. */
  retryPeriodMs?: number;
  /** Acquire attempts wait retryPeriod * (1 + random * jitter). Default 1.2 (client-go). */
  jitter?: number;
  /** See the file comment. Default: leaseDuration. */
  maxClockSkewMs?: number;
  /**
   * Called on becoming leader. `signal` aborts when leadership ends. A returned promise is the
   * leading work: it is awaited before onStoppedLeading and before the Lease is released.
   */
  onStartedLeading(signal: AbortSignal): void | Promise<void>;
  /** Called after leadership ended (and the leading work settled). */
  onStoppedLeading?(): void;
  /** Called when the holder this replica observes changes (including to itself, or to nobody: ''). */
  onNewLeader?(identity: string): void;
}

interface LeaderMetrics {
  isLeader: Gauge<'lease'>;
  transitions: Counter<'lease' | 'event'>;
  errors: Counter<'lease' | 'reason'>;
}

const metricsByRegistry = new WeakMap<Registry, LeaderMetrics>();

function leaderMetrics(registry: Registry): LeaderMetrics {
  const existing = metricsByRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const metrics: LeaderMetrics = {
    isLeader: new Gauge({
      name: 'buildkit_fleet_leader_is_leader',
      help: '1 while this replica leads, by lease (namespace/name).',
      labelNames: ['lease'] as const,
      registers,
    }),
    transitions: new Counter({
      name: 'buildkit_fleet_leader_transitions_total',
      help: 'Leadership changes of this replica, by lease and event: acquired, lost (renewal failed or Lease taken), released (graceful stop or leading work ended).',
      labelNames: ['lease', 'event'] as const,
      registers,
    }),
    errors: new Counter({
      name: 'buildkit_fleet_leader_errors_total',
      help: 'Failed Lease reads and writes, by lease and reason (conflict, http_<status>, timeout, error code).',
      labelNames: ['lease', 'reason'] as const,
      registers,
    }),
  };
  metricsByRegistry.set(registry, metrics);
  return metrics;
}

export function defaultIdentity(): string {
  return `${hostname()}_${randomBytes(4).toString('hex')}`;
}

class TimeoutError extends Error {
  constructor(ms: number) {
    super(`Lease request took longer than ${ms} ms`);
    this.name = 'TimeoutError';
  }
}

/** The request may still finish later; a late renewal is harmless (we still hold the Lease). */
function withTimeout<T>(clock: Clock, promise: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = clock.setTimeout(() => reject(new TimeoutError(ms)), ms);
    promise.then(
      (value) => {
        timer.cancel();
        resolve(value);
      },
      (error: unknown) => {
        timer.cancel();
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

/** V1MicroTime fields arrive as strings (client-node does not deserialize them) but are typed Date. */
function timeMs(value: Date | string | undefined): number | undefined {
  if (value === undefined || value === null) return undefined;
  const ms = new Date(value).getTime();
  return Number.isNaN(ms) ? undefined : ms;
}

function reasonOf(error: unknown): string {
  if (isConflict(error)) return 'conflict';
  if ((error as { name?: unknown } | null | undefined)?.name === 'TimeoutError') return 'timeout';
  const reason = errorReason(error);
  // error names (TypeError, ...) are not worth a label value of their own here
  return /^(http_[0-9]+|[A-Z_]+)$/.test(reason) ? reason : 'error';
}

type AttemptResult = { ok: true } | { ok: false; heldBy?: string; error?: unknown };

export class LeaderElector {
  readonly identity: string;
  private readonly namespace: string;
  private readonly name: string;
  private readonly lease: string;
  private readonly client: LeaseClient;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly metrics: LeaderMetrics;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private readonly jitter: number;
  private readonly maxClockSkewMs: number;
  private readonly options: LeaderElectorOptions;

  /** The Lease as last read or written by us: the resourceVersion our next write must carry. */
  private current: V1Lease | undefined;
  /** Holder, renewTime and resourceVersion we last saw, and when we first saw them so. */
  private observed: { holder: string; renewTime: string; resourceVersion: string } | undefined;
  private observedAt = 0;
  private lastHolder: string | undefined;

  private leading = false;
  private running: Promise<void> | undefined;
  private readonly stopping = new AbortController();

  constructor(options: LeaderElectorOptions) {
    this.options = options;
    this.namespace = options.namespace;
    this.name = options.name;
    this.lease = `${options.namespace}/${options.name}`;
    this.identity = options.identity ?? defaultIdentity();
    if (!options.client && !options.kubeConfig) throw new Error('LeaderElector needs kubeConfig or client');
    this.client = options.client ?? kubeLeaseClient(options.kubeConfig!);
    this.logger = options.logger;
    this.clock = options.clock ?? realClock;
    this.metrics = leaderMetrics(options.registry ?? new Registry());
    this.leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = options.retryPeriodMs ?? 2_000;
    this.jitter = options.jitter ?? 1.2;
    this.maxClockSkewMs = options.maxClockSkewMs ?? this.leaseDurationMs;
    // client-go's own checks: otherwise a leader could still act after others may take over.
    if (this.leaseDurationMs <= this.renewDeadlineMs) {
      throw new Error('leaseDurationMs must be greater than renewDeadlineMs');
    }
    if (this.renewDeadlineMs <= this.retryPeriodMs) {
      throw new Error('renewDeadlineMs must be greater than retryPeriodMs');
    }
    if (this.leaseDurationMs % 1000 !== 0) throw new Error('leaseDurationMs must be whole seconds');
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** The holder last seen on the Lease ('' when released), undefined before the first read. */
  leader(): string | undefined {
    return this.lastHolder;
  }

  /** Starts campaigning; keeps doing so after losing leadership, until stop(). */
  start(): void {
    if (this.running || this.stopping.signal.aborted) return;
    this.metrics.isLeader.set({ lease: this.lease }, 0);
    this.logger.info(
      { lease: this.lease, identity: this.identity, leaseDurationMs: this.leaseDurationMs },
      'leader election: campaigning',
    );
    this.running = this.campaign().catch((error: unknown) => {
      // Not expected (every step catches its errors); logged so it cannot go unnoticed.
      this.logger.error({ lease: this.lease, err: errorMessage(error) }, 'leader election loop failed');
    });
  }

  /**
   * Stops campaigning. A leader ends its term (aborts the signal, waits for the leading work,
   * calls onStoppedLeading) and releases the Lease so another replica takes over at once.
   */
  async stop(): Promise<void> {
    this.stopping.abort();
    await this.running;
  }

  private async campaign(): Promise<void> {
    const signal = this.stopping.signal;
    while (!signal.aborted) {
      const result = await this.attempt(this.renewDeadlineMs);
      if (signal.aborted) {
        // Acquired just as stop() came: give it back at once.
        if (result.ok) await this.release();
        break;
      }
      // After a term too: a replica whose leading work keeps ending must not grab the Lease back
      // before the others had their turn.
      if (result.ok) await this.lead();
      const wait = this.retryPeriodMs * (1 + Math.random() * this.jitter);
      await sleep(this.clock, wait, signal);
    }
  }

  private async lead(): Promise<void> {
    const term = new AbortController();
    const ended = new AbortController();
    this.leading = true;
    this.metrics.isLeader.set({ lease: this.lease }, 1);
    this.metrics.transitions.inc({ lease: this.lease, event: 'acquired' });
    this.logger.info({ lease: this.lease, identity: this.identity }, 'became leader');

    let work: Promise<void> = Promise.resolve();
    try {
      const returned = this.options.onStartedLeading(term.signal);
      if (returned && typeof (returned as Promise<void>).then === 'function') {
        work = Promise.resolve(returned).then(
          () => {
            if (!term.signal.aborted) {
              this.logger.warn({ lease: this.lease }, 'leading work ended on its own; giving up leadership');
            }
          },
          (error: unknown) => {
            this.logger.error(
              { lease: this.lease, err: errorMessage(error) },
              'leading work failed; giving up leadership',
            );
          },
        );
        void work.then(() => ended.abort());
      }
    } catch (error) {
      this.logger.error(
        { lease: this.lease, err: errorMessage(error) },
        'onStartedLeading threw; giving up leadership',
      );
      ended.abort();
    }

    const outcome = await this.renewLoop(ended.signal);

    this.leading = false;
    term.abort();
    this.metrics.isLeader.set({ lease: this.lease }, 0);
    await work;
    try {
      this.options.onStoppedLeading?.();
    } catch (error) {
      this.logger.error({ lease: this.lease, err: errorMessage(error) }, 'onStoppedLeading threw');
    }
    if (outcome === 'lost') {
      this.metrics.transitions.inc({ lease: this.lease, event: 'lost' });
    } else {
      this.metrics.transitions.inc({ lease: this.lease, event: 'released' });
      await this.release();
    }
  }

  /** Renews until stopping ('stop'), the leading work ends ('ended') or renewal fails ('lost'). */
  private async renewLoop(ended: AbortSignal): Promise<'stop' | 'ended' | 'lost'> {
    const stopping = this.stopping.signal;
    const either = AbortSignal.any([stopping, ended]);
    let lastRenew = this.clock.now();
    for (;;) {
      await sleep(this.clock, this.retryPeriodMs, either);
      if (stopping.aborted) return 'stop';
      if (ended.aborted) return 'ended';
      const remaining = lastRenew + this.renewDeadlineMs - this.clock.now();
      const result = remaining > 0 ? await this.attempt(remaining) : { ok: false as const };
      if (result.ok) {
        lastRenew = this.clock.now();
        continue;
      }
      if (result.heldBy !== undefined) {
        this.logger.warn(
          { lease: this.lease, identity: this.identity, holder: result.heldBy },
          'stopped leading: the Lease is held by another replica',
        );
        return 'lost';
      }
      const sinceRenew = this.clock.now() - lastRenew;
      if (sinceRenew >= this.renewDeadlineMs) {
        this.logger.warn(
          {
            lease: this.lease,
            identity: this.identity,
            sinceRenewMs: sinceRenew,
            renewDeadlineMs: this.renewDeadlineMs,
            err: result.error === undefined ? undefined : errorMessage(result.error),
          },
          'stopped leading: could not renew the Lease within the renew deadline',
        );
        return 'lost';
      }
    }
  }

  /** One tryAcquireOrRenew, given `timeoutMs` for all its requests together. */
  private async attempt(timeoutMs: number): Promise<AttemptResult> {
    try {
      return await this.tryAcquireOrRenew(timeoutMs);
    } catch (error) {
      const reason = reasonOf(error);
      this.metrics.errors.inc({ lease: this.lease, reason });
      this.logger[this.leading ? 'warn' : 'debug'](
        { lease: this.lease, identity: this.identity, reason, err: errorMessage(error) },
        this.leading ? 'Lease renewal failed' : 'Lease acquisition failed',
      );
      return { ok: false, error };
    }
  }

  private async tryAcquireOrRenew(timeoutMs: number): Promise<AttemptResult> {
    const now = this.clock.now();
    const deadline = now + timeoutMs;
    const call = <T>(promise: Promise<T>) =>
      withTimeout(this.clock, promise, Math.max(1, deadline - this.clock.now()));

    // Fast path while leading: write over what we wrote last; a 409 means someone else wrote.
    if (this.leading && this.current && this.current.spec?.holderIdentity === this.identity) {
      try {
        this.current = await call(
          this.client.replace(this.namespace, this.name, this.withSpec(this.current, this.renewedSpec(now))),
        );
        this.observe(this.current, this.clock.now());
        return { ok: true };
      } catch (error) {
        if (!isConflict(error)) throw error;
        this.metrics.errors.inc({ lease: this.lease, reason: 'conflict' });
        // Somebody else wrote: fall through and judge the Lease as it is now.
      }
    }

    let lease: V1Lease;
    try {
      lease = await call(this.client.get(this.namespace, this.name));
    } catch (error) {
      if (!isNotFound(error)) throw error;
      const body: V1Lease = {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: this.name, namespace: this.namespace },
        spec: {
          holderIdentity: this.identity,
          leaseDurationSeconds: this.leaseDurationMs / 1000,
          acquireTime: new V1MicroTime(now),
          renewTime: new V1MicroTime(now),
          leaseTransitions: 0,
        },
      };
      try {
        this.current = await call(this.client.create(this.namespace, body));
      } catch (createError) {
        // Another replica created it between our read and our create.
        if (isConflict(createError)) return { ok: false };
        throw createError;
      }
      this.observe(this.current, this.clock.now());
      return { ok: true };
    }

    const seenAt = this.clock.now();
    this.observe(lease, seenAt);
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    if (holder !== '' && holder !== this.identity && !this.expired(spec, seenAt)) {
      this.current = lease;
      return { ok: false, heldBy: holder };
    }

    const taking = holder !== this.identity;
    const next: V1LeaseSpec = taking
      ? {
          ...spec,
          holderIdentity: this.identity,
          leaseDurationSeconds: this.leaseDurationMs / 1000,
          acquireTime: new V1MicroTime(now),
          renewTime: new V1MicroTime(now),
          leaseTransitions: (spec.leaseTransitions ?? 0) + 1,
        }
      : this.renewedSpec(now, spec);
    if (taking && holder !== '') {
      this.logger.info(
        { lease: this.lease, identity: this.identity, previous: holder },
        'taking over an expired Lease',
      );
    }
    try {
      this.current = await call(this.client.replace(this.namespace, this.name, this.withSpec(lease, next)));
    } catch (error) {
      if (isConflict(error)) {
        this.metrics.errors.inc({ lease: this.lease, reason: 'conflict' });
        return { ok: false };
      }
      throw error;
    }
    this.observe(this.current, this.clock.now());
    return { ok: true };
  }

  private renewedSpec(now: number, base: V1LeaseSpec = this.current?.spec ?? {}): V1LeaseSpec {
    return {
      ...base,
      holderIdentity: this.identity,
      leaseDurationSeconds: this.leaseDurationMs / 1000,
      // Keep acquireTime as a real MicroTime: the string we read back would be resent as is (fine),
      // but a Date would lose the microsecond format the API server insists on.
      acquireTime: toMicroTime(base.acquireTime) ?? new V1MicroTime(now),
      renewTime: new V1MicroTime(now),
    };
  }

  private withSpec(lease: V1Lease, spec: V1LeaseSpec): V1Lease {
    return {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { ...lease.metadata, name: this.name, namespace: this.namespace },
      spec,
    };
  }

  private expired(spec: V1LeaseSpec, now: number): boolean {
    const durationMs = (spec.leaseDurationSeconds ?? 0) * 1000;
    if (now >= this.observedAt + durationMs) return true;
    const renewed = timeMs(spec.renewTime);
    return renewed !== undefined && now >= renewed + durationMs + this.maxClockSkewMs;
  }

  private observe(lease: V1Lease, at: number): void {
    const record = {
      holder: lease.spec?.holderIdentity ?? '',
      renewTime: String(lease.spec?.renewTime ?? ''),
      resourceVersion: lease.metadata?.resourceVersion ?? '',
    };
    const o = this.observed;
    if (
      !o ||
      o.holder !== record.holder ||
      o.renewTime !== record.renewTime ||
      o.resourceVersion !== record.resourceVersion
    ) {
      this.observed = record;
      this.observedAt = at;
    }
    if (record.holder !== this.lastHolder) {
      const previous = this.lastHolder;
      this.lastHolder = record.holder;
      this.logger.info(
        { lease: this.lease, identity: this.identity, holder: record.holder || undefined, previous },
        record.holder ? 'Lease holder changed' : 'Lease released by its holder',
      );
      try {
        this.options.onNewLeader?.(record.holder);
      } catch (error) {
        this.logger.error({ lease: this.lease, err: errorMessage(error) }, 'onNewLeader threw');
      }
    }
  }

  /** Gives the Lease up so another replica takes it on its next try instead of after expiry. */
  private async release(): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const lease = this.current;
      if (!lease || lease.spec?.holderIdentity !== this.identity) return;
      const now = this.clock.now();
      // client-go's release: no holder, a 1 s duration, renewTime now.
      const spec: V1LeaseSpec = {
        ...lease.spec,
        holderIdentity: '',
        leaseDurationSeconds: 1,
        acquireTime: toMicroTime(lease.spec?.acquireTime),
        renewTime: new V1MicroTime(now),
      };
      try {
        this.current = await withTimeout(
          this.clock,
          this.client.replace(this.namespace, this.name, this.withSpec(lease, spec)),
          this.renewDeadlineMs,
        );
        this.observe(this.current, this.clock.now());
        this.logger.info({ lease: this.lease, identity: this.identity }, 'released the Lease');
        return;
      } catch (error) {
        if (isConflict(error)) {
          // Changed since our last write: release only if it is still ours.
          try {
            this.current = await withTimeout(
              this.clock,
              this.client.get(this.namespace, this.name),
              this.renewDeadlineMs,
            );
            continue;
          } catch {
            // fall through to the log below
          }
        }
        this.logger.warn(
          { lease: this.lease, identity: this.identity, reason: reasonOf(error), err: errorMessage(error) },
          'could not release the Lease; others take over once it expires',
        );
        return;
      }
    }
  }
}

function toMicroTime(value: Date | string | undefined): V1MicroTime | undefined {
  const ms = timeMs(value);
  return ms === undefined ? undefined : new V1MicroTime(ms);
}
