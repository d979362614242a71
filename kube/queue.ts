// A work queue in the style of client-go's workqueue: keys, not objects, so many events about one
// object collapse into one reconcile of its latest state; a key is never worked on by two workers
// at once; failures back off per key (and overall, through a token bucket) instead of spinning.
//
// Shutdown stops handing out keys and waits for the ones being worked on. Keys still queued are
// dropped on purpose: the queue stops when this replica stops leading, and the next leader's
// informers list everything again, so nothing is lost, while working on it here would be acting
// without the lease.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Logger } from 'pino';

import { realClock } from './clock.ts';
import type { Clock, Timer } from './clock.ts';

/** What a worker says about the key it was given. */
export type WorkResult = 'done' | 'retry' | { requeueAfter: number };

export type Worker<K extends string> = (key: K, signal: AbortSignal) => WorkResult | Promise<WorkResult>;

export interface WorkQueueOptions {
  /** For logs and the `name` label of the metrics. */
  name: string;
  logger: Logger;
  registry?: Registry;
  clock?: Clock;
  /** First retry delay of a key; doubles with every further failure. Default 5 ms (client-go). */
  baseDelayMs?: number;
  /** Cap of the per-key backoff. Default 5 minutes. */
  maxDelayMs?: number;
  /** Overall retry rate (token bucket refill per second). Default 10 (client-go). */
  qps?: number;
  /** Token bucket size. Default 100 (client-go). */
  burst?: number;
}

/** client-go's ItemExponentialFailureRateLimiter: base * 2^failures, capped, until forgotten. */
export class ExponentialBackoff<K> {
  private readonly failures = new Map<K, number>();
  private readonly baseMs: number;
  private readonly maxMs: number;

  constructor(baseMs: number, maxMs: number) {
    this.baseMs = baseMs;
    this.maxMs = maxMs;
  }

  when(key: K): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    // 2^n overflows to Infinity long before it matters; the cap takes care of that.
    return Math.min(this.maxMs, this.baseMs * 2 ** n);
  }

  retries(key: K): number {
    return this.failures.get(key) ?? 0;
  }

  forget(key: K): void {
    this.failures.delete(key);
  }
}

/**
 * A token bucket handing out reservations, like golang.org/x/time/rate's Reserve: each call takes
 * a token now and says how long to wait until that token would have been there. Bounds the total
 * retry rate when many keys fail at once (e.g. the API server is down).
 */
export class TokenBucket {
  private readonly qps: number;
  private readonly burst: number;
  private readonly clock: Clock;
  private tokens: number;
  private last: number;

  constructor(qps: number, burst: number, clock: Clock) {
    this.qps = qps;
    this.burst = burst;
    this.clock = clock;
    this.tokens = burst;
    this.last = clock.now();
  }

  /** Milliseconds to wait before acting on the token taken now. */
  reserve(): number {
    const now = this.clock.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.qps);
    this.last = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.qps) * 1000);
  }
}

interface QueueMetrics {
  depth: Gauge<'name'>;
  adds: Counter<'name'>;
  retries: Counter<'name'>;
  queueDuration: Histogram<'name'>;
  workDuration: Histogram<'name'>;
  longestRunning: Gauge<'name'>;
  unfinishedWork: Gauge<'name'>;
  /** Live queues, read when the registry is scraped. */
  queues: Set<WorkQueue<string>>;
}

const metricsByRegistry = new WeakMap<Registry, QueueMetrics>();

const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

function queueMetrics(registry: Registry): QueueMetrics {
  const existing = metricsByRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const queues = new Set<WorkQueue<string>>();
  const labelNames = ['name'] as const;
  const metrics: QueueMetrics = {
    queues,
    depth: new Gauge({
      name: 'buildkit_fleet_workqueue_depth',
      help: 'Keys waiting to be worked on (not counting delayed retries), by queue.',
      labelNames,
      registers,
      collect() {
        for (const q of queues) this.set({ name: q.name }, q.len());
      },
    }),
    adds: new Counter({
      name: 'buildkit_fleet_workqueue_adds_total',
      help: 'Keys added to the queue (a key already waiting is not counted again), by queue.',
      labelNames,
      registers,
    }),
    retries: new Counter({
      name: 'buildkit_fleet_workqueue_retries_total',
      help: 'Keys requeued with backoff after a failed attempt, by queue.',
      labelNames,
      registers,
    }),
    queueDuration: new Histogram({
      name: 'buildkit_fleet_workqueue_queue_duration_seconds',
      help: 'How long a key waited in the queue before a worker took it, by queue.',
      labelNames,
      buckets: DURATION_BUCKETS,
      registers,
    }),
    workDuration: new Histogram({
      name: 'buildkit_fleet_workqueue_work_duration_seconds',
      help: 'How long one worker call took, by queue.',
      labelNames,
      buckets: DURATION_BUCKETS,
      registers,
    }),
    longestRunning: new Gauge({
      name: 'buildkit_fleet_workqueue_longest_running_processor_seconds',
      help: 'How long the longest running worker call has been running, by queue (stuck workers show here).',
      labelNames,
      registers,
      collect() {
        for (const q of queues) this.set({ name: q.name }, q.longestRunningMs() / 1000);
      },
    }),
    unfinishedWork: new Gauge({
      name: 'buildkit_fleet_workqueue_unfinished_work_seconds',
      help: 'Sum of how long the worker calls now running have been running, by queue.',
      labelNames,
      registers,
      collect() {
        for (const q of queues) this.set({ name: q.name }, q.unfinishedWorkMs() / 1000);
      },
    }),
  };
  metricsByRegistry.set(registry, metrics);
  return metrics;
}

/** `namespace/name` keys are logged as fields too, so log queries can use them. */
export function keyFields(key: string): Record<string, string> {
  const slash = key.indexOf('/');
  if (slash <= 0 || slash !== key.lastIndexOf('/')) return { key };
  return { key, namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

/** Min-heap of delayed keys; stale entries (superseded by an earlier time) are skipped on pop. */
interface DelayedEntry<K> {
  key: K;
  at: number;
}

export class WorkQueue<K extends string> {
  readonly name: string;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly backoff: ExponentialBackoff<K>;
  private readonly bucket: TokenBucket;
  private readonly metrics: QueueMetrics;

  // client-go's three sets: a key is in `queue` exactly when it is dirty and not processing.
  private queue: K[] = [];
  private head = 0;
  private readonly dirty = new Set<K>();
  private readonly processing = new Map<K, number>();
  private readonly addedAt = new Map<K, number>();

  private readonly delayed = new Map<K, number>();
  private heap: DelayedEntry<K>[] = [];
  private timer: Timer | undefined;
  private timerAt = Infinity;

  private readonly waiters: ((key: K | undefined) => void)[] = [];
  private readonly abort = new AbortController();
  private stopping = false;
  private readonly drainWaiters: (() => void)[] = [];
  private running = false;

  constructor(options: WorkQueueOptions) {
    this.name = options.name;
    this.logger = options.logger;
    this.clock = options.clock ?? realClock;
    this.backoff = new ExponentialBackoff(options.baseDelayMs ?? 5, options.maxDelayMs ?? 5 * 60_000);
    this.bucket = new TokenBucket(options.qps ?? 10, options.burst ?? 100, this.clock);
    this.metrics = queueMetrics(options.registry ?? new Registry());
    this.metrics.queues.add(this as unknown as WorkQueue<string>);
  }

  /** Queues `key` unless it is already queued; a key being worked on runs once more afterwards. */
  add(key: K): void {
    if (this.stopping || this.dirty.has(key)) return;
    this.metrics.adds.inc({ name: this.name });
    this.dirty.add(key);
    this.addedAt.set(key, this.clock.now());
    if (this.processing.has(key)) return;
    this.push(key);
  }

  /** Queues `key` after `ms`; an earlier pending time for the same key wins. */
  addAfter(key: K, ms: number): void {
    if (this.stopping) return;
    if (ms <= 0) return this.add(key);
    const at = this.clock.now() + ms;
    const existing = this.delayed.get(key);
    if (existing !== undefined && existing <= at) return;
    this.delayed.set(key, at);
    this.heapPush({ key, at });
    this.schedule();
  }

  /** Queues `key` after its backoff (which grows with each call until forget) and a bucket token. */
  addRateLimited(key: K): number {
    const delay = Math.max(this.backoff.when(key), this.bucket.reserve());
    this.metrics.retries.inc({ name: this.name });
    this.addAfter(key, delay);
    return delay;
  }

  /** Resets the backoff of `key` (it succeeded, or will be retried for another reason). */
  forget(key: K): void {
    this.backoff.forget(key);
  }

  /** Failures of `key` since it was last forgotten. */
  numRequeues(key: K): number {
    return this.backoff.retries(key);
  }

  /** Keys waiting for a worker (delayed keys not counted). */
  len(): number {
    return this.queue.length - this.head;
  }

  /** Keys waiting for their delay to pass. */
  delayedLen(): number {
    return this.delayed.size;
  }

  isShuttingDown(): boolean {
    return this.stopping;
  }

  longestRunningMs(): number {
    const now = this.clock.now();
    let longest = 0;
    for (const started of this.processing.values()) longest = Math.max(longest, now - started);
    return longest;
  }

  unfinishedWorkMs(): number {
    const now = this.clock.now();
    let sum = 0;
    for (const started of this.processing.values()) sum += now - started;
    return sum;
  }

  /**
   * Works on keys with `concurrency` workers until shutdown; resolves once the last worker call
   * has returned. A worker that throws counts as 'retry' (with the error logged).
   */
  async run(worker: Worker<K>, concurrency = 1): Promise<void> {
    if (this.running) throw new Error(`work queue ${this.name} is already running`);
    this.running = true;
    const loop = async () => {
      for (;;) {
        const key = await this.get();
        if (key === undefined) return;
        await this.process(key, worker);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, concurrency) }, loop));
  }

  /**
   * Stops handing out keys, aborts the signal given to workers, drops queued and delayed keys and
   * resolves when the worker calls in flight have returned.
   */
  shutdown(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      const dropped = this.len() + this.delayed.size;
      this.timer?.cancel();
      this.timer = undefined;
      this.delayed.clear();
      this.heap = [];
      this.queue = [];
      this.head = 0;
      this.abort.abort();
      for (const wake of this.waiters.splice(0)) wake(undefined);
      this.logger.info(
        { queue: this.name, inFlight: this.processing.size, dropped },
        'work queue shutting down; waiting for keys in flight',
      );
    }
    if (this.processing.size === 0) {
      this.metrics.queues.delete(this as unknown as WorkQueue<string>);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** The next key to work on (marked processing), or undefined once shutting down. */
  get(): Promise<K | undefined> {
    if (this.stopping) return Promise.resolve(undefined);
    const key = this.pop();
    if (key !== undefined) return Promise.resolve(key);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Ends the processing of `key`; if it was added meanwhile, it goes back into the queue. */
  done(key: K): void {
    this.processing.delete(key);
    if (this.dirty.has(key) && !this.stopping) this.push(key);
    if (this.stopping && this.processing.size === 0) {
      this.metrics.queues.delete(this as unknown as WorkQueue<string>);
      for (const resolve of this.drainWaiters.splice(0)) resolve();
    }
  }

  private async process(key: K, worker: Worker<K>): Promise<void> {
    const started = this.clock.now();
    let result: WorkResult;
    try {
      result = await worker(key, this.abort.signal);
    } catch (error) {
      this.logger.warn(
        { queue: this.name, ...keyFields(key), err: error, failures: this.numRequeues(key) + 1 },
        'worker failed; retrying with backoff',
      );
      result = 'retry';
    }
    this.metrics.workDuration.observe({ name: this.name }, (this.clock.now() - started) / 1000);
    if (!this.stopping) this.apply(key, result);
    this.done(key);
  }

  private apply(key: K, result: WorkResult): void {
    if (result === 'done') {
      this.forget(key);
    } else if (result === 'retry') {
      const delayMs = this.addRateLimited(key);
      this.logger.debug(
        { queue: this.name, ...keyFields(key), delayMs, failures: this.numRequeues(key) },
        'requeued with backoff',
      );
    } else {
      // A planned re-check is not a failure: it must not inherit or grow the failure backoff.
      this.forget(key);
      this.addAfter(key, result.requeueAfter);
    }
  }

  private push(key: K): void {
    const waiter = this.waiters.shift();
    if (waiter) {
      this.take(key);
      waiter(key);
      return;
    }
    this.queue.push(key);
  }

  private pop(): K | undefined {
    if (this.head >= this.queue.length) return undefined;
    const key = this.queue[this.head++]!;
    // Compact now and then so a long-lived queue does not keep every key it ever held.
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    this.take(key);
    return key;
  }

  private take(key: K): void {
    this.dirty.delete(key);
    const now = this.clock.now();
    this.processing.set(key, now);
    const added = this.addedAt.get(key);
    this.addedAt.delete(key);
    if (added !== undefined) this.metrics.queueDuration.observe({ name: this.name }, (now - added) / 1000);
  }

  private schedule(): void {
    const next = this.peekDelayed();
    if (!next) return;
    if (this.timer && this.timerAt <= next.at) return;
    this.timer?.cancel();
    this.timerAt = next.at;
    this.timer = this.clock.setTimeout(() => this.fire(), next.at - this.clock.now());
  }

  private fire(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = this.clock.now();
    for (;;) {
      const next = this.peekDelayed();
      if (!next || next.at > now) break;
      this.heapPop();
      this.delayed.delete(next.key);
      this.add(next.key);
    }
    this.schedule();
  }

  /** The earliest live delayed entry, dropping stale ones. */
  private peekDelayed(): DelayedEntry<K> | undefined {
    while (this.heap.length > 0) {
      const top = this.heap[0]!;
      if (this.delayed.get(top.key) === top.at) return top;
      this.heapPop();
    }
    return undefined;
  }

  private heapPush(entry: DelayedEntry<K>): void {
    const heap = this.heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.at <= entry.at) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = entry;
  }

  private heapPop(): void {
    const heap = this.heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && heap[right]!.at < heap[left]!.at ? right : left;
      if (heap[child]!.at >= last.at) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
  }
}
