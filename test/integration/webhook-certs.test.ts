// The webhook's certificate wiring on the real API server: self-managed mode (Secret + caBundle
// written by the webhook itself), `buildkit-fleet certs --once`, and files mode hot reload.
import { execFile } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { AdmissionregistrationV1Api, CoreV1Api } from '@kubernetes/client-node';
import { pino } from 'pino';

import { FAILURE_POLICY_ANNOTATION } from '../../api/labels.ts';
import { createCa, createServingCert, kubeWebhookConfigClient } from '../../certs/index.ts';
import { parseOptions } from '../../flags/options.ts';
import {
  mutatingWebhookConfiguration,
  validatingWebhookConfiguration,
} from '../../webhook/configurations.ts';
import { applyWebhookConfigurations, deleteWebhookConfigurations } from '../../webhook/kube.ts';
import type { RunningWebhook } from '../../webhook/main.ts';
import { WEBHOOK_OPTIONS, startWebhook } from '../../webhook/main.ts';
import { freePort } from '../../hack/ports.ts';
import { testCluster } from '../../hack/testenv.ts';
import { installCrds } from '../support/crds.ts';

const cluster = testCluster();
const { kubectl } = cluster;
const logger = pino({ level: process.env['BKF_TEST_LOG'] ?? 'silent' });
const suffix = randomBytes(3).toString('hex');
let namespace: string;

const template = (name: string) =>
  `apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: BuildkitTemplate\nmetadata:\n  name: ${name}\nspec:\n  port: 0\n`;

/**
 * Registers URL webhook configurations for our test namespace only; caBundle as given. `firstInstall`
 * registers them as the chart's first self-managed install does: Ignore, and the annotation naming Fail.
 */
async function register(name: string, port: number, caBundle?: string, firstInstall = false) {
  const options = {
    name,
    clientConfig: (path: string) => ({ url: `https://127.0.0.1:${port}${path}` }),
    namespaceLabels: { 'buildkit-fleet.test/certs': suffix },
    ...(caBundle ? { caBundle } : {}),
    ...(firstInstall
      ? { failurePolicy: 'Ignore' as const, annotations: { [FAILURE_POLICY_ANNOTATION]: 'Fail' } }
      : {}),
  };
  await applyWebhookConfigurations(
    cluster.kubeConfig,
    mutatingWebhookConfiguration(options),
    validatingWebhookConfiguration(options),
  );
}

/** The API server calls the webhook: the defaulted port proves the mutating call went through. */
async function applyThroughWebhook(name: string) {
  const r = await kubectl(['apply', '-n', namespace, '-f', '-'], { input: template(name), allowFail: true });
  expect(r.stderr).not.toContain('failed calling webhook');
  expect(r.code).toBe(0);
  const stored = JSON.parse((await kubectl(['get', 'bkt', name, '-n', namespace, '-o', 'json'])).stdout);
  expect(stored.spec.port).toBe(1234);
}

function servedCertificate(port: number): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      resolve(new X509Certificate(socket.getPeerCertificate(true).raw));
      socket.end();
    });
    socket.on('error', reject);
  });
}

beforeAll(async () => {
  await installCrds();
  namespace = await cluster.createNamespace('webhook-certs');
  await kubectl(['label', 'namespace', namespace, `buildkit-fleet.test/certs=${suffix}`]);
}, 120_000);
afterAll(async () => {
  await cluster.deleteNamespace(namespace);
});

describe('self-managed mode', () => {
  const configName = `bkf-sm-${suffix}`;
  let webhook: RunningWebhook;
  afterAll(async () => {
    await webhook?.stop();
    await deleteWebhookConfigurations(cluster.kubeConfig, configName);
  });

  test('the webhook makes its Secret, fills caBundle with the intended failurePolicy, and the API server then calls it', async () => {
    const port = await freePort();
    await register(configName, port, undefined, true); // as the chart's first install: no caBundle yet
    const options = parseOptions(
      [
        '--kubeconfig',
        cluster.kubeconfigPath,
        '--listen',
        `127.0.0.1:${port}`,
        '--cert-mode',
        'self-managed',
        '--cert-namespace',
        namespace,
        '--cert-secret',
        'webhook-tls',
        '--cert-ip-addresses',
        '127.0.0.1',
        '--webhook-configurations',
        configName,
        '--shutdown-grace',
        '1',
        '--sidecar-image',
        'buildkit-fleet:test',
      ],
      WEBHOOK_OPTIONS,
    );
    webhook = await startWebhook(options, logger, true);
    const secret = await cluster.kubeConfig
      .makeApiClient(CoreV1Api)
      .readNamespacedSecret({ name: 'webhook-tls', namespace });
    expect(secret.type).toBe('kubernetes.io/tls');
    const caPem = Buffer.from(secret.data!['ca.crt']!, 'base64').toString();
    const api = cluster.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    const configs = [
      await api.readMutatingWebhookConfiguration({ name: configName }),
      await api.readValidatingWebhookConfiguration({ name: configName }),
    ];
    const entries = configs.flatMap((c) => c.webhooks!);
    // the wait is over: the annotation that marked it is gone, so a later hand-set policy stays
    expect(configs.map((c) => c.metadata!.annotations?.[FAILURE_POLICY_ANNOTATION])).toEqual([
      undefined,
      undefined,
    ]);
    const bundles = entries.map((w) => Buffer.from(w.clientConfig.caBundle ?? '', 'base64').toString());
    // every webhook of both configurations, the pod injector's included
    expect(bundles).toEqual([caPem, caPem, caPem, caPem]);
    expect(entries.map((w) => w.failurePolicy)).toEqual(['Fail', 'Fail', 'Fail', 'Fail']);
    const served = await servedCertificate(port);
    expect(served.checkIssued(new X509Certificate(caPem))).toBe(true);
    expect(served.checkIP('127.0.0.1')).toBe('127.0.0.1');
    await applyThroughWebhook('self-managed');
  }, 60_000);
});

test('`buildkit-fleet certs --once` creates the Secret and caBundle, then exits 0', async () => {
  const configName = `bkf-once-${suffix}`;
  await register(configName, 1); // port irrelevant: nothing calls it (no object in this test)
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [
      new URL('../../cli/main.ts', import.meta.url).pathname,
      'certs',
      '--once',
      '--kubeconfig',
      cluster.kubeconfigPath,
      '--cert-namespace',
      namespace,
      '--cert-secret',
      'once-tls',
      '--webhook-configurations',
      configName,
    ]);
    expect(stdout).toContain('certificate Secret and caBundle are in place');
    const api = cluster.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    const hook = (await api.readValidatingWebhookConfiguration({ name: configName })).webhooks![0]!;
    expect(Buffer.from(hook.clientConfig.caBundle!, 'base64').toString()).toContain('BEGIN CERTIFICATE');
  } finally {
    await deleteWebhookConfigurations(cluster.kubeConfig, configName);
    await kubectl(['delete', 'validatingwebhookconfiguration,mutatingwebhookconfiguration', configName], {
      allowFail: true,
    });
  }
}, 60_000);

// What a first install waits on before it sets Fail: the Service's EndpointSlices, read at whichever
// discovery.k8s.io version the API server serves (v1beta1 before Kubernetes 1.21).
test('a webhook Service serves once one of its EndpointSlice endpoints is ready', async () => {
  const client = kubeWebhookConfigClient(cluster.kubeConfig);
  const service = { namespace, name: 'hook' };
  await kubectl(['create', 'service', 'clusterip', 'hook', '-n', namespace, '--tcp=443:9443']);
  expect(await client.servingEndpoints!(service)).toBe(false);
  const versions = JSON.parse((await kubectl(['get', '--raw', '/apis/discovery.k8s.io'])).stdout) as {
    preferredVersion: { groupVersion: string };
  };
  const slice = (ready: boolean) => `
apiVersion: ${versions.preferredVersion.groupVersion}
kind: EndpointSlice
metadata:
  name: hook-by-hand
  namespace: ${namespace}
  labels: { kubernetes.io/service-name: hook }
addressType: IPv4
ports: [{ name: '', port: 9443, protocol: TCP }]
endpoints: [{ addresses: [10.0.0.9], conditions: { ready: ${ready} } }]
`;
  await kubectl(['apply', '-f', '-'], { input: slice(false) });
  expect(await client.servingEndpoints!(service)).toBe(false);
  await kubectl(['apply', '-f', '-'], { input: slice(true) });
  expect(await client.servingEndpoints!(service)).toBe(true);
  // another Service's slices do not count
  expect(await client.servingEndpoints!({ namespace, name: 'other' })).toBe(false);
}, 60_000);

describe('files mode (cert-manager or any mounted Secret)', () => {
  const configName = `bkf-files-${suffix}`;
  let dir: string;
  let webhook: RunningWebhook;
  afterAll(async () => {
    await webhook?.stop();
    await deleteWebhookConfigurations(cluster.kubeConfig, configName);
    rmSync(dir, { recursive: true, force: true });
  });

  /** Writes the files the way the kubelet updates a mounted Secret: a new dir, then swap ..data. */
  function mount(generation: number, material: { certPem: string; keyPem: string }) {
    const data = join(dir, `..${generation}`);
    mkdirSync(data);
    writeFileSync(join(data, 'tls.crt'), material.certPem);
    writeFileSync(join(data, 'tls.key'), material.keyPem);
    symlinkSync(`..${generation}`, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  }

  test('a new certificate in the mounted directory is served without a restart', async () => {
    dir = mkdtempSync(join(tmpdir(), 'bkf-mounted-'));
    const first = createCa({ commonName: 'first CA' });
    mount(1, createServingCert({ ca: first, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] }));
    symlinkSync('..data/tls.crt', join(dir, 'tls.crt'));
    symlinkSync('..data/tls.key', join(dir, 'tls.key'));
    const port = await freePort();
    const b64 = (pem: string) => Buffer.from(pem).toString('base64');
    await register(configName, port, b64(first.certPem));
    const options = parseOptions(
      [
        '--kubeconfig',
        cluster.kubeconfigPath,
        '--listen',
        `127.0.0.1:${port}`,
        '--tls-cert-file',
        join(dir, 'tls.crt'),
        '--tls-key-file',
        join(dir, 'tls.key'),
        '--cert-reload-interval',
        '1s',
        '--shutdown-grace',
        '1',
        '--sidecar-image',
        'buildkit-fleet:test',
      ],
      WEBHOOK_OPTIONS,
    );
    webhook = await startWebhook(options, logger, true);
    await applyThroughWebhook('files-1');

    // cert-manager renews under a new CA; cainjector publishes both CAs while it rolls
    const second = createCa({ commonName: 'second CA' });
    await register(configName, port, b64(first.certPem + second.certPem));
    mount(2, createServingCert({ ca: second, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] }));
    const deadline = Date.now() + 15_000;
    while (!(await servedCertificate(port)).checkIssued(new X509Certificate(second.certPem))) {
      if (Date.now() > deadline) throw new Error('the new certificate was not picked up within 15 s');
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await register(configName, port, b64(second.certPem));
    await applyThroughWebhook('files-2');
  }, 60_000);
});
