// The work queue on a hand-moved clock: de-duplication, a key added while processing runs once
// more afterwards (never twice at once), per-key exponential backoff and forget, the overall
// token bucket, requeueAfter, a throwing worker, shutdown draining in-flight work, and metrics.
import { pino } from 'pino';
import { Registry } from 'prom-client';

import { ManualClock } from '../../../kube/clock.ts';
import { ExponentialBackoff, TokenBucket, WorkQueue, keyFields } from '../../../kube/queue.ts';
import type { WorkQueueOptions, WorkResult } from '../../../kube/queue.ts';

const silent = pino({ level: 'silent' });

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

let clock: ManualClock;
let registry: Registry;
const queues: WorkQueue<string>[] = [];

function queue(options: Partial<WorkQueueOptions> = {}): WorkQueue<string> {
  const q = new WorkQueue<string>({ name: 'test', logger: silent, clock, registry, ...options });
  queues.push(q);
  return q;
}

/** A worker that records calls and answers from a script (default 'done'). */
function recorder(answer: (key: string, call: number) => WorkResult | Promise<WorkResult> = () => 'done') {
  const calls: { key: string; at: number }[] = [];
  const worker = (key: string) => {
    calls.push({ key, at: clock.now() });
    return answer(key, calls.filter((c) => c.key === key).length);
  };
  return { calls, worker, keys: () => calls.map((c) => c.key) };
}

beforeEach(() => {
  clock = new ManualClock(0);
  registry = new Registry();
});

afterEach(async () => {
  await Promise.all(queues.splice(0).map((q) => q.shutdown()));
});

async function metric(name: string): Promise<number> {
  const found = (await registry.getSingleMetric(name)?.get())?.values.find(
    (v) => v.labels['name'] === 'test' && !('le' in v.labels),
  );
  return found?.value ?? NaN;
}

describe('WorkQueue: adding', () => {
  test('a key added several times before a worker takes it is handed out once', async () => {
    const q = queue();
    q.add('ns/a');
    q.add('ns/b');
    q.add('ns/a');
    expect(q.len()).toBe(2);
    expect(await q.get()).toBe('ns/a');
    expect(await q.get()).toBe('ns/b');
    expect(q.len()).toBe(0);
    q.done('ns/a');
    q.done('ns/b');
    expect(await metric('buildkit_fleet_workqueue_adds_total')).toBe(2);
  });

  test('a key added while being processed is not handed to a second worker but runs once more after', async () => {
    const q = queue();
    const first = deferred<WorkResult>();
    let running = 0;
    let maxRunning = 0;
    const { worker, keys } = recorder(async (_key, call) => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      const result = call === 1 ? await first.promise : 'done';
      running--;
      return result;
    });
    const run = q.run(worker, 4);
    q.add('ns/a');
    await clock.advance(0);
    expect(keys()).toEqual(['ns/a']);
    // Three adds while processing: all collapse into one more run after this one.
    q.add('ns/a');
    q.add('ns/a');
    q.add('ns/a');
    await clock.advance(0);
    expect(keys()).toEqual(['ns/a']);
    expect(q.len()).toBe(0);
    first.resolve('done');
    await clock.advance(0);
    expect(keys()).toEqual(['ns/a', 'ns/a']);
    expect(maxRunning).toBe(1);
    await q.shutdown();
    await run;
  });

  test('other keys are worked on concurrently up to the concurrency', async () => {
    const q = queue();
    const gate = deferred<WorkResult>();
    const { worker, keys } = recorder(() => gate.promise);
    const run = q.run(worker, 2);
    for (const k of ['a', 'b', 'c']) q.add(k);
    await clock.advance(0);
    expect(keys()).toEqual(['a', 'b']);
    expect(q.len()).toBe(1);
    gate.resolve('done');
    await clock.advance(0);
    expect(keys()).toEqual(['a', 'b', 'c']);
    await q.shutdown();
    await run;
  });

  test('addAfter: the key appears when its time comes; an earlier time wins over a later one', async () => {
    const q = queue();
    const { worker, calls } = recorder();
    const run = q.run(worker);
    q.addAfter('a', 1000);
    q.addAfter('a', 5000); // later: ignored
    q.addAfter('b', 3000);
    q.addAfter('b', 500); // earlier: wins
    expect(q.delayedLen()).toBe(2);
    await clock.advance(499);
    expect(calls).toEqual([]);
    await clock.advance(1);
    expect(calls).toEqual([{ key: 'b', at: 500 }]);
    await clock.advance(500);
    expect(calls).toEqual([
      { key: 'b', at: 500 },
      { key: 'a', at: 1000 },
    ]);
    await clock.advance(10_000);
    expect(calls).toHaveLength(2);
    await q.shutdown();
    await run;
  });
});

describe('WorkQueue: backoff', () => {
  test('per-key exponential backoff: base * 2^failures up to the cap; forget resets it', () => {
    const q = queue({ baseDelayMs: 5, maxDelayMs: 1000, burst: 1000 });
    const delays = Array.from({ length: 10 }, () => q.addRateLimited('a'));
    expect(delays).toEqual([5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    expect(q.numRequeues('a')).toBe(10);
    // Keys back off independently.
    expect(q.addRateLimited('b')).toBe(5);
    q.forget('a');
    expect(q.numRequeues('a')).toBe(0);
    expect(q.addRateLimited('a')).toBe(5);
  });

  test('defaults: 5 ms doubling, capped at 5 minutes', () => {
    const backoff = new ExponentialBackoff<string>(5, 5 * 60_000);
    const delays = Array.from({ length: 40 }, () => backoff.when('k'));
    expect(delays.slice(0, 3)).toEqual([5, 10, 20]);
    expect(delays[15]).toBe(5 * 2 ** 15);
    expect(delays[16]).toBe(300_000);
    expect(delays[39]).toBe(300_000);
  });

  test('a worker answering retry gets the key back after 5, 10, 20 ms; done resets the backoff', async () => {
    const q = queue();
    const { worker, calls } = recorder((_key, call) => (call <= 3 ? 'retry' : 'done'));
    const run = q.run(worker);
    q.add('ns/a');
    await clock.advance(0);
    await clock.advance(100);
    expect(calls.map((c) => c.at)).toEqual([0, 5, 15, 35]);
    expect(q.numRequeues('ns/a')).toBe(0);
    expect(await metric('buildkit_fleet_workqueue_retries_total')).toBe(3);
    await q.shutdown();
    await run;
  });

  test('a worker that throws is retried with backoff and the error is logged with namespace/name', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => lines.push(JSON.parse(l)) });
    const q = queue({ logger });
    const { worker, calls } = recorder((_key, call) => {
      if (call === 1) throw new Error('API server said no');
      return 'done';
    });
    const run = q.run(worker);
    q.add('ci/builder');
    await clock.advance(0);
    await clock.advance(5);
    expect(calls.map((c) => c.at)).toEqual([0, 5]);
    const failed = lines.find((l) => l['msg'] === 'worker failed; retrying with backoff');
    expect(failed).toMatchObject({ queue: 'test', namespace: 'ci', name: 'builder', key: 'ci/builder' });
    expect(JSON.stringify(failed?.['err'])).toContain('API server said no');
    expect(lines.find((l) => l['msg'] === 'requeued with backoff')).toMatchObject({ delayMs: 5 });
    await q.shutdown();
    await run;
  });

  test('token bucket: burst at once, then one token per 1/qps; refills over time up to the burst', () => {
    const bucket = new TokenBucket(10, 3, clock);
    expect([bucket.reserve(), bucket.reserve(), bucket.reserve()]).toEqual([0, 0, 0]);
    expect([bucket.reserve(), bucket.reserve()]).toEqual([100, 200]);
  });

  test('token bucket over time (injected clock)', async () => {
    const bucket = new TokenBucket(10, 3, clock);
    for (let i = 0; i < 5; i++) bucket.reserve(); // 2 tokens in debt
    await clock.advance(200); // pays the debt back exactly
    expect(bucket.reserve()).toBe(100);
    await clock.advance(10_000); // refills, but never beyond the burst
    expect([bucket.reserve(), bucket.reserve(), bucket.reserve(), bucket.reserve()]).toEqual([0, 0, 0, 100]);
  });

  test('the bucket bounds the overall retry rate when many keys fail at once', () => {
    const q = queue({ qps: 10, burst: 5 });
    const delays = Array.from({ length: 8 }, (_, i) => q.addRateLimited(`ns/k${i}`));
    // Each key's own backoff is 5 ms; the bucket spaces keys 6..8 100 ms apart.
    expect(delays).toEqual([5, 5, 5, 5, 5, 100, 200, 300]);
  });
});

describe('WorkQueue: requeueAfter', () => {
  test('runs the key again after the given time, without growing (and resetting) the failure backoff', async () => {
    const q = queue();
    const { worker, calls } = recorder((_key, call) =>
      call === 1 ? 'retry' : call === 2 ? { requeueAfter: 60_000 } : 'done',
    );
    const run = q.run(worker);
    q.add('a');
    await clock.advance(0);
    await clock.advance(5);
    expect(calls.map((c) => c.at)).toEqual([0, 5]);
    expect(q.numRequeues('a')).toBe(0);
    await clock.advance(59_999);
    expect(calls).toHaveLength(2);
    await clock.advance(1);
    expect(calls.map((c) => c.at)).toEqual([0, 5, 60_005]);
    await q.shutdown();
    await run;
  });

  test('requeueAfter 0 while the key was added meanwhile still runs it once more, not twice', async () => {
    const q = queue();
    const gate = deferred<WorkResult>();
    const { worker, keys } = recorder((_key, call) => (call === 1 ? gate.promise : 'done'));
    const run = q.run(worker, 2);
    q.add('a');
    await clock.advance(0);
    q.add('a');
    gate.resolve({ requeueAfter: 0 });
    await clock.advance(0);
    await clock.advance(1000);
    expect(keys()).toEqual(['a', 'a']);
    await q.shutdown();
    await run;
  });
});

describe('WorkQueue: shutdown', () => {
  test('waits for in-flight work, aborts its signal, drops queued and delayed keys, then run() resolves', async () => {
    const q = queue();
    const gate = deferred<WorkResult>();
    let signal: AbortSignal | undefined;
    const calls: string[] = [];
    const run = q.run((key, s) => {
      calls.push(key);
      signal = s;
      return gate.promise;
    });
    let runDone = false;
    void run.then(() => (runDone = true));
    q.add('busy');
    q.add('queued');
    q.addAfter('later', 10);
    await clock.advance(0);
    expect(calls).toEqual(['busy']);

    let drained = false;
    const shutdown = q.shutdown().then(() => (drained = true));
    await clock.advance(100);
    expect(signal?.aborted).toBe(true);
    expect(drained).toBe(false);
    expect(runDone).toBe(false);
    expect(q.len()).toBe(0);
    expect(q.delayedLen()).toBe(0);

    gate.resolve('retry'); // not requeued: the queue is shutting down
    await shutdown;
    await run;
    expect(drained).toBe(true);
    expect(calls).toEqual(['busy']);
    q.add('after');
    expect(q.len()).toBe(0);
    expect(await q.get()).toBeUndefined();
    expect(clock.pending()).toBe(0);
  });

  test('shutdown of an idle queue resolves at once and wakes idle workers', async () => {
    const q = queue();
    const run = q.run(() => 'done', 3);
    await clock.advance(0);
    await q.shutdown();
    await run;
  });

  test('run() twice is an error', async () => {
    const q = queue();
    const run = q.run(() => 'done');
    await expect(q.run(() => 'done')).rejects.toThrow('already running');
    await q.shutdown();
    await run;
  });
});

describe('WorkQueue: metrics', () => {
  test('depth, adds, queue and work durations, longest running processor', async () => {
    const q = queue();
    const gate = deferred<WorkResult>();
    const run = q.run(() => gate.promise);
    q.add('a');
    q.add('b');
    q.add('c');
    await clock.advance(0);
    expect(await metric('buildkit_fleet_workqueue_depth')).toBe(2);
    await clock.advance(1500);
    expect(await metric('buildkit_fleet_workqueue_longest_running_processor_seconds')).toBe(1.5);
    expect(await metric('buildkit_fleet_workqueue_unfinished_work_seconds')).toBe(1.5);
    gate.resolve('done');
    await clock.advance(0);
    expect(await metric('buildkit_fleet_workqueue_depth')).toBe(0);
    const text = await registry.metrics();
    expect(text).toContain('buildkit_fleet_workqueue_work_duration_seconds_count{name="test"} 3');
    expect(text).toContain('buildkit_fleet_workqueue_work_duration_seconds_sum{name="test"} 1.5');
    // b and c waited 1.5 s in the queue, a not at all.
    expect(text).toContain('buildkit_fleet_workqueue_queue_duration_seconds_sum{name="test"} 3');
    expect(await metric('buildkit_fleet_workqueue_adds_total')).toBe(3);
    await q.shutdown();
    await run;
  });

  test('two queues on one registry share the metrics, told apart by name', async () => {
    const a = queue({ name: 'alpha' });
    const b = queue({ name: 'beta' });
    a.add('x');
    b.add('x');
    b.add('y');
    const depth = await registry.getSingleMetric('buildkit_fleet_workqueue_depth')!.get();
    expect(Object.fromEntries(depth.values.map((v) => [v.labels['name'], v.value]))).toEqual({
      alpha: 1,
      beta: 2,
    });
  });
});

test('keyFields splits namespace/name keys for logs and leaves other keys alone', () => {
  expect(keyFields('ci/builder')).toEqual({ key: 'ci/builder', namespace: 'ci', name: 'builder' });
  expect(keyFields('cluster-scoped')).toEqual({ key: 'cluster-scoped' });
  expect(keyFields('a/b/c')).toEqual({ key: 'a/b/c' });
});
