// The informer's own logic around client-node's ListWatch, on a fake list and watch and a
// hand-moved clock: restart with growing backoff after failures client-node gives up on, resume
// from the last resourceVersion, relist on 410, stop racing a list, handlers that throw, late
// handlers, resync, stopping on a 403 when asked (onForbidden).
import { KubeConfig } from '@kubernetes/client-node';
import type { KubernetesListObject, V1ConfigMap } from '@kubernetes/client-node';
import { pino } from 'pino';
import { Registry } from 'prom-client';

import { ManualClock } from '../../../kube/clock.ts';
import { Informer } from '../../../kube/informer.ts';
import type { InformerOptions, WatchFn } from '../../../kube/informer.ts';

const status = (code: number) => Object.assign(new Error(`HTTP ${code}`), { code });
const cm = (name: string, rv: string, v = '1'): V1ConfigMap => ({
  metadata: { name, namespace: 'ns', resourceVersion: rv },
  data: { v },
});

interface OpenWatch {
  query: Record<string, unknown>;
  emit(type: string, object: unknown): void;
  end(error?: unknown): void;
  aborted: boolean;
}

/** A fake API: list answers from a script, watches are recorded and driven by the test. */
class FakeApi {
  lists: (() => Promise<KubernetesListObject<V1ConfigMap>>)[] = [];
  listCalls = 0;
  watches: OpenWatch[] = [];

  list = async (): Promise<KubernetesListObject<V1ConfigMap>> => {
    this.listCalls++;
    const next = this.lists.shift();
    if (!next) throw new Error('unexpected list');
    return next();
  };

  watch: WatchFn = async (_path, query, onEvent, onDone) => {
    let done = false;
    const w: OpenWatch = {
      query,
      aborted: false,
      emit: (type, object) => onEvent(type, object, { type, object }),
      end: (error) => {
        if (done) return;
        done = true;
        onDone(error ?? null);
      },
    };
    this.watches.push(w);
    return {
      abort: () => {
        w.aborted = true;
        w.end(Object.assign(new Error('aborted'), { name: 'AbortError' }));
      },
    };
  };

  lastWatch(): OpenWatch {
    return this.watches[this.watches.length - 1]!;
  }
}

const listOf =
  (rv: string, ...items: V1ConfigMap[]) =>
  async () => ({
    metadata: { resourceVersion: rv },
    items,
  });

let clock: ManualClock;
let api: FakeApi;
let registry: Registry;
let lines: Record<string, unknown>[];
const informers: Informer<V1ConfigMap>[] = [];

function informer(options: Partial<InformerOptions<V1ConfigMap>> = {}) {
  const events: string[] = [];
  const i = new Informer<V1ConfigMap>({
    kubeConfig: new KubeConfig(),
    source: { resource: 'configmaps', path: '/api/v1/namespaces/ns/configmaps', list: api.list },
    logger: pino({ level: 'debug' }, { write: (l: string) => lines.push(JSON.parse(l)) }),
    registry,
    clock,
    watch: api.watch,
    resyncMs: 0,
    ...options,
  });
  i.addEventHandler({
    onAdd: (o) => events.push(`add ${o.metadata?.name}`),
    onUpdate: (o, old) => events.push(`update ${o.metadata?.name} ${old.data?.['v']}->${o.data?.['v']}`),
    onDelete: (o) => events.push(`delete ${o.metadata?.name}`),
  });
  informers.push(i);
  return { i, events };
}

const restarts = () => lines.filter((l) => l['msg'] === 'list/watch failed; restarting');

beforeEach(() => {
  clock = new ManualClock(0);
  api = new FakeApi();
  registry = new Registry();
  lines = [];
});

afterEach(async () => {
  await Promise.all(informers.splice(0).map((i) => i.stop()));
});

test('a failing list is retried with growing delays until it works; then the informer is synced', async () => {
  api.lists.push(
    () => Promise.reject(status(503)),
    () => Promise.reject(status(503)),
    () => Promise.reject(Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNREFUSED' } })),
    listOf('10', cm('a', '5')),
  );
  const { i, events } = informer({ restartBaseMs: 1000, restartMaxMs: 3000 });
  i.start();
  await clock.advance(0);
  expect(i.hasSynced()).toBe(false);
  await clock.advance(1000 + 2000 + 3000);
  expect(api.listCalls).toBe(4);
  expect(restarts().map((l) => [l['reason'], l['delayMs']])).toEqual([
    ['http_503', 1000],
    ['http_503', 2000],
    ['ECONNREFUSED', 3000],
  ]);
  expect(i.hasSynced()).toBe(true);
  await i.waitForSync();
  expect(events).toEqual(['add a']);
  expect(api.lastWatch().query).toMatchObject({ resourceVersion: '10' });
  const text = await registry.metrics();
  expect(text).toContain('buildkit_fleet_informer_restarts_total{informer="configmaps",reason="http_503"} 2');
});

test('a broken watch restarts from the last resourceVersion (no relist); events reset the backoff', async () => {
  api.lists.push(listOf('10', cm('a', '5')));
  const { i, events } = informer({ restartBaseMs: 100 });
  i.start();
  await clock.advance(0);
  api.lastWatch().emit('MODIFIED', cm('a', '11', '2'));
  api.lastWatch().end(status(500));
  await clock.advance(100);
  expect(api.listCalls).toBe(1);
  expect(api.watches).toHaveLength(2);
  expect(api.lastWatch().query).toMatchObject({ resourceVersion: '11' });
  api.lastWatch().end(Object.assign(new Error('terminated'), { name: 'TypeError' }));
  await clock.advance(100);
  expect(api.watches).toHaveLength(2); // second failure in a row: 200 ms
  await clock.advance(100);
  expect(api.watches).toHaveLength(3);
  api.lastWatch().emit('ADDED', cm('b', '12'));
  api.lastWatch().end(status(500));
  await clock.advance(100); // the event proved the watch healthy: back to 100 ms
  expect(api.watches).toHaveLength(4);
  expect(events).toEqual(['add a', 'update a 1->2', 'add b']);
  expect(i.list().map((o) => o.metadata?.name)).toEqual(['a', 'b']);
});

test('410 Gone relists: objects gone meanwhile are delivered as deletes, changed ones as updates', async () => {
  api.lists.push(listOf('10', cm('a', '5'), cm('b', '6')), listOf('50', cm('a', '40', '2'), cm('c', '41')));
  const { i, events } = informer();
  i.start();
  await clock.advance(0);
  api.lastWatch().emit('ERROR', { kind: 'Status', code: 410, message: 'too old resource version' });
  api.lastWatch().end();
  await clock.advance(0);
  expect(api.listCalls).toBe(2);
  expect(events).toEqual(['add a', 'add b', 'delete b', 'update a 1->2', 'add c']);
  expect(restarts()).toEqual([]);
  expect(api.lastWatch().query).toMatchObject({ resourceVersion: '50' });
});

test('stop while a list is in flight: no watch is opened afterwards and nothing is delivered', async () => {
  let release!: () => void;
  api.lists.push(() => new Promise((resolve) => (release = () => resolve(listOf('10', cm('a', '5'))()))));
  const { i, events } = informer();
  i.start();
  await clock.advance(0);
  const sync = i.waitForSync();
  await i.stop();
  await expect(sync).rejects.toThrow('stopped');
  release();
  await clock.advance(60_000);
  expect(api.watches).toHaveLength(0);
  expect(events).toEqual([]);
  expect(restarts()).toEqual([]);
});

test('stop aborts the open watch and does not restart it', async () => {
  api.lists.push(listOf('10'));
  const { i } = informer();
  i.start();
  await clock.advance(0);
  await i.stop();
  expect(api.lastWatch().aborted).toBe(true);
  await clock.advance(60_000);
  expect(api.watches).toHaveLength(1);
  expect(restarts()).toEqual([]);
});

test('a throwing handler is logged and counted; other handlers and the cache carry on', async () => {
  api.lists.push(listOf('10'));
  const { i, events } = informer();
  i.addEventHandler({
    onAdd: () => {
      throw new Error('handler bug');
    },
  });
  i.start();
  await clock.advance(0);
  api.lastWatch().emit('ADDED', cm('a', '11'));
  api.lastWatch().emit('ADDED', cm('b', '12'));
  expect(events).toEqual(['add a', 'add b']);
  expect(i.list()).toHaveLength(2);
  const errors = lines.filter(
    (l) => l['msg'] === 'informer event handler threw; event dropped for this handler',
  );
  expect(errors.map((l) => [l['name'], l['err']])).toEqual([
    ['a', 'handler bug'],
    ['b', 'handler bug'],
  ]);
  expect(await registry.metrics()).toContain(
    'buildkit_fleet_informer_handler_errors_total{informer="configmaps"} 2',
  );
});

test('a handler added after sync gets the cached objects as adds first', async () => {
  api.lists.push(listOf('10', cm('a', '5'), cm('b', '6')));
  const { i } = informer();
  i.start();
  await clock.advance(0);
  const late: string[] = [];
  i.addEventHandler({ onAdd: (o) => late.push(o.metadata!.name!) });
  expect(late).toEqual(['a', 'b']);
});

test('resync delivers every cached object as an update with old === object, every resyncMs', async () => {
  api.lists.push(listOf('10', cm('a', '5')));
  const { i, events } = informer({ resyncMs: 60_000 });
  const same: boolean[] = [];
  i.addEventHandler({ onUpdate: (o, old) => same.push(o === old) });
  i.start();
  await clock.advance(0);
  await clock.advance(120_000);
  expect(events).toEqual(['add a', 'update a 1->1', 'update a 1->1']);
  expect(same).toEqual([true, true]);
});

test('events converted by the source (fromWatch) land in the cache in the list shape', async () => {
  api.lists.push(listOf('10'));
  const { i } = informer({
    source: {
      resource: 'configmaps',
      path: '/api/v1/namespaces/ns/configmaps',
      list: api.list,
      fromWatch: (raw) => ({ ...(raw as V1ConfigMap), data: { converted: 'yes' } }),
    },
  });
  i.start();
  await clock.advance(0);
  api.lastWatch().emit('ADDED', cm('a', '11'));
  expect(i.get('ns', 'a')?.data).toEqual({ converted: 'yes' });
});

describe('onForbidden', () => {
  test('a 403 on the watch stops the informer and calls onForbidden once; no restart', async () => {
    api.lists.push(listOf('10', cm('a', '5')));
    const forbidden: unknown[] = [];
    const { i, events } = informer({ onForbidden: (e) => forbidden.push(e), restartBaseMs: 100 });
    i.start();
    await clock.advance(0);
    const error = Object.assign(new Error('Forbidden'), { statusCode: 403 });
    api.lastWatch().end(error);
    await clock.advance(60_000);
    expect(forbidden).toEqual([error]);
    expect(api.watches).toHaveLength(1);
    expect(api.listCalls).toBe(1);
    expect(restarts()).toEqual([]);
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'informer stopped' }));
    // The cache keeps what it had.
    expect(events).toEqual(['add a']);
    expect(i.get('ns', 'a')).toBeDefined();
  });

  test('a 403 on the list: stopped before it synced, waiters are told', async () => {
    api.lists.push(() => Promise.reject(status(403)));
    let forbidden = 0;
    const { i } = informer({ onForbidden: () => forbidden++ });
    i.start();
    const sync = i.waitForSync();
    await clock.advance(0);
    await expect(sync).rejects.toThrow('stopped');
    await clock.advance(60_000);
    expect(forbidden).toBe(1);
    expect(api.listCalls).toBe(1);
    expect(api.watches).toHaveLength(0);
    expect(restarts()).toEqual([]);
  });

  test('other failures still restart; without onForbidden a 403 restarts too', async () => {
    api.lists.push(
      () => Promise.reject(status(500)),
      listOf('10'),
      () => Promise.reject(status(403)),
      listOf('10'),
    );
    let forbidden = 0;
    const { i } = informer({ onForbidden: () => forbidden++, restartBaseMs: 100 });
    i.start();
    await clock.advance(100);
    expect(api.listCalls).toBe(2);
    expect(i.hasSynced()).toBe(true);
    expect(forbidden).toBe(0);

    const { i: plain } = informer({ restartBaseMs: 100 });
    plain.start();
    await clock.advance(100);
    expect(api.listCalls).toBe(4);
    expect(plain.hasSynced()).toBe(true);
    expect(restarts().map((l) => l['reason'])).toEqual(['http_500', 'http_403']);
  });
});
