// Self-managed webhook certificates on the real API server: the Secret is created and caBundle
// patched, the API server then calls our HTTPS webhook; replicas agree on one CA; a whole CA
// rotation happens while `kubectl apply` runs in a loop without one failure; a wiped caBundle
// and a Secret full of garbage are repaired; missing RBAC is reported.
//
// Everything is unique to this file (namespace, webhook configuration names, a namespaceSelector
// on our own namespace label) so other test files sharing the cluster never reach this webhook.
import { randomBytes } from 'node:crypto';
import type { RequestListener } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { AdmissionregistrationV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';

import { SECRET_KEYS, SECRET_TYPE_TLS, startSelfManagedCerts } from '../../certs/index.ts';
import type { SelfManagedCerts, SelfManagedCertsOptions } from '../../certs/index.ts';
import { createApp } from '../../webhook/app.ts';
import {
  ROUTES,
  mutatingWebhookConfiguration,
  validatingWebhookConfiguration,
} from '../../webhook/configurations.ts';
import { mutateTemplate, validateBuildkitHandler, validateTemplateHandler } from '../../webhook/handlers.ts';
import {
  applyWebhookConfigurations,
  deleteWebhookConfigurations,
  liveTemplateReader,
} from '../../webhook/kube.ts';
import { createWebhookMetrics } from '../../webhook/metrics.ts';
import type { WebhookMetrics } from '../../webhook/metrics.ts';
import { createWebhookServer } from '../../webhook/server.ts';
import type { WebhookServer } from '../../webhook/server.ts';
import { testCluster } from '../../hack/testenv.ts';
import { installCrds } from '../support/crds.ts';
import { startTcpRelay } from '../support/tcp-relay.ts';
import { waitFor } from '../support/wait.ts';

const cluster = testCluster();
const kubectl = cluster.kubectl;
const id = randomBytes(3).toString('hex');
const configName = `bkf-certs-${id}`;
const nsLabel = { 'buildkit-fleet.test/certs': id };
const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
const admission = cluster.kubeConfig.makeApiClient(AdmissionregistrationV1Api);

let namespace: string;
let balancer: Balancer;
let server: WebhookServer | undefined;
let webhookMetrics: WebhookMetrics;
const rotators: SelfManagedCerts[] = [];
const servers: WebhookServer[] = [];
const logLines: Record<string, unknown>[] = [];

/** Log lines are kept for assertions; BKF_TEST_LOG=info also prints them. */
function testLogger(name: string): Logger {
  const echo = process.env['BKF_TEST_LOG'];
  return pino(
    { level: 'debug', base: { rotator: name } },
    {
      write(line: string) {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        logLines.push(parsed);
        if (echo && (parsed['level'] as number) >= pino.levels.values[echo]!) process.stderr.write(line);
      },
    },
  );
}

async function start(name: string, options: Partial<SelfManagedCertsOptions>): Promise<SelfManagedCerts> {
  const rotator = await startSelfManagedCerts({
    namespace,
    secretName: `${configName}-tls`,
    serviceName: 'bkf-webhook',
    ipAddresses: ['127.0.0.1'],
    webhookConfigurations: { names: [configName] },
    caBundleCheckIntervalMs: 5000,
    kubeConfig: cluster.kubeConfig,
    logger: testLogger(name),
    ...options,
  });
  rotators.push(rotator);
  return rotator;
}

async function stopRotator(rotator: SelfManagedCerts): Promise<void> {
  rotators.splice(rotators.indexOf(rotator), 1);
  await rotator.stop();
}

/** The caBundle of every entry of both configurations, decoded. */
async function caBundles(): Promise<string[]> {
  const m = await admission.readMutatingWebhookConfiguration({ name: configName });
  const v = await admission.readValidatingWebhookConfiguration({ name: configName });
  return [...m.webhooks!, ...v.webhooks!].map((w) =>
    Buffer.from(w.clientConfig.caBundle ?? '', 'base64').toString(),
  );
}

async function readSecret(name = `${configName}-tls`) {
  const secret = await core.readNamespacedSecret({ name, namespace });
  const data = Object.fromEntries(
    Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]),
  );
  return { secret, data };
}

const template = (name: string, annotation = '') =>
  `apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: BuildkitTemplate\nmetadata:\n  name: ${name}\n` +
  (annotation ? `  annotations:\n    iteration: "${annotation}"\n` : '') +
  'spec:\n  image: moby/buildkit:v0.13.1\n  resources:\n    maximum:\n      memory: 8Gi\n';
const apply = (yaml: string) =>
  kubectl(['apply', '-n', namespace, '-f', '-'], { input: yaml, allowFail: true, timeoutMs: 30_000 });
const reviews = async (metrics = webhookMetrics) =>
  (await metrics.reviews.get()).values.reduce((sum, v) => sum + v.value, 0);

interface Balancer {
  port: number;
  /** Ports of the webhook replicas; each new connection goes to the next one (round robin). */
  backends: number[];
  close(): Promise<void>;
}

/** A TCP (TLS passthrough) round-robin balancer: what a Service does in front of webhook replicas. */
async function startBalancer(): Promise<Balancer> {
  const backends: number[] = [];
  let next = 0;
  const relay = await startTcpRelay(() => {
    const port = backends[next++ % Math.max(backends.length, 1)];
    return port === undefined ? undefined : { host: '127.0.0.1', port };
  });
  return { port: relay.port, backends, close: relay.close };
}

/**
 * The real webhook app, answering with `Connection: close`: the API server then opens a new TLS
 * connection for every review, so every review checks the certificate served at that moment
 * against the caBundle of that moment (with keep-alive, one handshake would cover many reviews).
 */
function webhookApp(metrics: WebhookMetrics): RequestListener {
  const app = createApp({
    routes: {
      [ROUTES.mutateTemplate]: mutateTemplate,
      [ROUTES.validateTemplate]: validateTemplateHandler,
      [ROUTES.validateBuildkit]: validateBuildkitHandler(liveTemplateReader(cluster.kubeConfig)),
    },
    logger: pino({ level: 'silent' }),
    metrics,
    isReady: () => true,
  });
  return (req, res) => {
    res.setHeader('connection', 'close');
    app(req, res);
  };
}

let serving: SelfManagedCerts;

beforeAll(async () => {
  await installCrds(); // retries the known kubectl-wait race itself
  namespace = await cluster.createNamespace('certs');
  await kubectl(['label', 'namespace', namespace, ...Object.entries(nsLabel).map(([k, v]) => `${k}=${v}`)]);
  balancer = await startBalancer();
  // Registered the way the chart does it: no caBundle, the rotator fills it in.
  const configOptions = {
    name: configName,
    clientConfig: (path: string) => ({ url: `https://127.0.0.1:${balancer.port}${path}` }),
    failurePolicy: 'Fail' as const,
    namespaceLabels: nsLabel,
  };
  // These tests are about which certificate the API server trusts. On a loaded machine a call to
  // the in-process webhook once took over the 5 s our configurations allow: give it 15 s here, so
  // a slow call is not mistaken for a trust failure (which fails at once, whatever the timeout).
  const patient = <T extends { webhooks?: { timeoutSeconds?: number }[] }>(config: T): T => ({
    ...config,
    webhooks: config.webhooks?.map((w) => ({ ...w, timeoutSeconds: 15 })),
  });
  await applyWebhookConfigurations(
    cluster.kubeConfig,
    patient(mutatingWebhookConfiguration(configOptions)),
    patient(validatingWebhookConfiguration(configOptions)),
  );
}, 120_000);

afterAll(async () => {
  await Promise.all(rotators.map((r) => r.stop()));
  await balancer?.close();
  await Promise.all(servers.map((s) => s.close(100)));
  await deleteWebhookConfigurations(cluster.kubeConfig, configName).catch(() => undefined);
  if (namespace) await cluster.deleteNamespace(namespace);
});

test('self-managed start creates the Secret and caBundle, then the API server calls the webhook', async () => {
  const started = Date.now();
  serving = await start('serving', {});
  const startMs = Date.now() - started;

  const { secret, data } = await readSecret();
  expect(secret.type).toBe(SECRET_TYPE_TLS);
  expect(Object.keys(data).sort()).toEqual(['ca.crt', 'ca.key', 'tls.crt', 'tls.key']);
  expect(secret.metadata?.labels).toMatchObject({ 'app.kubernetes.io/managed-by': 'buildkit-fleet' });
  expect(secret.metadata?.annotations?.['buildkit-fleet.io/certs-last-change']).toMatch(/^create: /);
  // every webhook of both configurations, the pod injector's included
  expect(await caBundles()).toEqual([data['ca.crt'], data['ca.crt'], data['ca.crt'], data['ca.crt']]);
  expect(serving.current()).toEqual({
    certPem: data['tls.crt'],
    keyPem: data['tls.key'],
    caBundlePem: data['ca.crt'],
  });

  webhookMetrics = createWebhookMetrics();
  server = createWebhookServer(webhookApp(webhookMetrics), serving.current());
  servers.push(server);
  serving.onChange((m) => server!.setCertificate(m));
  balancer.backends.push((await server.listen('127.0.0.1', 0)).port);

  const ok = await apply(template('first'));
  expect(ok.stderr).toBe('');
  expect(ok.code).toBe(0);
  const bad = await apply(template('bad').replace('spec:\n', 'spec:\n  autoscaling:\n    idleTimeout: 5s\n'));
  expect(bad.code).not.toBe(0);
  // The denial comes from our webhook (over TLS verified with the caBundle we patched in).
  expect(bad.stderr).toContain(
    'spec.autoscaling.idleTimeout: Invalid value: "5s": must be between 30s and 24h',
  );
  expect(await reviews()).toBeGreaterThanOrEqual(3);
  console.log(`self-managed start (Secret + caBundle) took ${startMs} ms`);
});

test('two replicas started together agree on one CA', async () => {
  const secretName = `${configName}-pair`;
  const both = await Promise.all(
    ['replica-1', 'replica-2'].map((name) => start(name, { secretName, webhookConfigurations: false })),
  );
  const { data } = await readSecret(secretName);
  expect(data['ca.crt']!.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
  expect(both[0]!.current()).toEqual(both[1]!.current());
  expect(both[0]!.current().caBundlePem).toBe(data['ca.crt']);
  const created = logLines.filter(
    (l) => l['msg'] === 'certificate Secret created' && String(l['secret']).endsWith(secretName),
  );
  expect(created).toHaveLength(1);
  await Promise.all(both.map(stopRotator));
});

test('a wiped caBundle is restored (watch), and reviews work again', async () => {
  const expected = serving.current().caBundlePem;
  const wipe = (entries: number) =>
    JSON.stringify(
      Array.from({ length: entries }, (_, i) => ({
        op: 'remove',
        path: `/webhooks/${i}/clientConfig/caBundle`,
      })),
    );
  const wipedAt = Date.now();
  // What a `helm upgrade` of a chart without caBundle in its manifests does.
  await kubectl(['patch', 'validatingwebhookconfiguration', configName, '--type=json', '-p', wipe(2)]);
  await kubectl(['patch', 'mutatingwebhookconfiguration', configName, '--type=json', '-p', wipe(2)]);
  await waitFor('caBundle to be restored', async () => (await caBundles()).every((b) => b === expected));
  const restoredMs = Date.now() - wipedAt;
  // The 5 s periodic check is the fallback; the watch should be much faster.
  expect(restoredMs).toBeLessThan(4000);
  expect(logLines).toContainEqual(
    expect.objectContaining({
      msg: 'caBundle patched',
      reason: 'caBundle was empty',
      trigger: expect.stringMatching(/^watch: /),
    }),
  );
  expect((await apply(template('after-wipe'))).code).toBe(0);
  console.log(`caBundle restored ${restoredMs} ms after it was wiped`);
});

test('garbage in the Secret is repaired with a clear log line, and the webhook keeps working', async () => {
  const garbage = Buffer.from('garbage').toString('base64');
  const before = serving.current();
  const changedAt = Date.now();
  await kubectl([
    'patch',
    'secret',
    `${configName}-tls`,
    '-n',
    namespace,
    '--type=merge',
    '-p',
    JSON.stringify({ data: { 'tls.crt': garbage, 'tls.key': garbage } }),
  ]);
  const line = await waitFor('the repair log line', async () =>
    logLines.find((l) => l['msg'] === 'certificate Secret repaired' && l['rotator'] === 'serving'),
  );
  expect(line).toMatchObject({
    level: 40,
    action: 'repair/serving',
    problem: 'garbage',
    secret: `${namespace}/${configName}-tls`,
    reason: 'tls.crt: malformed PEM (Invalid PEM formatted message.)',
  });
  const repairMs = Date.now() - changedAt;
  const { data } = await readSecret();
  expect(data['ca.crt']).toBe(before.caBundlePem);
  expect(data['tls.crt']).not.toBe(before.certPem);
  await waitFor('the repaired certificate in use', async () => serving.current().certPem === data['tls.crt']);
  expect((await apply(template('after-repair'))).code).toBe(0);
  console.log(`garbage Secret repaired ${repairMs} ms after it was written`);
});

test('a whole CA rotation across two replicas while kubectl apply runs in a loop: not one apply fails', async () => {
  // Hand the webhook to two replicas with lifetimes in seconds: CA 30 s, serving 16 s, renewal 6 s before
  // expiry, overlap 4 s, checks every second. add-next at CA age 16 s, switch at ~20 s, drop at ~24 s.
  // Replica 1 watches the Secret; replica 2 only re-reads it every second, so it lags behind, and the
  // balancer sends every other review (each a new TLS connection) to it.
  await stopRotator(serving);
  const registry = new Registry();
  const fast = {
    secretName: `${configName}-rot`,
    validity: {
      caValidityDays: 30 / 86_400,
      servingValidityDays: 16 / 86_400,
      renewBeforeDays: 6 / 86_400,
      caOverlapDays: 4 / 86_400,
    },
    checkIntervalMs: 1000,
    caBundleCheckIntervalMs: 1000,
    registry,
  };
  const one = await start('fast-1', fast);
  const two = await start('fast-2', { ...fast, watch: false });
  const servedCerts = new Set<string>();
  const follow = (rotator: SelfManagedCerts, target: WebhookServer) => {
    const use = (m: { certPem: string; keyPem: string }) => {
      target.setCertificate(m);
      servedCerts.add(m.certPem);
    };
    use(rotator.current());
    rotator.onChange(use);
  };
  follow(one, server!);
  const metricsTwo = createWebhookMetrics();
  const serverTwo = createWebhookServer(webhookApp(metricsTwo), two.current());
  servers.push(serverTwo);
  follow(two, serverTwo);
  balancer.backends.push((await serverTwo.listen('127.0.0.1', 0)).port);
  await waitFor('the first caBundle', async () =>
    (await caBundles()).every((b) => b === one.current().caBundlePem),
  );

  const rotationStarted = Date.now();
  let applies = 0;
  const failures: string[] = [];
  const bundleSizes = new Set<number>();
  let running = true;
  const reviewsBefore = (await reviews()) + (await reviews(metricsTwo));
  // Three apply loops at once, so that any moment in which a replica serves a certificate the
  // API server does not trust is hit by some review (a review takes ~100 ms).
  const worker = async (w: number) => {
    for (let i = 0; running; i++) {
      const r = await apply(template(`rot-${w}-${i % 4}`, String(i)));
      applies++;
      if (r.code !== 0)
        failures.push(`apply ${w}/${i} at +${Date.now() - rotationStarted} ms: ${r.stderr.trim()}`);
    }
  };
  const poller = async () => {
    while (running) {
      bundleSizes.add((await caBundles())[0]!.match(/BEGIN CERTIFICATE/g)?.length ?? 0);
      await sleep(100);
    }
  };
  const loop = Promise.all([worker(0), worker(1), worker(2), poller()]);
  const count = async (kind: string) =>
    (await registry.getSingleMetric('buildkit_fleet_certs_rotations_total')!.get()).values.find(
      (v) => v.labels['kind'] === kind,
    )?.value ?? 0;
  try {
    await waitFor(
      'the previous CA to be dropped',
      async () => (await count('rotate-ca/drop-previous')) >= 1,
      { timeoutMs: 60_000 },
    );
    // Keep applying a little longer, against the bundle that holds only the new CA.
    await sleep(2000);
  } finally {
    running = false;
    await loop;
  }
  const elapsed = Date.now() - rotationStarted;
  const steps = logLines
    .filter((l) => String(l['rotator']).startsWith('fast') && typeof l['action'] === 'string')
    .map((l) => `${l['action']} by ${l['rotator']} @+${(l['time'] as number) - rotationStarted}ms`);
  const perReplica = [await reviews(), await reviews(metricsTwo)];
  console.log(
    `rotation: ${applies} applies in ${elapsed} ms, ${failures.length} failed; steps: ${steps.join(', ')}; ` +
      `caBundle sizes seen: ${[...bundleSizes].join(', ')}; serving certificates used: ${servedCerts.size}; ` +
      `reviews by replica: ${perReplica.join(' / ')} (${reviewsBefore} before the rotation)`,
  );
  expect(failures).toEqual([]);
  expect(await count('rotate-ca/add-next')).toBe(1);
  expect(await count('rotate-ca/switch')).toBe(1);
  expect(applies).toBeGreaterThan(10);
  expect(bundleSizes).toEqual(new Set([1, 2]));
  // Every apply went through the webhook (mutating + validating), and both replicas answered.
  expect(perReplica[0]! + perReplica[1]! - reviewsBefore).toBeGreaterThanOrEqual(2 * applies);
  expect(perReplica[1]).toBeGreaterThan(applies / 2);
  const { data } = await readSecret(`${configName}-rot`);
  expect(data[SECRET_KEYS.caBundle]!.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
  // Both replicas end up serving what the Secret holds. The serving certificate renews every ~10 s,
  // so a renewal can land between reading the Secret and asking the replicas: read it again each try.
  await waitFor('both replicas to serve the certificate in the Secret', async () => {
    await Promise.all([one.checkNow(), two.checkNow()]);
    const cert = (await readSecret(`${configName}-rot`)).data[SECRET_KEYS.cert];
    return one.current().certPem === cert && two.current().certPem === cert;
  });
}, 120_000);

describe('missing RBAC', () => {
  let restricted: KubeConfig;

  beforeAll(async () => {
    // A service account with no rights at all, used as the rotator's identity.
    await kubectl(['create', 'serviceaccount', 'certs-rbac', '-n', namespace]);
    // A bound token from the TokenRequest API: no wait for kube-controller-manager's token Secret.
    const token = (await kubectl(['create', 'token', 'certs-rbac', '-n', namespace])).stdout.trim();
    restricted = new KubeConfig();
    restricted.loadFromOptions({
      clusters: [{ ...cluster.kubeConfig.getCurrentCluster()!, name: 'test' }],
      users: [{ name: 'certs-rbac', token }],
      contexts: [{ name: 'certs-rbac', cluster: 'test', user: 'certs-rbac' }],
      currentContext: 'certs-rbac',
    });
  });

  test('no access to the Secret: the start fails and says which permission is missing', async () => {
    await expect(
      start('no-rbac', { secretName: `${configName}-rbac`, kubeConfig: restricted }),
    ).rejects.toThrow(
      /cannot get Secret .*-rbac: 403 .*\(RBAC: the service account needs "get" on secrets named bkf-certs-.*-rbac in namespace certs-/,
    );
  });

  test('Secret access but no right to patch webhook configurations: serving works, the problem is reported', async () => {
    await kubectl([
      'create',
      'role',
      'certs-secrets',
      '-n',
      namespace,
      '--verb=get,create,update,list,watch',
      '--resource=secrets',
    ]);
    await kubectl([
      'create',
      'rolebinding',
      'certs-secrets',
      '-n',
      namespace,
      '--role=certs-secrets',
      `--serviceaccount=${namespace}:certs-rbac`,
    ]);
    const registry = new Registry();
    const rotator = await waitFor('RBAC to take effect', () =>
      start('secret-only', {
        secretName: `${configName}-rbac`,
        kubeConfig: restricted,
        registry,
        watch: false,
      }).catch(() => undefined),
    );
    expect(rotator.current().certPem).toContain('BEGIN CERTIFICATE');
    expect(logLines).toContainEqual(
      expect.objectContaining({
        rotator: 'secret-only',
        level: 50,
        msg: 'caBundle cannot be kept in the webhook configurations: RBAC forbids it',
        forbidden: expect.arrayContaining([
          expect.stringMatching(
            /cannot get MutatingWebhookConfiguration bkf-certs-.*: 403 .*RBAC: the service account needs "get" on mutatingwebhookconfigurations/,
          ),
        ]),
      }),
    );
    const errors = (await registry.getSingleMetric('buildkit_fleet_certs_errors_total')!.get()).values;
    expect(errors.find((v) => v.labels['reason'] === 'ca_bundle_forbidden')?.value).toBeGreaterThanOrEqual(2);
    await stopRotator(rotator);
  });
});
