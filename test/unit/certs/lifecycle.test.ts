// The smaller pieces of the certificate lifecycle: the caBundle patch and keeper (with a fake API
// and a fake watch), the self-healing watch, the Secret conflict loop, durations and CLI options.
import { setTimeout as sleep } from 'node:timers/promises';
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
  createCaBundleInjector,
  formatCertDuration,
  memorySecretStore,
  parseCertDuration,
  reconcileSecret,
} from '../../../certs/index.ts';
import type { WebhookConfigClient, WebhookKind } from '../../../certs/index.ts';
import type { WebhookConfigObject } from '../../../certs/ca-bundle.ts';
import { keepWatching } from '../../../certs/watch.ts';
import type { WatchFn } from '../../../certs/watch.ts';
import { UsageError } from '../../../flags/errors.ts';
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

  test('a watch event showing a reset caBundle restores it from the source', async () => {
    const { client, objects } = fakeClient({
      mutating: [config('a', undefined)],
      validating: [config('a', undefined)],
    });
    const events: ((type: string, object: unknown) => void)[] = [];
    client.watch = (async (_path, _query, onEvent) => {
      events.push(onEvent);
      return { abort() {} };
    }) satisfies WatchFn;
    const injector = createCaBundleInjector({
      targets: { names: ['a'] },
      client,
      logger: pino({ level: 'silent' }),
      intervalMs: 3_600_000,
    });
    await injector.sync(PEM);
    let asked = 0;
    injector.start(async () => {
      asked++;
      return PEM;
    });
    try {
      expect(events).toHaveLength(2);
      // Our own patch comes back as an event holding the right bundle: nothing to do.
      events[0]!('MODIFIED', objects.mutating.get('a'));
      await sleep(200);
      expect(asked).toBe(0);
      // Someone (helm upgrade) resets it.
      objects.mutating.get('a')!.webhooks![0]!.clientConfig = {};
      events[0]!('MODIFIED', objects.mutating.get('a'));
      for (let i = 0; i < 50 && objects.mutating.get('a')!.webhooks![0]!.clientConfig!.caBundle !== B64; i++)
        await sleep(20);
      expect(asked).toBe(1);
      expect(objects.mutating.get('a')!.webhooks![0]!.clientConfig!.caBundle).toBe(B64);
    } finally {
      injector.stop();
    }
  });
});

describe('keepWatching', () => {
  test('reconnects when the watch ends and gives up only on 403', async () => {
    const dones: ((error: unknown) => void)[] = [];
    const watch: WatchFn = async (_p, _q, _e, onDone) => {
      dones.push(onDone);
      return { abort() {} };
    };
    let forbidden = 0;
    const kept = keepWatching({
      watch,
      path: '/x',
      query: {},
      what: 'x',
      logger: pino({ level: 'silent' }),
      onEvent: () => undefined,
      onForbidden: () => forbidden++,
    });
    try {
      await sleep(10);
      expect(dones).toHaveLength(1);
      dones[0]!(null); // the server's timeout: reconnect at once
      await sleep(20);
      expect(dones).toHaveLength(2);
      dones[1]!(Object.assign(new Error('Forbidden'), { statusCode: 403 }));
      await sleep(50);
      expect(dones).toHaveLength(2);
      expect(forbidden).toBe(1);
    } finally {
      kept.stop();
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
