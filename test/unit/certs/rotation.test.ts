// rotator.ts with an injected clock, an in-memory Secret store (API server semantics: 409 on races)
// and in-memory webhook configurations: the order of a CA rotation, replicas agreeing, repairs, and
// what happens when RBAC says no.
import { X509Certificate } from 'node:crypto';
import fastJsonPatch from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import { pino } from 'pino';
import { Registry } from 'prom-client';

import {
  SECRET_KEYS,
  SecretAccessError,
  WebhookConfigAccessError,
  inspectSecret,
  memorySecretStore,
  startSelfManagedCerts,
} from '../../../certs/index.ts';
import type {
  SelfManagedCerts,
  SelfManagedCertsOptions,
  WebhookConfigClient,
  WebhookKind,
} from '../../../certs/index.ts';
import type { WebhookConfigObject } from '../../../certs/ca-bundle.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const T0 = new Date('2030-01-01T00:00:00Z');

function captureLogger() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { logger, lines };
}

/** Webhook configurations in memory; `forbid` makes calls fail like RBAC would. */
function fakeWebhookConfigs() {
  const objects: Record<WebhookKind, Map<string, WebhookConfigObject>> = {
    mutating: new Map([
      ['bkf', { metadata: { name: 'bkf' }, webhooks: [{ name: 'default.x', clientConfig: {} }] }],
    ]),
    validating: new Map([
      [
        'bkf',
        {
          metadata: { name: 'bkf' },
          webhooks: [
            { name: 'validate.x', clientConfig: {} },
            { name: 'validate.y', clientConfig: {} },
          ],
        },
      ],
    ]),
  };
  const forbid = new Set<'get' | 'patch'>();
  const patches: { kind: WebhookKind; at: number; bundle: string }[] = [];
  let clock = () => 0;
  const client: WebhookConfigClient = {
    async get(kind, name) {
      if (forbid.has('get'))
        throw new WebhookConfigAccessError(`cannot get ${kind} ${name}: 403 forbidden`, 403);
      const o = objects[kind].get(name);
      return o ? structuredClone(o) : undefined;
    },
    async list() {
      return [];
    },
    async patch(kind, name, ops) {
      if (forbid.has('patch'))
        throw new WebhookConfigAccessError(`cannot patch ${kind} ${name}: 403 forbidden`, 403);
      const o = objects[kind].get(name)!;
      fastJsonPatch.applyPatch(o, ops as Operation[], true);
      patches.push({ kind, at: clock(), bundle: Buffer.from(ops[1]!.value as string, 'base64').toString() });
    },
  };
  const bundles = () =>
    [...objects.mutating.values(), ...objects.validating.values()].flatMap((o) =>
      o.webhooks!.map((w) => Buffer.from(w.clientConfig?.caBundle ?? '', 'base64').toString()),
    );
  return {
    client,
    forbid,
    patches,
    setClock: (fn: () => number) => (clock = fn),
    /** The one bundle every entry holds (fails if the entries disagree). */
    published(): string {
      const all = bundles();
      expect(new Set(all).size).toBe(1);
      return all[0]!;
    },
    wipe() {
      for (const o of [...objects.mutating.values(), ...objects.validating.values()]) {
        for (const w of o.webhooks!) w.clientConfig = {};
      }
    },
  };
}

async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}) {
  const metric = registry.getSingleMetric(name);
  if (!metric) return 0;
  const { values } = await metric.get();
  const match = values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val));
  return match?.value ?? 0;
}

// Short lifetimes so a whole CA lifetime passes in a few dozen checks:
// CA rotation starts 1d + 2 x 1d = 3 days before the CA ends, serving certs renew a day before theirs.
const VALIDITY = { caValidityDays: 10, servingValidityDays: 4, renewBeforeDays: 1, caOverlapDays: 1 };

function baseOptions(extra: Partial<SelfManagedCertsOptions>): SelfManagedCertsOptions {
  return {
    namespace: 'bkf-system',
    secretName: 'bkf-webhook-tls',
    serviceName: 'bkf-webhook',
    ipAddresses: ['127.0.0.1'],
    validity: VALIDITY,
    checkIntervalMs: 12 * HOUR,
    webhookConfigurations: { names: ['bkf'] },
    watch: false,
    logger: pino({ level: 'silent' }),
    ...extra,
  };
}

/**
 * Whether a CA in `bundlePem` issued `leafPem` and both are valid at `now`: what the API server checks.
 * OpenSSL through node:crypto, because forge's pure-JS RSA takes ~80 ms per signature under jest.
 */
function trusts(bundlePem: string, leafPem: string, now: Date): boolean {
  return caOf(leafPem, bundlePem, now) !== undefined;
}

function caOf(leafPem: string, bundlePem: string, now: Date): string | undefined {
  const leaf = new X509Certificate(leafPem);
  if (leaf.validFromDate > now || leaf.validToDate <= now) return undefined;
  const cas = bundlePem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  return cas
    .map((pem) => new X509Certificate(pem))
    .find((ca) => ca.validToDate > now && leaf.checkIssued(ca) && leaf.verify(ca.publicKey))?.fingerprint256;
}

describe('a CA lifetime with two replicas', () => {
  let a: SelfManagedCerts | undefined;
  let b: SelfManagedCerts | undefined;
  afterEach(async () => {
    await a?.stop();
    await b?.stop();
  });

  test('publish old+new, then switch, then drop old; every served certificate is always trusted', async () => {
    let now = T0.getTime();
    const clock = () => new Date(now);
    const store = memorySecretStore();
    const webhooks = fakeWebhookConfigs();
    webhooks.setClock(() => now);
    const registry = new Registry();
    const common = { store, webhookClient: webhooks.client, now: clock, registry };
    a = await startSelfManagedCerts(baseOptions(common));
    now += 6 * HOUR;
    b = await startSelfManagedCerts(baseOptions(common));
    const changesA: string[] = [];
    a.onChange((m) => changesA.push(m.certPem));

    const log: { at: number; who: string; steps: string[] }[] = [];
    const served = () => ({ a: a!.current().certPem, b: b!.current().certPem });
    const assertTrusted = (pems: string[]) => {
      const bundle = webhooks.published();
      for (const pem of pems) expect(trusts(bundle, pem, clock())).toBe(true);
    };

    // 14 days in 6-hour steps, the replicas checking alternately: more than one CA lifetime.
    for (let i = 0; i < 56; i++) {
      const who = i % 2 === 0 ? a : b;
      const before = served();
      now += 6 * HOUR;
      const result = await who.checkNow();
      if (result.steps.length > 0) log.push({ at: now, who: i % 2 === 0 ? 'a' : 'b', steps: result.steps });
      // What both replicas serve now, and what they served before this check (a replica that has
      // not re-read the Secret yet), is trusted by the caBundle the API server uses.
      assertTrusted([...Object.values(served()), ...Object.values(before)]);
    }

    const steps = log.flatMap((entry) => entry.steps.map((step) => ({ step, at: entry.at })));
    const timeOf = (step: string) => steps.find((s) => s.step === step)?.at;
    const addNext = timeOf('rotate-ca/add-next')!;
    const switchAt = timeOf('rotate-ca/switch')!;
    const dropAt = timeOf('rotate-ca/drop-previous')!;
    expect(steps.map((s) => s.step)).toEqual(
      expect.arrayContaining([
        'renew-serving',
        'rotate-ca/add-next',
        'rotate-ca/switch',
        'rotate-ca/drop-previous',
      ]),
    );
    expect(addNext).toBeLessThan(switchAt);
    expect(switchAt - addNext).toBeGreaterThanOrEqual(VALIDITY.caOverlapDays * DAY);
    expect(dropAt - switchAt).toBeGreaterThanOrEqual(VALIDITY.caOverlapDays * DAY);
    // The rotation starts renew-before + 2 x overlap (3 days) before the first CA ends (T0 + 10 d).
    expect(addNext).toBeGreaterThanOrEqual(T0.getTime() + 7 * DAY);
    expect(addNext).toBeLessThan(T0.getTime() + 7 * DAY + 12 * HOUR);

    // caBundle order: [old] -> [old, new] (add-next) -> [new, old] (switch) -> [new] (drop).
    const sizes = webhooks.patches
      .filter((p) => p.kind === 'mutating')
      .map((p) => ({ at: p.at, cas: p.bundle.match(/BEGIN CERTIFICATE/g)!.length }));
    expect(sizes.find((p) => p.at === addNext)?.cas).toBe(2);
    expect(sizes.find((p) => p.at === dropAt)?.cas).toBe(1);
    // The new CA was published before any replica served a certificate from it.
    const bundleAtAdd = webhooks.patches.find((p) => p.at === addNext)!.bundle;
    const secretAfter = store.snapshot()!.data;
    const newCa = inspectSecret(secretAfter, clock()).active!.cert;
    expect(bundleAtAdd).toContain(newCa.pem.trim());

    // Both replicas serve from the new CA by the end (once each has re-read the Secret).
    await a.checkNow();
    expect(caOf(a.current().certPem, secretAfter[SECRET_KEYS.caBundle]!, clock())).toBe(newCa.fingerprint);
    expect(b.current().certPem).toBe(a.current().certPem);
    expect(changesA.length).toBeGreaterThanOrEqual(3);
    expect(
      await metricValue(registry, 'buildkit_fleet_certs_rotations_total', { kind: 'rotate-ca/switch' }),
    ).toBe(1);
    expect(
      await metricValue(registry, 'buildkit_fleet_certs_reloads_total', { source: 'secret' }),
    ).toBeGreaterThan(0);
    expect(await metricValue(registry, 'buildkit_fleet_certs_expiry_timestamp_seconds', { cert: 'ca' })).toBe(
      newCa.notAfter.getTime() / 1000,
    );
  });

  test('the switch waits while caBundle cannot be written, and happens once it can', async () => {
    let now = T0.getTime();
    const clock = () => new Date(now);
    const store = memorySecretStore();
    const webhooks = fakeWebhookConfigs();
    const registry = new Registry();
    const { logger, lines } = captureLogger();
    a = await startSelfManagedCerts(
      baseOptions({ store, webhookClient: webhooks.client, now: clock, registry, logger }),
    );
    let result;
    do {
      now += 12 * HOUR;
      result = await a.checkNow();
    } while (!result.steps.includes('rotate-ca/add-next'));
    const oldLeaf = a.current().certPem;

    // Someone resets caBundle and RBAC no longer lets us patch it.
    webhooks.wipe();
    webhooks.forbid.add('patch');
    now += 1 * DAY + HOUR;
    result = await a.checkNow();
    expect(result.postponed).toMatch(/the next CA has been in ca\.crt since/);
    expect(result.steps).toEqual([]);
    expect(a.current().certPem).toBe(oldLeaf);
    expect(
      await metricValue(registry, 'buildkit_fleet_certs_errors_total', { reason: 'switch_postponed' }),
    ).toBe(1);
    expect(
      await metricValue(registry, 'buildkit_fleet_certs_errors_total', { reason: 'ca_bundle_forbidden' }),
    ).toBe(2);
    expect(await metricValue(registry, 'buildkit_fleet_certs_ca_bundle_in_sync')).toBe(0);
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 50,
        msg: 'caBundle cannot be kept in the webhook configurations: RBAC forbids it',
        forbidden: expect.arrayContaining([expect.stringContaining('403 forbidden')]),
      }),
    );
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 40,
        msg: 'CA switch postponed: the next CA is not yet in every caBundle',
      }),
    );

    webhooks.forbid.delete('patch');
    now += HOUR;
    result = await a.checkNow();
    expect(result.steps).toEqual(['rotate-ca/switch']);
    expect(trusts(webhooks.published(), a.current().certPem, clock())).toBe(true);
    expect(trusts(webhooks.published(), oldLeaf, clock())).toBe(true);
    expect(await metricValue(registry, 'buildkit_fleet_certs_ca_bundle_in_sync')).toBe(1);
  });
});

describe('start-up', () => {
  const started: SelfManagedCerts[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((r) => r.stop()));
  });

  test('replicas starting together end with one CA and the same certificate', async () => {
    const store = memorySecretStore();
    const webhooks = fakeWebhookConfigs();
    const registry = new Registry();
    const replicas = await Promise.all(
      [1, 2, 3].map(() =>
        startSelfManagedCerts(baseOptions({ store, webhookClient: webhooks.client, registry })),
      ),
    );
    started.push(...replicas);
    const pems = new Set(replicas.map((r) => r.current().certPem));
    expect(pems.size).toBe(1);
    expect(await metricValue(registry, 'buildkit_fleet_certs_rotations_total', { kind: 'create' })).toBe(1);
    expect(webhooks.published()).toBe(store.snapshot()!.data[SECRET_KEYS.caBundle]);
  });

  test('a Secret full of garbage is repaired, with a log line that says what was wrong', async () => {
    const store = memorySecretStore({ 'tls.crt': 'garbage', 'tls.key': 'garbage', 'ca.crt': 'garbage' });
    const { logger, lines } = captureLogger();
    const registry = new Registry();
    const r = await startSelfManagedCerts(
      baseOptions({ store, webhookClient: fakeWebhookConfigs().client, logger, registry }),
    );
    started.push(r);
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 40,
        msg: 'certificate Secret repaired',
        secret: 'memory/certs',
        action: 'repair/all',
        problem: 'garbage',
        reason: expect.stringMatching(/^ca\.crt holds no usable certificate: /),
      }),
    );
    expect(await metricValue(registry, 'buildkit_fleet_certs_rotations_total', { kind: 'repair/all' })).toBe(
      1,
    );
    expect(store.snapshot()!.annotations['buildkit-fleet.io/certs-last-change']).toMatch(
      /^repair\/all: ca\.crt holds/,
    );
  });

  test('a Secret broken after start is repaired at the next check; until then the old certificate is served', async () => {
    const store = memorySecretStore();
    const r = await startSelfManagedCerts(baseOptions({ store, webhookClient: fakeWebhookConfigs().client }));
    started.push(r);
    const before = r.current();
    const changes: string[] = [];
    r.onChange((m) => changes.push(m.certPem));
    store.put({ ...store.snapshot()!.data, [SECRET_KEYS.key]: before.caBundlePem });
    const result = await r.checkNow();
    expect(result.steps).toEqual(['repair/serving']);
    expect(r.current().caBundlePem).toBe(before.caBundlePem);
    expect(changes).toHaveLength(1);
    expect(trusts(before.caBundlePem, r.current().certPem, new Date())).toBe(true);
  });

  test('RBAC forbidding the Secret fails the start with the reason', async () => {
    const store = memorySecretStore(undefined, {
      fail: (verb) =>
        verb === 'get'
          ? new SecretAccessError(
              'cannot get Secret bkf-system/bkf-webhook-tls: 403 secrets "bkf-webhook-tls" is forbidden (RBAC: ...)',
              'get',
              403,
            )
          : undefined,
    });
    const registry = new Registry();
    const { logger, lines } = captureLogger();
    await expect(
      startSelfManagedCerts(baseOptions({ store, registry, logger, webhookConfigurations: false })),
    ).rejects.toThrow(/403 secrets "bkf-webhook-tls" is forbidden/);
    expect(
      await metricValue(registry, 'buildkit_fleet_certs_errors_total', { reason: 'secret_forbidden' }),
    ).toBe(1);
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 50,
        msg: 'certificate check failed; keeping the current certificate',
      }),
    );
  });

  test('a check interval too long for the overlap is refused up front', async () => {
    await expect(
      startSelfManagedCerts(
        baseOptions({ store: memorySecretStore(), checkIntervalMs: DAY, webhookConfigurations: false }),
      ),
    ).rejects.toThrow(
      /the check interval \(1d\) must be at most half of both the CA overlap and renew-before \(1d\)/,
    );
  });
});
