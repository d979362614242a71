// The smaller pieces of the certificate lifecycle: the caBundle patch and keeper (with a fake API
// and a fake list+watch), the watches on the shared informer (reconnect, restart, give up on 403)
// and the rotator's Secret watch, the Secret conflict loop, durations and CLI options.
import { setTimeout as sleep } from 'node:timers/promises';
import type { KubernetesListObject, KubernetesObject, V1Secret } from '@kubernetes/client-node';
import fastJsonPatch from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import { pino } from 'pino';
import { Registry } from 'prom-client';

import {
  CERT_OPTIONS,
  WebhookConfigAccessError,
  bundleBase64,
  caBundlePatch,
  certConfigFromOptions,
  failurePolicyChanges,
  failurePolicyWaits,
  servicesAwaited,
  startCertSource,
  createCaBundleInjector,
  formatCertDuration,
  memorySecretStore,
  parseCertDuration,
  reconcileSecret,
  startSelfManagedCerts,
} from '../../../certs/index.ts';
import type { ServingCheck, WebhookConfigClient, WebhookKind } from '../../../certs/index.ts';
import type { WebhookConfigObject } from '../../../certs/ca-bundle.ts';
import { keepWatching } from '../../../certs/watch.ts';
import type { WatchCalls, WatchSelector } from '../../../certs/watch.ts';
import { StartupError, UsageError } from '../../../flags/errors.ts';
import { optionsHelp, parseOptions } from '../../../flags/options.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  return {
    lines,
    logger: pino({ level: 'debug' }, { write: (l: string) => void lines.push(JSON.parse(l)) }),
  };
}

const config = (name: string, ...bundles: (string | undefined)[]): WebhookConfigObject => ({
  metadata: { name },
  webhooks: bundles.map((caBundle, i) => ({
    name: `w${i}`,
    clientConfig: caBundle === undefined ? {} : { caBundle },
  })),
});

function fakeClient(
  initial: Partial<Record<WebhookKind, WebhookConfigObject[]>>,
  labels: Record<string, string[]> = {},
) {
  const objects: Record<WebhookKind, Map<string, WebhookConfigObject>> = {
    mutating: new Map((initial.mutating ?? []).map((o) => [o.metadata!.name!, o])),
    validating: new Map((initial.validating ?? []).map((o) => [o.metadata!.name!, o])),
  };
  const forbidden = new Set<string>();
  const calls: string[] = [];
  const client: WebhookConfigClient = {
    async get(kind, name) {
      calls.push(`get ${kind} ${name}`);
      if (forbidden.has('get')) throw new WebhookConfigAccessError(`cannot get ${kind} ${name}: 403`, 403);
      const o = objects[kind].get(name);
      return o && structuredClone(o);
    },
    async list(kind, selector) {
      calls.push(`list ${kind} ${selector}`);
      return (labels[selector] ?? []).flatMap((n) =>
        objects[kind].has(n) ? [structuredClone(objects[kind].get(n)!)] : [],
      );
    },
    async patch(kind, name, ops) {
      calls.push(`patch ${kind} ${name}`);
      if (forbidden.has('patch'))
        throw new WebhookConfigAccessError(`cannot patch ${kind} ${name}: 403`, 403);
      fastJsonPatch.applyPatch(objects[kind].get(name)!, ops as Operation[], true);
    },
  };
  return { client, objects, forbidden, calls };
}

interface FakeWatch {
  path: string;
  query: Record<string, unknown>;
  emit(type: string, object: unknown): void;
  end(error?: unknown): void;
  aborted: boolean;
  /** Ended (by the test, or aborted). */
  closed: boolean;
}

/**
 * The API calls behind a watch (a list and the informer's WatchFn): lists answer from `list`,
 * watches are recorded and driven by the test.
 */
function fakeWatchApi<T extends KubernetesObject>(
  list: (selector: WatchSelector) => KubernetesListObject<T> | Promise<KubernetesListObject<T>>,
) {
  const watches: FakeWatch[] = [];
  const lists: WatchSelector[] = [];
  const calls: WatchCalls<T> = {
    list: async (selector) => {
      lists.push(selector);
      return list(selector);
    },
    watch: async (path, query, onEvent, onDone) => {
      const w: FakeWatch = {
        path,
        query,
        aborted: false,
        closed: false,
        emit: (type, object) => onEvent(type, object, { type, object }),
        end: (error) => {
          if (w.closed) return;
          w.closed = true;
          onDone(error ?? null);
        },
      };
      watches.push(w);
      return {
        abort: () => {
          w.aborted = true;
          w.end(Object.assign(new Error('aborted'), { name: 'AbortError' }));
        },
      };
    },
  };
  return { calls, watches, lists };
}

const httpError = (statusCode: number) => Object.assign(new Error(`HTTP ${statusCode}`), { statusCode });
const FORBIDDEN_LINE = 'watch forbidden by RBAC; relying on the periodic check';

async function until(what: string, condition: () => boolean, timeoutMs = 2000) {
  for (const start = Date.now(); !condition(); await sleep(5)) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
  }
}

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}) {
  const values = (await registry.getSingleMetric(name)?.get())?.values ?? [];
  return values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))?.value ?? 0;
}

const PEM = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n';
const B64 = bundleBase64(PEM);

describe('caBundlePatch', () => {
  test('sets every entry that differs, each guarded by a test of its name', () => {
    expect(caBundlePatch(config('x', undefined, B64, 'b2xk'), B64)).toEqual([
      { op: 'test', path: '/webhooks/0/name', value: 'w0' },
      { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: B64 },
      { op: 'test', path: '/webhooks/2/name', value: 'w2' },
      { op: 'add', path: '/webhooks/2/clientConfig/caBundle', value: B64 },
    ]);
  });
  test('nothing to do when every entry holds the bundle', () => {
    expect(caBundlePatch(config('x', B64, B64), B64)).toEqual([]);
    expect(caBundlePatch({ metadata: { name: 'x' } }, B64)).toEqual([]);
  });

  // A first install renders Ignore (no CA yet) and names the configured policy in the annotation.
  const ANNOTATION = '/metadata/annotations/buildkit-fleet.io~1failure-policy';
  const firstInstall = (policy: string, ...bundles: (string | undefined)[]): WebhookConfigObject => {
    const c = config('x', ...bundles);
    c.metadata!.annotations = { 'buildkit-fleet.io/failure-policy': policy };
    c.webhooks = c.webhooks!.map((w) => ({ ...w, failurePolicy: 'Ignore' }));
    return c;
  };
  const viaService = (c: WebhookConfigObject, name = 'hook'): WebhookConfigObject => {
    c.webhooks!.forEach((w) => (w.clientConfig = { ...w.clientConfig, service: { namespace: 'sys', name } }));
    return c;
  };
  const removesAnnotation = (policy: string) => [
    { op: 'test', path: ANNOTATION, value: policy },
    { op: 'remove', path: ANNOTATION },
  ];

  test('an entry given the bundle also gets the policy the annotation names, then the annotation goes', () => {
    expect(caBundlePatch(firstInstall('Fail', undefined), B64)).toEqual([
      { op: 'test', path: '/webhooks/0/name', value: 'w0' },
      { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: B64 },
      { op: 'add', path: '/webhooks/0/failurePolicy', value: 'Fail' },
      ...removesAnnotation('Fail'),
    ]);
    const c = firstInstall('Fail', undefined, 'b2xk');
    expect(failurePolicyChanges(c, caBundlePatch(c, B64))).toEqual(['w0: Fail', 'w1: Fail']);
    // the patch applies as a whole: the annotation's key holds a "/" and is escaped as ~1
    fastJsonPatch.applyPatch(c, caBundlePatch(c, B64) as Operation[], true);
    expect(c).toEqual({
      metadata: { name: 'x', annotations: {} },
      webhooks: [
        { name: 'w0', failurePolicy: 'Fail', clientConfig: { caBundle: B64 } },
        { name: 'w1', failurePolicy: 'Fail', clientConfig: { caBundle: B64 } },
      ],
    });
    expect(caBundlePatch(c, B64)).toEqual([]);
  });

  test("Fail waits while the entry's Service has no ready endpoint; the bundle does not", () => {
    const down: ServingCheck = () => false;
    const c = viaService(firstInstall('Fail', undefined));
    expect(caBundlePatch(c, B64, down)).toEqual([
      { op: 'test', path: '/webhooks/0/name', value: 'w0' },
      { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: B64 },
    ]);
    expect(failurePolicyWaits(c, down)).toEqual(['w0: Service sys/hook has no ready endpoint yet']);
    expect(servicesAwaited(c)).toEqual([{ namespace: 'sys', name: 'hook' }]);
    fastJsonPatch.applyPatch(c, caBundlePatch(c, B64, down) as Operation[], true);
    // with the bundle in place, nothing more until the Service answers: no patch, no event loop
    expect(caBundlePatch(c, B64, down)).toEqual([]);
    expect(caBundlePatch(c, B64, (svc) => svc.name === 'hook')).toEqual([
      { op: 'test', path: '/webhooks/0/name', value: 'w0' },
      { op: 'add', path: '/webhooks/0/failurePolicy', value: 'Fail' },
      ...removesAnnotation('Fail'),
    ]);
    expect(failurePolicyWaits(c, () => true)).toEqual([]);
  });

  test('entries called by URL, and Ignore, never wait for a Service', () => {
    const down: ServingCheck = () => false;
    const byUrl = firstInstall('Fail', undefined);
    byUrl.webhooks![0]!.clientConfig = { url: 'https://127.0.0.1:9443/x' };
    expect(failurePolicyChanges(byUrl, caBundlePatch(byUrl, B64, down))).toEqual(['w0: Fail']);
    expect(servicesAwaited(byUrl)).toEqual([]);
    // Ignore is what the entries already hold: only the annotation goes
    const ignore = viaService(firstInstall('Ignore', B64));
    expect(caBundlePatch(ignore, B64, down)).toEqual(removesAnnotation('Ignore'));
    expect(failurePolicyWaits(ignore, down)).toEqual([]);
  });

  test('without the annotation, or with one that is not a policy, the policy is left alone', () => {
    // someone set Ignore by hand on a working configuration: it stays
    const byHand = config('x', B64);
    byHand.webhooks![0]!.failurePolicy = 'Ignore';
    expect(caBundlePatch(byHand, B64)).toEqual([]);
    expect(caBundlePatch(firstInstall('Sometimes', undefined), B64)).toEqual([
      { op: 'test', path: '/webhooks/0/name', value: 'w0' },
      { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: B64 },
    ]);
  });
});

describe('caBundle injector', () => {
  test('patches configurations found by name and by label, and reports what it found', async () => {
    const { client, objects } = fakeClient(
      {
        mutating: [config('a', undefined)],
        validating: [config('a', undefined, undefined), config('b', 'b2xk')],
      },
      { 'team=ci': ['b'] },
    );
    const registry = new Registry();
    const { logger, lines } = capture();
    const injector = createCaBundleInjector({
      targets: { names: ['a'], labelSelector: 'team=ci' },
      client,
      logger,
      registry,
    });
    const report = await injector.sync(PEM);
    expect(report).toMatchObject({
      found: [
        'MutatingWebhookConfiguration/a',
        'ValidatingWebhookConfiguration/a',
        'ValidatingWebhookConfiguration/b',
      ],
      patched: [
        'MutatingWebhookConfiguration/a',
        'ValidatingWebhookConfiguration/a',
        'ValidatingWebhookConfiguration/b',
      ],
      inSync: true,
    });
    for (const o of [...objects.mutating.values(), ...objects.validating.values()]) {
      expect(o.webhooks!.map((w) => w.clientConfig!.caBundle)).toEqual(o.webhooks!.map(() => B64));
    }
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: 'caBundle patched',
        configuration: 'ValidatingWebhookConfiguration/b',
        reason: 'caBundle differed',
      }),
    );
    expect(
      await metric(registry, 'buildkit_fleet_certs_ca_bundle_patches_total', { kind: 'validating' }),
    ).toBe(2);
    expect(await metric(registry, 'buildkit_fleet_certs_ca_bundle_in_sync')).toBe(1);
    expect((await injector.sync(PEM)).patched).toEqual([]);
  });

  test('RBAC refusal is an error log line and a metric; the same problem is not logged every time', async () => {
    const { client, forbidden } = fakeClient({
      mutating: [config('a', undefined)],
      validating: [config('a', undefined)],
    });
    forbidden.add('patch');
    const registry = new Registry();
    const { logger, lines } = capture();
    const injector = createCaBundleInjector({ targets: { names: ['a'] }, client, logger, registry });
    const report = await injector.sync(PEM);
    expect(report.inSync).toBe(false);
    expect(report.forbidden).toEqual(['cannot patch mutating a: 403', 'cannot patch validating a: 403']);
    await injector.sync(PEM);
    const errors = lines.filter((l) => l['level'] === 50);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({
      msg: 'caBundle cannot be kept in the webhook configurations: RBAC forbids it',
    });
    expect(
      await metric(registry, 'buildkit_fleet_certs_errors_total', { reason: 'ca_bundle_forbidden' }),
    ).toBe(4);
    forbidden.delete('patch');
    expect((await injector.sync(PEM)).inSync).toBe(true);
    expect(lines.at(-1)).toMatchObject({ msg: 'caBundle is in place again in every webhook configuration' });
  });

  test('missing configurations are a warning, and not a reason to hold anything back', async () => {
    const { client } = fakeClient({});
    const { logger, lines } = capture();
    const report = await createCaBundleInjector({ targets: { names: ['gone'] }, client, logger }).sync(PEM);
    expect(report).toMatchObject({
      found: [],
      missing: ['MutatingWebhookConfiguration/gone', 'ValidatingWebhookConfiguration/gone'],
      inSync: true,
    });
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 40,
        msg: 'webhook configurations to put the caBundle into were not found',
      }),
    );
  });

  describe('a first install: failurePolicy Fail waits for the webhook Service', () => {
    const HELD = 'failurePolicy held at Ignore until the webhook Service has a ready endpoint';
    const pending = () => {
      const c = config('x', undefined);
      c.metadata!.annotations = { 'buildkit-fleet.io/failure-policy': 'Fail' };
      c.webhooks![0]!.failurePolicy = 'Ignore';
      c.webhooks![0]!.clientConfig = { service: { namespace: 'sys', name: 'hook' } };
      return c;
    };

    test('the bundle goes in at once; Fail once an endpoint has been ready for the settle time', async () => {
      const { client, objects } = fakeClient({ mutating: [pending()] });
      let ready = false;
      const asked: string[] = [];
      client.servingEndpoints = async (service) => {
        asked.push(`${service.namespace}/${service.name}`);
        return ready;
      };
      const { logger, lines } = capture();
      const injector = createCaBundleInjector({
        targets: { names: ['x'] },
        client,
        logger,
        intervalMs: 3_600_000,
        watch: false,
        settleMs: 150,
        pendingRecheckMs: 10,
      });
      const x = () => objects.mutating.get('x')!;
      try {
        const report = await injector.sync(PEM);
        expect(report).toMatchObject({
          patched: ['MutatingWebhookConfiguration/x'],
          waiting: ['MutatingWebhookConfiguration/x w0: Service sys/hook has no ready endpoint yet'],
          inSync: true,
        });
        expect(x().webhooks![0]).toMatchObject({ failurePolicy: 'Ignore', clientConfig: { caBundle: B64 } });
        injector.start(async () => PEM);
        await until('rechecks', () => asked.length >= 4);
        expect(x().webhooks![0]!.failurePolicy).toBe('Ignore');
        expect(x().metadata!.annotations).toEqual({ 'buildkit-fleet.io/failure-policy': 'Fail' });
        // said once, not on every recheck
        expect(lines.filter((l) => l['msg'] === HELD)).toHaveLength(1);

        ready = true;
        const readyAt = Date.now();
        await until('Fail', () => x().webhooks![0]!.failurePolicy === 'Fail');
        expect(Date.now() - readyAt).toBeGreaterThanOrEqual(150);
        expect(x().metadata!.annotations).toEqual({});
        expect(lines).toContainEqual(
          expect.objectContaining({
            msg: 'caBundle patched, failurePolicy set',
            configuration: 'MutatingWebhookConfiguration/x',
            failurePolicy: ['w0: Fail'],
            annotationRemoved: 'buildkit-fleet.io/failure-policy',
          }),
        );
        // nothing waits any more: the quick rechecks stop
        const settled = asked.length;
        await sleep(100);
        expect(asked.length).toBe(settled);
      } finally {
        injector.stop();
      }
    });

    test('an endpoint that goes unready before the settle time restarts the wait', async () => {
      const { client, objects } = fakeClient({ mutating: [pending()] });
      const answers = [true, false, true];
      client.servingEndpoints = async () => answers.shift() ?? true;
      const injector = createCaBundleInjector({
        targets: { names: ['x'] },
        client,
        logger: capture().logger,
        settleMs: 60,
      });
      expect((await injector.sync(PEM)).waiting).toHaveLength(1); // ready, not settled
      await sleep(80);
      expect((await injector.sync(PEM)).waiting).toHaveLength(1); // unready: forgotten
      expect((await injector.sync(PEM)).waiting).toHaveLength(1); // ready again, since now
      expect(objects.mutating.get('x')!.webhooks![0]!.failurePolicy).toBe('Ignore');
      await sleep(80);
      expect((await injector.sync(PEM)).waiting).toEqual([]);
      expect(objects.mutating.get('x')!.webhooks![0]!.failurePolicy).toBe('Fail');
    });

    test('endpoints RBAC forbids: the policy is set at once, with an error saying why', async () => {
      const { client, objects } = fakeClient({ mutating: [pending()] });
      client.servingEndpoints = async () => {
        throw new WebhookConfigAccessError('cannot list EndpointSlices of Service sys/hook: 403', 403);
      };
      const registry = new Registry();
      const { logger, lines } = capture();
      const injector = createCaBundleInjector({ targets: { names: ['x'] }, client, logger, registry });
      expect((await injector.sync(PEM)).waiting).toEqual([]);
      expect(objects.mutating.get('x')!.webhooks![0]!.failurePolicy).toBe('Fail');
      expect(lines).toContainEqual(
        expect.objectContaining({
          level: 50,
          service: 'sys/hook',
          msg: 'failurePolicy is set without waiting for the webhook Service to answer: RBAC forbids reading its endpoints',
        }),
      );
      expect(
        await metric(registry, 'buildkit_fleet_certs_errors_total', { reason: 'endpoints_forbidden' }),
      ).toBe(1);
    });

    test('endpoints that cannot be read for another reason keep the wait', async () => {
      const { client, objects } = fakeClient({ mutating: [pending()] });
      client.servingEndpoints = async () => {
        throw new WebhookConfigAccessError('cannot list EndpointSlices of Service sys/hook: 503', 503);
      };
      const { logger, lines } = capture();
      const report = await createCaBundleInjector({ targets: { names: ['x'] }, client, logger }).sync(PEM);
      expect(report.waiting).toHaveLength(1);
      expect(objects.mutating.get('x')!.webhooks![0]).toMatchObject({
        failurePolicy: 'Ignore',
        clientConfig: { caBundle: B64 },
      });
      expect(lines).toContainEqual(
        expect.objectContaining({ level: 40, msg: 'cannot tell whether the webhook Service answers' }),
      );
    });
  });

  test('a watch event showing a reset caBundle restores it from the source', async () => {
    const { client, objects } = fakeClient(
      {
        mutating: [config('a', undefined), config('b', undefined)],
        validating: [config('a', undefined)],
      },
      { 'team=ci': ['b'] },
    );
    let version = 1;
    const versioned = (o: WebhookConfigObject) => ({
      ...structuredClone(o),
      metadata: { ...o.metadata, resourceVersion: String(++version) },
    });
    const apis = new Map<WebhookKind, ReturnType<typeof fakeWatchApi<WebhookConfigObject>>>();
    for (const kind of ['mutating', 'validating'] as const) {
      const api = fakeWatchApi<WebhookConfigObject>((selector) => ({
        metadata: { resourceVersion: String(version) },
        items: [...objects[kind].values()]
          .filter((o) =>
            selector.fieldSelector
              ? selector.fieldSelector === `metadata.name=${o.metadata!.name}`
              : o.metadata!.name === 'b',
          )
          .map(versioned),
      }));
      apis.set(kind, api);
    }
    client.watcher = {
      list: (kind, selector) => apis.get(kind)!.calls.list(selector),
      watch: (path, ...rest) =>
        apis.get(path.includes('/mutating') ? 'mutating' : 'validating')!.calls.watch(path, ...rest),
    };
    const { logger, lines } = capture();
    const injector = createCaBundleInjector({
      targets: { names: ['a'], labelSelector: 'team=ci' },
      client,
      logger,
      intervalMs: 3_600_000,
    });
    await injector.sync(PEM);
    let asked = 0;
    injector.start(async () => {
      asked++;
      return PEM;
    });
    const mutating = apis.get('mutating')!;
    try {
      // One informer per kind and selector: by name and by label, each listing then watching.
      await until('four watches', () => [...apis.values()].every((api) => api.watches.length === 2));
      for (const [kind, api] of apis) {
        expect(api.lists).toEqual([{ fieldSelector: 'metadata.name=a' }, { labelSelector: 'team=ci' }]);
        expect(api.watches.map((w) => [w.path, w.query['fieldSelector'], w.query['labelSelector']])).toEqual([
          [
            `/apis/admissionregistration.k8s.io/v1/${kind}webhookconfigurations`,
            'metadata.name=a',
            undefined,
          ],
          [`/apis/admissionregistration.k8s.io/v1/${kind}webhookconfigurations`, undefined, 'team=ci'],
        ]);
      }
      // The lists and our own patch coming back as an event hold the right bundle: nothing to do.
      mutating.watches[0]!.emit('MODIFIED', versioned(objects.mutating.get('a')!));
      await sleep(200);
      expect(asked).toBe(0);
      // Someone (helm upgrade) resets it.
      objects.mutating.get('a')!.webhooks![0]!.clientConfig = {};
      mutating.watches[0]!.emit('MODIFIED', versioned(objects.mutating.get('a')!));
      await until(
        'caBundle restored',
        () => objects.mutating.get('a')!.webhooks![0]!.clientConfig!.caBundle === B64,
      );
      expect(asked).toBe(1);
      expect(lines).toContainEqual(
        expect.objectContaining({
          msg: 'caBundle patched',
          trigger: 'watch: a changed',
          reason: 'caBundle was empty',
        }),
      );
      // Also through the label selector's watch, after that watch ended and came back.
      mutating.watches[1]!.end(null);
      await until('the label watch to reconnect', () => mutating.watches.length === 3);
      objects.mutating.get('b')!.webhooks![0]!.clientConfig = {};
      mutating.watches[2]!.emit('MODIFIED', versioned(objects.mutating.get('b')!));
      await until(
        'caBundle restored',
        () => objects.mutating.get('b')!.webhooks![0]!.clientConfig!.caBundle === B64,
      );
      expect(asked).toBe(2);
    } finally {
      injector.stop();
    }
    await until('every watch to be closed', () =>
      [...apis.values()].every((api) => api.watches.every((w) => w.closed)),
    );
  });

  test('RBAC forbidding the watch: logged once per watch at warn, counted, not retried', async () => {
    const { client } = fakeClient({
      mutating: [config('a', undefined)],
      validating: [config('a', undefined)],
    });
    const api = fakeWatchApi<WebhookConfigObject>(() => ({ metadata: { resourceVersion: '1' }, items: [] }));
    client.watcher = { list: (_kind, selector) => api.calls.list(selector), watch: api.calls.watch };
    const registry = new Registry();
    const { logger, lines } = capture();
    const injector = createCaBundleInjector({
      targets: { names: ['a'] },
      client,
      logger,
      registry,
      intervalMs: 3_600_000,
    });
    injector.start(async () => PEM);
    try {
      await until('two watches', () => api.watches.length === 2);
      for (const w of api.watches) w.end(httpError(403));
      await sleep(100);
      expect(api.watches).toHaveLength(2);
      expect(api.lists).toHaveLength(2);
      expect(lines.filter((l) => l['msg'] === FORBIDDEN_LINE)).toEqual([
        expect.objectContaining({
          level: 40,
          watch: 'mutatingwebhookconfigurations metadata.name=a',
          status: 403,
        }),
        expect.objectContaining({
          level: 40,
          watch: 'validatingwebhookconfigurations metadata.name=a',
          status: 403,
        }),
      ]);
      expect(
        await metric(registry, 'buildkit_fleet_certs_errors_total', { reason: 'ca_bundle_watch_forbidden' }),
      ).toBe(2);
    } finally {
      injector.stop();
    }
  });
});

describe('keepWatching (on the shared informer)', () => {
  type Obj = { metadata: { name: string; resourceVersion: string } };
  const obj = (name: string, resourceVersion: string): Obj => ({ metadata: { name, resourceVersion } });

  test('lists, watches from the list\u2019s version, reconnects when the watch ends, restarts after errors, gives up only on 403', async () => {
    const api = fakeWatchApi<Obj>(() => ({ metadata: { resourceVersion: '10' }, items: [obj('a', '5')] }));
    const events: string[] = [];
    let forbidden = 0;
    const { logger, lines } = capture();
    const kept = keepWatching<Obj>({
      path: '/api/v1/namespaces/ns/secrets',
      selector: { fieldSelector: 'metadata.name=a' },
      calls: api.calls,
      what: 'Secret ns/a',
      logger,
      restartBaseMs: 10,
      onEvent: (type, o) => events.push(`${type} ${o.metadata.name} ${o.metadata.resourceVersion}`),
      onForbidden: () => forbidden++,
    });
    try {
      await until('the watch', () => api.watches.length === 1);
      expect(api.lists).toEqual([{ fieldSelector: 'metadata.name=a' }]);
      expect(api.watches[0]).toMatchObject({
        path: '/api/v1/namespaces/ns/secrets',
        query: { fieldSelector: 'metadata.name=a', resourceVersion: '10' },
      });
      api.watches[0]!.emit('MODIFIED', obj('a', '11'));
      api.watches[0]!.end(null); // the server's timeout: reconnect at once, from where it was
      await until('a reconnect', () => api.watches.length === 2);
      expect(api.watches[1]!.query).toMatchObject({ resourceVersion: '11' });
      api.watches[1]!.end(httpError(500)); // a failure: restarted after a backoff
      await until('a restart', () => api.watches.length === 3);
      expect(api.watches[2]!.query).toMatchObject({ resourceVersion: '11' });
      api.watches[2]!.emit('DELETED', obj('a', '12'));
      api.watches[2]!.end(httpError(403));
      await sleep(100);
      expect(api.watches).toHaveLength(3);
      expect(api.lists).toHaveLength(1);
      expect(forbidden).toBe(1);
      expect(events).toEqual(['ADDED a 5', 'MODIFIED a 11', 'DELETED a 12']);
      expect(lines.filter((l) => l['msg'] === FORBIDDEN_LINE)).toEqual([
        expect.objectContaining({ level: 40, watch: 'Secret ns/a', status: 403 }),
      ]);
    } finally {
      await kept.stop();
    }
  });

  test('a failing list is retried; a 403 on the list gives up at once', async () => {
    let failLists = 2;
    const api = fakeWatchApi<Obj>(() => {
      if (failLists-- > 0)
        throw Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNREFUSED' } });
      return { metadata: { resourceVersion: '1' }, items: [] };
    });
    const options = {
      path: '/x',
      selector: { labelSelector: 'app=x' },
      what: 'x',
      logger: pino({ level: 'silent' }),
      restartBaseMs: 10,
      onEvent: () => undefined,
    };
    const kept = keepWatching<Obj>({ ...options, calls: api.calls });
    try {
      await until('the watch after two failed lists', () => api.watches.length === 1);
      expect(api.lists).toHaveLength(3);
      expect(api.watches[0]!.query).toMatchObject({ labelSelector: 'app=x', resourceVersion: '1' });
    } finally {
      await kept.stop();
    }

    const refused = fakeWatchApi<Obj>(() => {
      throw Object.assign(new Error('HTTP-Code: 403'), { code: 403 }); // what a typed client-node API throws
    });
    let forbidden = 0;
    const gaveUp = keepWatching<Obj>({ ...options, calls: refused.calls, onForbidden: () => forbidden++ });
    try {
      await sleep(100);
      expect(forbidden).toBe(1);
      expect(refused.lists).toHaveLength(1);
      expect(refused.watches).toHaveLength(0);
    } finally {
      await gaveUp.stop();
    }
  });
});

describe('the rotator\u2019s Secret watch', () => {
  test('a change by someone else triggers a check; our own write does not; 403 gives up and is counted', async () => {
    const store = memorySecretStore();
    const secretOf = (): V1Secret => ({
      metadata: { name: 'tls', namespace: 'ns', resourceVersion: store.snapshot()?.resourceVersion ?? '' },
      data: { 'tls.key': 'c2VjcmV0' },
    });
    const api = fakeWatchApi<V1Secret>(() => ({ metadata: { resourceVersion: '100' }, items: [secretOf()] }));
    const registry = new Registry();
    const { logger, lines } = capture();
    const rotator = await startSelfManagedCerts({
      namespace: 'ns',
      secretName: 'tls',
      serviceName: 'webhook',
      webhookConfigurations: false,
      store,
      secretWatchCalls: api.calls,
      logger,
      registry,
    });
    const watchChecks = () => lines.filter((l) => String(l['trigger']).startsWith('watch: '));
    try {
      await until('the watch', () => api.watches.length === 1);
      expect(api.lists).toEqual([{ fieldSelector: 'metadata.name=tls' }]);
      expect(api.watches[0]).toMatchObject({
        path: '/api/v1/namespaces/ns/secrets',
        query: { fieldSelector: 'metadata.name=tls' },
      });
      // The list shows the version this replica wrote at start: nothing to do.
      await sleep(200);
      expect(watchChecks()).toEqual([]);
      // Someone deletes the Secret: the check right after the event writes it again.
      store.put(undefined);
      api.watches[0]!.emit('DELETED', secretOf());
      await until('the Secret to be created again and served', () =>
        watchChecks().some((l) => l['msg'] === 'serving certificate replaced'),
      );
      expect(watchChecks()).toEqual([
        expect.objectContaining({ msg: 'serving certificate replaced', trigger: 'watch: Secret deleted' }),
      ]);
      // at start and after the deletion
      expect(lines.filter((l) => l['msg'] === 'certificate Secret created')).toHaveLength(2);
      expect(store.snapshot()).toBeDefined();
      const checks = watchChecks().length;
      // Our own write coming back: the version is the one we hold.
      api.watches[0]!.emit('ADDED', secretOf());
      await sleep(200);
      expect(watchChecks()).toHaveLength(checks);
      api.watches[0]!.end(httpError(403));
      await sleep(100);
      expect(api.watches).toHaveLength(1);
      expect(lines.filter((l) => l['msg'] === FORBIDDEN_LINE)).toEqual([
        expect.objectContaining({ level: 40, watch: 'Secret memory/certs', status: 403 }),
      ]);
      expect(
        await metric(registry, 'buildkit_fleet_certs_errors_total', { reason: 'secret_watch_forbidden' }),
      ).toBe(1);
    } finally {
      await rotator.stop();
    }
  });
});

describe('reconcileSecret', () => {
  test('a write that loses a race decides again on the winner\u2019s data', async () => {
    const store = memorySecretStore({ v: '1' });
    const seen: (string | undefined)[] = [];
    const result = await reconcileSecret(store, async (current) => {
      seen.push(current?.data['v']);
      // Another replica writes between our read and our update, once.
      if (seen.length === 1) store.put({ v: 'other' });
      return current?.data['v'] === 'other' ? undefined : { data: { v: 'mine' } };
    });
    expect(seen).toEqual(['1', 'other']);
    expect(result.wrote).toBe(false);
    expect(result.secret.data).toEqual({ v: 'other' });
  });

  test('create-if-absent: the loser re-reads and keeps the winner\u2019s Secret', async () => {
    const store = memorySecretStore();
    const results = await Promise.all(
      ['a', 'b', 'c'].map((who) =>
        reconcileSecret(store, (current) => (current ? undefined : { data: { who } }), { backoffMs: 1 }),
      ),
    );
    expect(results.filter((r) => r.wrote)).toHaveLength(1);
    expect(new Set(results.map((r) => r.secret.data['who'])).size).toBe(1);
  });
});

describe('durations', () => {
  test.each([
    ['3650d', 3650 * 86_400_000],
    ['90d', 90 * 86_400_000],
    ['12h', 12 * 3_600_000],
    ['1h30m', 5_400_000],
    ['30s', 30_000],
    ['500ms', 500],
    ['1.5h', 5_400_000],
    ['1y', 365 * 86_400_000],
    ['2w', 14 * 86_400_000],
  ])('%s', (text, ms) => expect(parseCertDuration(text)).toBe(ms));
  test.each(['', '90', 'd', '1x', '-1d', '1d 2h'])('%j is not a duration', (text) => {
    expect(parseCertDuration(text)).toBeUndefined();
  });
  test('format', () => {
    expect([90 * 86_400_000, 12 * 3_600_000, 90_000, 1500].map(formatCertDuration)).toEqual([
      '90d',
      '12h',
      '90s',
      '1500ms',
    ]);
  });
});

describe('options', () => {
  const parse = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    certConfigFromOptions(parseOptions(args, CERT_OPTIONS, env), env, () => {
      throw new Error('not in a pod');
    });

  test('defaults: files mode, reloaded every minute', () => {
    expect(parse([])).toEqual({ mode: 'files', reloadIntervalMs: 60_000 });
  });

  test('self-managed defaults are cert-controller\u2019s: CA 10 y, serving 1 y, renew 90 d before, check every 12 h', () => {
    const config = parse(['--cert-mode', 'self-managed'], { POD_NAMESPACE: 'bkf-system' });
    expect(config).toEqual({
      mode: 'self-managed',
      selfManaged: {
        namespace: 'bkf-system',
        secretName: 'buildkit-fleet-webhook-tls',
        serviceName: 'buildkit-fleet-webhook',
        clusterDomain: 'cluster.local',
        dnsNames: [],
        ipAddresses: [],
        validity: { caValidityDays: 3650, servingValidityDays: 365, renewBeforeDays: 90, caOverlapDays: 30 },
        checkIntervalMs: 12 * 3_600_000,
        caBundleCheckIntervalMs: 60_000,
        webhookConfigurations: { names: ['buildkit-fleet'] },
      },
    });
  });

  test('short values for tests, lists, selector, env fallback', () => {
    const config = parse(
      [
        '--cert-mode=self-managed',
        '--cert-namespace=ns',
        '--ca-validity=60s',
        '--serving-validity=30s',
        '--renew-before=10s',
        '--ca-overlap=8s',
        '--check-interval=2s',
        '--cert-ip-addresses=127.0.0.1, ::1',
        '--webhook-configurations=a,b',
      ],
      { BKF_WEBHOOK_CONFIGURATION_SELECTOR: 'app=bkf', BKF_CERT_DNS_NAMES: 'webhook.example' },
    );
    expect(config.mode === 'self-managed' && config.selfManaged).toMatchObject({
      namespace: 'ns',
      validity: { caValidityDays: 60 / 86_400, servingValidityDays: 30 / 86_400 },
      checkIntervalMs: 2000,
      ipAddresses: ['127.0.0.1', '::1'],
      dnsNames: ['webhook.example'],
      webhookConfigurations: { names: ['a', 'b'], labelSelector: 'app=bkf' },
    });
  });

  test.each([
    [
      ['--cert-mode=self-managed', '--cert-namespace=ns', '--renew-before=90'],
      /--renew-before "90": must be a positive duration/,
    ],
    [
      ['--cert-mode=self-managed', '--cert-namespace=ns', '--check-interval=20d'],
      /check interval \(20d\) must be at most half/,
    ],
    [
      ['--cert-mode=self-managed', '--cert-namespace=ns', '--renew-before=400d'],
      /renew-before \(400d\) must be shorter than the serving validity/,
    ],
    [['--cert-mode=self-managed'], /needs --cert-namespace/],
  ])('%j is a usage error', (args, message) => {
    expect(() => parse(args)).toThrow(UsageError);
    expect(() => parse(args)).toThrow(message);
  });

  test('--help shows every setting with its default and env', () => {
    const help = optionsHelp(CERT_OPTIONS);
    for (const line of [
      /--ca-validity <string> .*\(default 3650d; env BKF_CA_VALIDITY\)/,
      /--serving-validity <string> .*\(default 365d; env BKF_SERVING_VALIDITY\)/,
      /--renew-before <string> .*\(default 90d; env BKF_RENEW_BEFORE\)/,
      /--check-interval <string> .*\(default 12h; env BKF_CERT_CHECK_INTERVAL\)/,
      /--cert-mode <files\|self-managed> .*\(default files; env BKF_CERT_MODE\)/,
    ]) {
      expect(help).toMatch(line);
    }
  });
});

describe('starting a certificate source', () => {
  test('unreadable certificate files stop the command with a startup error naming them, not a crash', async () => {
    const start = startCertSource(
      { mode: 'files', reloadIntervalMs: 60_000 },
      {
        logger: pino({ level: 'silent' }),
        certFile: '/nonexistent/tls.crt',
        keyFile: '/nonexistent/tls.key',
      },
    );
    await expect(start).rejects.toBeInstanceOf(StartupError);
    await expect(start).rejects.toThrow(
      /cannot serve \/nonexistent\/tls\.crt with \/nonexistent\/tls\.key: .*ENOENT/,
    );
  });
});
