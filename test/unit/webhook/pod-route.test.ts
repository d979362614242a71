// The /mutate/pods route over real TLS through the express app, its webhook configuration, and
// the --sidecar-* flags.
import type { V1Pod } from '@kubernetes/client-node';
import fastJsonPatch from 'fast-json-patch';
import { pino } from 'pino';

import { createCa, createServingCert } from '../../../certs/index.ts';
import { parseOptions } from '../../../flags/options.ts';
import { serverFeatures } from '../../../kube/server-features.ts';
import { createApp } from '../../../webhook/app.ts';
import {
  NAMESPACE_NAME_LABEL,
  ROUTES,
  WEBHOOK_NAMES,
  mutatingWebhookConfiguration,
} from '../../../webhook/configurations.ts';
import { mutatePodHandler } from '../../../webhook/handlers.ts';
import { LOCAL_SIDECAR_IMAGE, injectionConfigFromOptions } from '../../../webhook/injection-options.ts';
import { WEBHOOK_OPTIONS } from '../../../webhook/main.ts';
import { createWebhookMetrics } from '../../../webhook/metrics.ts';
import type { WebhookServer } from '../../../webhook/server.ts';
import { createWebhookServer } from '../../../webhook/server.ts';
import {
  INJECTION_CONFIG,
  buildkitdPod,
  podRequest,
  postTo,
  reviewOf,
} from '../../support/admission-requests.ts';

const ca = createCa({ commonName: 'test CA' });
const serving = createServingCert({ ca, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
const metrics = createWebhookMetrics();
const lines: Record<string, unknown>[] = [];
let server: WebhookServer;
let port: number;

beforeAll(async () => {
  const logger = pino(
    { level: 'info' },
    { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  const app = createApp({
    routes: {
      [ROUTES.mutatePod]: mutatePodHandler({
        config: INJECTION_CONFIG,
        features: serverFeatures({ major: 1, minor: 20 }),
      }),
    },
    logger,
    metrics,
    isReady: () => true,
  });
  server = createWebhookServer(app, serving);
  port = (await server.listen('127.0.0.1', 0)).port;
});
afterAll(() => server.close(100));

async function admit(request: unknown) {
  const reply = await postTo({ port, ca: ca.certPem }, ROUTES.mutatePod, reviewOf(request));
  expect(reply.status).toBe(200);
  return JSON.parse(reply.body).response as {
    uid: string;
    allowed: boolean;
    patch?: string;
    patchType?: string;
    status?: { code: number; message: string };
  };
}

const lastLine = () => lines[lines.length - 1]!;

test('an opted-in pod under generateName gets a JSON patch that injects the sidecar', async () => {
  const pod = buildkitdPod();
  const response = await admit(podRequest(pod));
  expect(response).toMatchObject({ uid: podRequest(pod).uid, allowed: true, patchType: 'JSONPatch' });
  const patch = JSON.parse(Buffer.from(response.patch!, 'base64').toString());
  const patched = fastJsonPatch.applyPatch(structuredClone(pod), patch, true, false).newDocument as V1Pod;
  expect(patched.spec!.containers.map((c) => c.name)).toEqual(['buildkit-fleet-sidecar', 'buildkitd']);
  expect(patched.spec!.containers[1]!.args).toContain('tcp://127.0.0.1:1233');
  expect(lastLine()).toMatchObject({
    route: ROUTES.mutatePod,
    kind: 'Pod',
    namespace: 'ci',
    name: 'buildkitd-*',
    decision: 'patched',
    reason: expect.stringMatching(/^injected: sidecar container in front of buildkitd: public port 1234/),
  });

  // the API server sends the patched pod again on reinvocation: nothing more to do
  const again = await admit(podRequest(patched));
  expect(again).toEqual({ uid: podRequest(pod).uid, allowed: true });
  expect(lastLine()).toMatchObject({
    decision: 'allowed',
    reason: expect.stringMatching(/^skipped: already injected/),
  });
});

test('a dry-run review gets the same answer (the injector has no side effects)', async () => {
  const pod = buildkitdPod();
  const wet = await admit(podRequest(pod));
  const dry = await admit(podRequest(pod, { dryRun: true }));
  expect(dry).toEqual(wet);
  expect(lastLine()).toMatchObject({ dryRun: true, decision: 'patched' });
});

test('a pod that is not opted in, or opted out, is allowed untouched', async () => {
  expect(await admit(podRequest(buildkitdPod({}, { labels: {} })))).toEqual({
    uid: podRequest(buildkitdPod()).uid,
    allowed: true,
  });
  expect(lastLine()).toMatchObject({ decision: 'allowed', reason: expect.stringContaining('not opted in') });
  const optedOut = buildkitdPod({}, { annotations: { 'buildkit-fleet.io/inject': 'disabled' } });
  expect((await admit(podRequest(optedOut))).patch).toBeUndefined();
  expect(lastLine()).toMatchObject({ reason: expect.stringContaining('skipped: opted out') });
});

test('an opted-in pod that cannot be injected is denied with the reason and how to opt out', async () => {
  const response = await admit(podRequest(buildkitdPod({ args: ['--addr', 'unix:///run/b.sock'] })));
  expect(response.allowed).toBe(false);
  expect(response.status!.code).toBe(403);
  expect(response.status!.message).toBe(
    'cannot inject the buildkit-fleet sidecar: no container has a buildkitd TCP address (--addr tcp://<host>:<port> or --addr=tcp://...), so there is no port to put the sidecar in front of. ' +
      'Fix the pod, or opt out with the annotation buildkit-fleet.io/inject: "disabled"',
  );
  expect(lastLine()).toMatchObject({
    decision: 'denied',
    reason: expect.stringMatching(/^refused: no container/),
  });
});

test('other kinds and operations are not injected', async () => {
  const deployment = await admit(
    podRequest(buildkitdPod(), { kind: { group: 'apps', version: 'v1', kind: 'Deployment' } }),
  );
  expect(deployment.allowed).toBe(false);
  expect(deployment.status!.message).toContain('this webhook route serves core Pods, not Deployment.apps');
  const update = await admit(podRequest(buildkitdPod(), { operation: 'UPDATE' }));
  expect(update).toEqual({ uid: podRequest(buildkitdPod()).uid, allowed: true });
  expect(lastLine()).toMatchObject({ reason: 'skipped: not injected' });
  const remove = await admit(podRequest(buildkitdPod(), { operation: 'DELETE' }));
  expect(remove).toEqual({ uid: podRequest(buildkitdPod()).uid, allowed: true });
});

test('decisions are counted by route and result', async () => {
  const text = await metrics.registry.metrics();
  expect(text).toMatch(
    /buildkit_fleet_webhook_reviews_total\{route="\/mutate\/pods",result="patched"\} [1-9]/,
  );
  expect(text).toMatch(
    /buildkit_fleet_webhook_reviews_total\{route="\/mutate\/pods",result="denied"\} [1-9]/,
  );
  expect(text).toMatch(
    /buildkit_fleet_webhook_reviews_total\{route="\/mutate\/pods",result="allowed"\} [1-9]/,
  );
});

describe('the pod webhook configuration', () => {
  const webhookOf = (options: Parameters<typeof mutatingWebhookConfiguration>[0]) =>
    mutatingWebhookConfiguration(options).webhooks!.find((w) => w.name === WEBHOOK_NAMES.mutatePod)!;
  const base = {
    name: 'buildkit-fleet',
    clientConfig: (path: string) => ({ url: `https://127.0.0.1:1${path}` }),
  };

  test('narrow: labelled pods only, CREATE and UPDATE, system and platform namespaces excluded', () => {
    const w = webhookOf({ ...base, platformNamespace: 'bkf' });
    expect(w).toMatchObject({
      clientConfig: { url: 'https://127.0.0.1:1/mutate/pods' },
      failurePolicy: 'Fail',
      sideEffects: 'None',
      timeoutSeconds: 5,
      reinvocationPolicy: 'IfNeeded',
      objectSelector: { matchLabels: { 'buildkit-fleet.io/autoscale': 'enabled' } },
      namespaceSelector: {
        matchExpressions: [
          {
            key: NAMESPACE_NAME_LABEL,
            operator: 'NotIn',
            values: ['kube-system', 'kube-public', 'kube-node-lease', 'bkf'],
          },
        ],
      },
      rules: [
        { apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE', 'UPDATE'], resources: ['pods'] },
      ],
    });
    expect(w.namespaceSelector!.matchLabels).toBeUndefined();
  });

  test('local mode adds its namespace label to the exclusions', () => {
    const w = webhookOf({ ...base, namespaceLabels: { team: 'a' } });
    expect(w.namespaceSelector).toEqual({
      matchLabels: { team: 'a' },
      matchExpressions: [
        {
          key: NAMESPACE_NAME_LABEL,
          operator: 'NotIn',
          values: ['kube-system', 'kube-public', 'kube-node-lease', 'buildkit-fleet-system'],
        },
      ],
    });
  });
});

describe('--sidecar-* flags', () => {
  const config = (args: string[], local = false, env: NodeJS.ProcessEnv = {}) =>
    injectionConfigFromOptions(parseOptions(args, WEBHOOK_OPTIONS, env), local, env);

  test('defaults; the image is required unless --local', () => {
    expect(() => config([])).toThrow('--sidecar-image is required (or BKF_INJECT_IMAGE)');
    expect(config([], true)).toEqual({
      image: LOCAL_SIDECAR_IMAGE,
      resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } },
      statsPort: 9436,
      tokenSecretName: 'buildkit-fleet-sidecar-token',
      platformNamespace: 'buildkit-fleet-system',
    });
  });

  test('flags and environment', () => {
    expect(
      config([
        '--sidecar-image',
        'reg/bkf:1',
        '--sidecar-cpu-limit',
        '1',
        '--sidecar-private-port',
        '11234',
        '--sidecar-stats-port',
        '9999',
        '--sidecar-grace',
        '60',
        '--sidecar-token-secret',
        'fence-token',
        '--platform-namespace',
        'platform',
      ]),
    ).toEqual({
      image: 'reg/bkf:1',
      resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { cpu: '1', memory: '256Mi' } },
      statsPort: 9999,
      privatePort: 11234,
      tokenSecretName: 'fence-token',
      graceSeconds: 60,
      platformNamespace: 'platform',
    });
    const env = {
      BKF_INJECT_IMAGE: 'reg/bkf:2',
      BKF_INJECT_MEMORY_LIMIT: '1Gi',
      POD_NAMESPACE: 'bkf-system',
    };
    expect(config([], false, env)).toMatchObject({
      image: 'reg/bkf:2',
      resources: { limits: { memory: '1Gi' } },
      platformNamespace: 'bkf-system',
    });
  });

  test.each([
    [['--sidecar-cpu-request', 'lots'], '--sidecar-cpu-request "lots": must be a Kubernetes quantity'],
    [['--sidecar-memory-limit=-1Gi'], '--sidecar-memory-limit "-1Gi": must not be negative'],
    [
      ['--sidecar-memory-request', '1Gi', '--sidecar-memory-limit', '512Mi'],
      '--sidecar-memory-request "1Gi": must be less than or equal to memory limit of 512Mi',
    ],
    [['--sidecar-stats-port', '0'], '--sidecar-stats-port must be a port 1-65535, not 0'],
    [['--sidecar-stats-port', '70000'], '--sidecar-stats-port "70000": must be a port number 0-65535'],
    [['--sidecar-private-port', 'x'], '--sidecar-private-port "x": must be a port number'],
    [['--sidecar-grace', 'soon'], '--sidecar-grace "soon": must be a number of seconds'],
    [['--sidecar-token-secret', 'Bad_Name'], '--sidecar-token-secret "Bad_Name": must be a DNS subdomain'],
    [['--platform-namespace', 'a.b'], '--platform-namespace "a.b": must be a DNS label'],
  ])('%j is refused clearly', (args, message) => {
    expect(() => config(['--sidecar-image', 'x', ...args])).toThrow(message);
  });
});
