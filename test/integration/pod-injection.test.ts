// Sidecar injection on the real 1.20 control plane: kubectl and the real kube-controller-manager
// create pods, the API server calls our webhook (--local, scoped by a namespace label), and we
// read back what it stored.
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { parse } from 'yaml';

import { SIDECAR_INJECTED_ANNOTATION } from '../../api/labels.ts';
import { SIDECAR_ENV } from '../../sidecar/process-settings.ts';
import { testCluster } from '../../hack/testenv.ts';
import { waitFor } from '../support/wait.ts';
import type { LocalWebhook } from '../support/local-webhook.ts';
import { startLocalWebhook } from '../support/local-webhook.ts';

const cluster = testCluster();
const kubectl = cluster.kubectl;
const SIDECAR = 'buildkit-fleet-sidecar';
let local: LocalWebhook;
/** labelled for our webhook */
let namespace: string;
/** not labelled: our webhook never sees its pods */
let unlabelled: string;
/** labelled, and our webhook's --platform-namespace: on 1.20 only the handler's own skip keeps it out */
let platform: string;

beforeAll(async () => {
  [namespace, unlabelled, platform] = await Promise.all([
    cluster.createNamespace('inject'),
    cluster.createNamespace('inject-other'),
    cluster.createNamespace('inject-platform'),
  ]);
  local = await startLocalWebhook(cluster, 'buildkit-fleet.test/inject', ['--platform-namespace', platform]);
  await kubectl(['label', 'namespace', namespace, local.label]);
  await kubectl(['label', 'namespace', platform, local.label]);
}, 120_000);

afterAll(async () => {
  await local?.webhook.stop();
  await Promise.all([namespace, unlabelled, platform].filter(Boolean).map((n) => cluster.deleteNamespace(n)));
});

const OPT_IN = '    buildkit-fleet.io/autoscale: enabled\n';

const buildkitdContainer = (
  args = '["--addr", "unix:///run/buildkit/buildkitd.sock", "--addr", "tcp://0.0.0.0:1234"]',
) =>
  [
    '  - name: buildkitd',
    '    image: moby/buildkit:v0.16.0',
    `    args: ${args}`,
    '    ports:',
    '    - name: grpc',
    '      containerPort: 1234',
    '    readinessProbe:',
    '      tcpSocket:',
    '        port: grpc',
    '      periodSeconds: 10',
    '    livenessProbe:',
    '      exec:',
    '        command: [buildctl, debug, workers]',
    '',
  ].join('\n');

const podYaml = (name: string, labels = OPT_IN, args?: string) =>
  `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\n  labels:\n    app: buildkitd\n${labels}spec:\n  containers:\n${buildkitdContainer(args)}`;

const apply = (ns: string, yaml: string, ...extra: string[]) =>
  kubectl(['apply', '-n', ns, ...extra, '-f', '-'], { input: yaml, allowFail: true });

async function getPod(ns: string, name: string): Promise<V1Pod | undefined> {
  const r = await kubectl(['get', 'pod', name, '-n', ns, '-o', 'json'], { allowFail: true });
  return r.code === 0 ? (JSON.parse(r.stdout) as V1Pod) : undefined;
}

const byName = (pod: V1Pod, name: string): V1Container | undefined =>
  pod.spec!.containers.find((c) => c.name === name);

test('an opted-in pod is stored with the sidecar first and buildkitd moved behind it', async () => {
  const r = await apply(namespace, podYaml('opted-in'));
  expect(r.stderr).toBe('');
  expect(r.stdout).toContain('pod/opted-in created');
  const pod = (await getPod(namespace, 'opted-in'))!;

  // 1.20 has no native sidecars: a regular container, placed first
  expect(pod.spec!.containers.map((c) => c.name)).toEqual([SIDECAR, 'buildkitd']);
  expect(pod.spec!.initContainers).toBeUndefined();
  expect(pod.metadata!.annotations![SIDECAR_INJECTED_ANNOTATION]).toMatch(/^sha256:[0-9a-f]{16}$/);

  const buildkitd = byName(pod, 'buildkitd')!;
  expect(buildkitd.args).toEqual([
    '--addr',
    'unix:///run/buildkit/buildkitd.sock',
    '--addr',
    'tcp://127.0.0.1:1233',
  ]);
  expect(buildkitd.ports).toBeUndefined();
  expect(buildkitd.readinessProbe).toMatchObject({
    httpGet: { path: '/readyz', port: 9436, scheme: 'HTTP' },
    periodSeconds: 10,
  });
  expect(buildkitd.readinessProbe!.tcpSocket).toBeUndefined();
  expect(buildkitd.livenessProbe!.exec).toEqual({ command: ['buildctl', 'debug', 'workers'] });

  // everything we sent survived the 1.20 API server (it drops fields it does not know)
  const sidecar = byName(pod, SIDECAR)!;
  expect(sidecar).toMatchObject({
    image: 'buildkit-fleet:local',
    command: ['buildkit-fleet', 'sidecar'],
    ports: [
      { name: 'grpc', containerPort: 1234, protocol: 'TCP' },
      { name: 'bkf-stats', containerPort: 9436, protocol: 'TCP' },
    ],
    readinessProbe: { httpGet: { path: '/readyz', port: 9436 } },
    securityContext: {
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    // (the ServiceAccount admission plugin adds the token mount after us)
    volumeMounts: expect.arrayContaining([
      expect.objectContaining({ name: 'buildkit-fleet-sidecar-token', readOnly: true }),
    ]),
  });
  expect(sidecar.lifecycle!.postStart!.exec!.command!.slice(0, 2)).toEqual(['node', '-e']);
  expect(Object.fromEntries(sidecar.env!.map((e) => [e.name, e.value]))).toMatchObject({
    BKF_SIDECAR_LISTEN: '0.0.0.0:1234',
    BKF_SIDECAR_UPSTREAM: '127.0.0.1:1233',
    BKF_SIDECAR_STATS: '0.0.0.0:9436',
    // the process settings (NODE_OPTIONS heap caps, MALLOC_ARENA_MAX)
    ...SIDECAR_ENV,
  });
  expect(pod.spec!.volumes).toContainEqual({
    name: 'buildkit-fleet-sidecar-token',
    secret: { secretName: 'buildkit-fleet-sidecar-token', optional: true, defaultMode: 0o644 },
  });
}, 30_000);

test('re-applying the same manifest changes nothing', async () => {
  await apply(namespace, podYaml('reapplied'));
  // the hollow node runs it first: wait until its status settles so only our apply could write
  let last = '';
  const before = await waitFor(
    'pod reapplied to be Running with a status that no longer changes',
    async () => {
      const pod = await getPod(namespace, 'reapplied');
      const settled = pod?.status?.phase === 'Running' && pod.metadata!.resourceVersion === last;
      last = pod?.metadata?.resourceVersion ?? '';
      return settled && pod;
    },
    { timeoutMs: 20_000, intervalMs: 1500 },
  );
  // kubectl re-asserts the manifest's --addr, probe and port; the webhook moves them back on the
  // UPDATE, so the API server sees an unchanged pod and writes nothing
  const r = await apply(namespace, podYaml('reapplied'));
  expect(r.stderr).toBe('');
  expect(r.stdout).toMatch(/pod\/reapplied (unchanged|configured)/);
  const after = (await getPod(namespace, 'reapplied'))!;
  expect(after.metadata!.resourceVersion).toBe(before.metadata!.resourceVersion);
  expect(after.spec).toEqual(before.spec);
  const diff = await kubectl(['diff', '-n', namespace, '-f', '-'], {
    input: podYaml('reapplied'),
    allowFail: true,
  });
  expect(diff).toMatchObject({ code: 0, stdout: '' });
}, 30_000);

test('a pod without the opt-in label is stored as sent', async () => {
  await apply(namespace, podYaml('plain', ''));
  const pod = (await getPod(namespace, 'plain'))!;
  expect(pod.spec!.containers.map((c) => c.name)).toEqual(['buildkitd']);
  expect(pod.spec!.containers[0]!.args).toContain('tcp://0.0.0.0:1234');
  expect(pod.metadata!.annotations?.[SIDECAR_INJECTED_ANNOTATION]).toBeUndefined();
}, 30_000);

test('opted out by annotation: stored as sent', async () => {
  const yaml = podYaml('opted-out').replace(
    'metadata:\n',
    'metadata:\n  annotations:\n    buildkit-fleet.io/inject: disabled\n',
  );
  await apply(namespace, yaml);
  expect((await getPod(namespace, 'opted-out'))!.spec!.containers.map((c) => c.name)).toEqual(['buildkitd']);
}, 30_000);

test('namespaces without the test label, and the platform namespace, are not touched', async () => {
  for (const ns of [unlabelled, platform]) {
    const r = await apply(ns, podYaml('elsewhere'));
    expect(r.stdout).toContain('pod/elsewhere created');
    const pod = (await getPod(ns, 'elsewhere'))!;
    expect(pod.spec!.containers.map((c) => c.name)).toEqual(['buildkitd']);
  }
}, 30_000);

test('a StatefulSet pod (created by the real controller-manager, under generateName rules) is injected', async () => {
  const container = buildkitdContainer()
    .split('\n')
    .map((line) => (line ? `    ${line}` : line))
    .join('\n');
  const yaml = [
    'apiVersion: apps/v1',
    'kind: StatefulSet',
    'metadata:',
    '  name: buildkitd',
    'spec:',
    '  serviceName: buildkitd',
    '  replicas: 1',
    '  selector:',
    '    matchLabels:',
    '      app: buildkitd',
    '  template:',
    '    metadata:',
    '      labels:',
    '        app: buildkitd',
    '        buildkit-fleet.io/autoscale: enabled',
    '      annotations:',
    '        buildkit-fleet.io/target-port: "1234"',
    '    spec:',
    '      terminationGracePeriodSeconds: 600',
    '      containers:',
    container,
  ].join('\n');
  const r = await apply(namespace, yaml);
  expect(r.stderr).toBe('');
  const pod = await waitFor('the StatefulSet pod buildkitd-0', () => getPod(namespace, 'buildkitd-0'), {
    timeoutMs: 25_000,
    intervalMs: 500,
  });
  expect(pod.metadata!.ownerReferences![0]).toMatchObject({ kind: 'StatefulSet', name: 'buildkitd' });
  expect(pod.spec!.containers.map((c) => c.name)).toEqual([SIDECAR, 'buildkitd']);
  expect(byName(pod, 'buildkitd')!.args).toContain('tcp://127.0.0.1:1233');
  expect(byName(pod, SIDECAR)!.env).toContainEqual({ name: 'BKF_SIDECAR_GRACE', value: '600' });
  // the StatefulSet itself (its template) is not changed: only pods are injected
  const sts = JSON.parse((await kubectl(['get', 'sts', 'buildkitd', '-n', namespace, '-o', 'json'])).stdout);
  expect(sts.spec.template.spec.containers.map((c: V1Container) => c.name)).toEqual(['buildkitd']);
}, 30_000);

test('an opted-in pod whose buildkitd address cannot be understood is refused, with the reason', async () => {
  const r = await apply(
    namespace,
    podYaml('no-tcp', OPT_IN, '["--addr", "unix:///run/buildkit/buildkitd.sock"]'),
  );
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain('admission webhook "sidecar.pods.buildkit-fleet.io" denied the request');
  expect(r.stderr).toContain(
    'cannot inject the buildkit-fleet sidecar: no container has a buildkitd TCP address (--addr tcp://<host>:<port> or --addr=tcp://...)',
  );
  expect(r.stderr).toContain('opt out with the annotation buildkit-fleet.io/inject: "disabled"');
  expect(await getPod(namespace, 'no-tcp')).toBeUndefined();
}, 30_000);

test('--dry-run=server shows the injected pod and stores nothing', async () => {
  const r = await apply(namespace, podYaml('dry'), '--dry-run=server', '-o', 'yaml');
  expect(r.code).toBe(0);
  const shown = parse(r.stdout) as V1Pod;
  expect(shown.spec!.containers.map((c) => c.name)).toEqual([SIDECAR, 'buildkitd']);
  expect(shown.spec!.containers[1]!.args).toContain('tcp://127.0.0.1:1233');
  expect(await getPod(namespace, 'dry')).toBeUndefined();
}, 30_000);
