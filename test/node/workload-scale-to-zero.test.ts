// The "buildkitd stack" shape on the real node: a StatefulSet of one buildkitd with a volume claim
// template and its own client-facing Service, opted in by the autoscale label on its pod template.
// It scales 1 -> 0 when idle and 0 -> 1 when a client connects to the Service, keeping its claim;
// the controller only adds an annotation, sets the replicas and writes an extra EndpointSlice:
// nothing the manifest owns is taken away from it.
//
// The tests share one cluster and run in order.
import fs from 'node:fs';

import { startCluster, type LocalCluster } from '../../hack/cluster.ts';
import { NODE_IP } from '../../hack/real-node/plan.ts';
import { healthCheck, listWorkers } from '../support/buildkit-client.ts';
import {
  describeRealNode,
  hostPathVolume,
  startPlatform,
  standinBoots,
  stopAll,
  type PlatformProcess,
} from '../support/node-tier.ts';
import { waitFor } from '../support/wait.ts';

const NAMESPACE = 'stack-ns';
const NAME = 'stack-buildkitd';
const IDLE_SECONDS = 6;
const STORAGE_CLASS = 'bkf-static';
const CLAIM = `cache-${NAME}-0`;

interface StatefulSetView {
  metadata: { annotations?: Record<string, string> };
  spec: { replicas: number };
}

const manifests = (volumeYaml: string) => `${volumeYaml}
---
apiVersion: v1
kind: Service
metadata: { name: ${NAME}-headless, namespace: ${NAMESPACE} }
spec:
  clusterIP: None
  selector: { app: ${NAME} }
  ports: [{ name: buildkitd, port: 8372 }]
---
apiVersion: v1
kind: Service
metadata: { name: ${NAME}, namespace: ${NAMESPACE} }
spec:
  selector: { app: ${NAME} }
  ports: [{ name: buildkitd, port: 8372, targetPort: 8372 }]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: ${NAME}
  namespace: ${NAMESPACE}
  annotations: { buildkit-fleet.io/idle-timeout: ${IDLE_SECONDS}s }
spec:
  replicas: 1
  serviceName: ${NAME}-headless
  selector: { matchLabels: { app: ${NAME} } }
  template:
    metadata:
      labels: { app: ${NAME}, buildkit-fleet.io/autoscale: enabled }
    spec:
      containers:
        - name: buildkitd
          image: moby/buildkit:latest
          imagePullPolicy: Never
          args: [--addr, tcp://0.0.0.0:8372, --root, /var/lib/buildkit]
          ports: [{ name: buildkitd, containerPort: 8372 }]
          volumeMounts: [{ name: cache, mountPath: /var/lib/buildkit }]
  volumeClaimTemplates:
    - metadata: { name: cache }
      spec:
        accessModes: [ReadWriteOnce]
        storageClassName: ${STORAGE_CLASS}
        resources: { requests: { storage: 1Gi } }
`;

describeRealNode('an annotated StatefulSet (the buildkitd stack) on the real node', () => {
  let cluster: LocalCluster;
  let platform: PlatformProcess[] = [];
  let cacheDir: string;
  let volumeYaml = '';
  let address = '';

  const json = async <T>(args: string[]): Promise<T> =>
    JSON.parse((await cluster.kubectl([...args, '-o', 'json'])).stdout) as T;
  const statefulSet = () => json<StatefulSetView>(['get', 'statefulset', '-n', NAMESPACE, NAME]);
  const state = async () => {
    const text = (await statefulSet()).metadata.annotations?.['buildkit-fleet.io/autoscaling-state'];
    return text ? (JSON.parse(text) as { phase?: string; replicas?: number; reason?: string }) : {};
  };
  const livePods = async () =>
    (
      await json<{ items: { metadata: { name: string; deletionTimestamp?: string } }[] }>([
        'get',
        'pods',
        '-n',
        NAMESPACE,
        '-l',
        `app=${NAME}`,
      ])
    ).items.filter((p) => !p.metadata.deletionTimestamp);
  const events = async () =>
    (
      await cluster.kubectl([
        'get',
        'events',
        '-n',
        NAMESPACE,
        '--field-selector',
        `involvedObject.kind=StatefulSet,involvedObject.name=${NAME}`,
      ])
    ).stdout;
  const atZero = () =>
    waitFor(
      'the StatefulSet at zero',
      async () => {
        const [sts, s] = [await statefulSet(), await state()];
        return sts.spec.replicas === 0 && s.phase === 'ScaledToZero' ? s : undefined;
      },
      { timeoutMs: (IDLE_SECONDS + 40) * 1000, intervalMs: 250 },
    );
  const boots = () => standinBoots(cacheDir);
  const metric = async (pattern: RegExp) => {
    const url = /"metricsUrl":"(http:[^"]+)"/.exec(
      fs.readFileSync(platform.find((p) => p.logPath.endsWith('controller.log'))!.logPath, 'utf8'),
    );
    if (!url) return undefined;
    const text = await (await fetch(`${url[1]}/metrics`)).text();
    return Number(pattern.exec(text)?.[1] ?? 0);
  };

  beforeAll(async () => {
    cluster = await startCluster({ nodes: 0, realNode: true });
    platform = await startPlatform(
      cluster,
      'bkf-workload-scale-to-zero',
      [
        '--activator-address',
        NODE_IP,
        '--scale-interval',
        '0.5',
        '--fence-settle',
        '1',
        '--min-idle-timeout',
        '5s',
      ],
      [],
    );
    const volume = hostPathVolume(cluster, 'stack-cache-pv', STORAGE_CLASS);
    cacheDir = volume.dir;
    volumeYaml = volume.yaml;
    await cluster.kubectl(['create', 'namespace', NAMESPACE]);
    await cluster.kubectl(['apply', '-f', '-'], { input: manifests(volumeYaml) });
    const service = await json<{ spec: { clusterIP: string } }>(['get', 'service', '-n', NAMESPACE, NAME]);
    address = `tcp://${service.spec.clusterIP}:8372`;
  }, 600_000);

  afterAll(() => stopAll(cluster, platform, 'bkf-workload-scale-to-zero-logs'), 120_000);

  test('idle: replicas 1 -> 0, the pod goes, its claim stays Bound, the Service and manifest fields are untouched', async () => {
    // Ready first: a grpc-js client closed while its connect is still pending keeps that
    // connection open, and an open connection rightly keeps the workload awake
    await waitFor(
      'the StatefulSet pod to be Ready',
      async () =>
        (await json<{ status: { readyReplicas?: number } }>(['get', 'statefulset', '-n', NAMESPACE, NAME]))
          .status.readyReplicas === 1,
      { timeoutMs: 180_000, intervalMs: 500 },
    );
    expect(await healthCheck(address, 10_000)).toEqual({ status: 'SERVING' });
    expect(boots()).toHaveLength(1);
    const zero = await atZero();
    expect(zero).toMatchObject({ replicas: 1, reason: 'ScaledToZero' });
    await waitFor('the pod to go', async () => (await livePods()).length === 0, { timeoutMs: 60_000 });
    const claim = await json<{ status: { phase: string } }>(['get', 'pvc', '-n', NAMESPACE, CLAIM]);
    expect(claim.status.phase).toBe('Bound');
    // the Service is as applied; the route to the activators is a slice of its own
    const service = await json<{ spec: { selector: Record<string, string> } }>([
      'get',
      'service',
      '-n',
      NAMESPACE,
      NAME,
    ]);
    expect(service.spec.selector).toEqual({ app: NAME });
    const slice = await json<{ endpoints: { addresses: string[] }[]; ports: { port: number }[] }>([
      'get',
      'endpointslices.discovery.k8s.io',
      '-n',
      NAMESPACE,
      `${NAME}-bkf-activator`,
    ]);
    expect(slice.endpoints.flatMap((e) => e.addresses)).toEqual([NODE_IP]);
    expect(await events()).toMatch(/ScaledToZero\s+.*scaled to zero: idle/);
    expect(
      await metric(/buildkit_fleet_scale_downs_total\{kind="StatefulSet",outcome="scaled"\} (\d+)/),
    ).toBeGreaterThanOrEqual(1);
  }, 300_000);

  test('a client at zero: held, replicas 0 -> 1 with the same claim, and its call completes', async () => {
    const reply = await listWorkers(address, 120_000);
    expect(reply.record[0]?.ID).toBe('standin');
    expect((await statefulSet()).spec.replicas).toBe(1);
    expect(boots()).toHaveLength(2); // the same volume, mounted again
    const woke = await waitFor(
      'the Woke event',
      async () => {
        const text = await events();
        return /Woke\s+.*awake after/.test(text) ? text : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    expect(woke).toMatch(/WakeRequested/);
    const sts = await statefulSet();
    expect(sts.metadata.annotations?.['buildkit-fleet.io/wake-requested']).toBeUndefined();
    expect(await metric(/buildkit_fleet_wakes_total\{kind="StatefulSet"\} (\d+)/)).toBeGreaterThanOrEqual(1);
  }, 300_000);

  test('at zero, `kubectl apply` of the manifest (replicas: 1) is a wake, not a fight: it stays at 1 until idle again', async () => {
    await atZero();
    await cluster.kubectl(['apply', '-f', '-'], { input: manifests(volumeYaml) });
    await waitFor(
      'the applied replicas to be taken as a wake',
      async () => ((await state()).phase === 'Running' ? true : undefined),
      { timeoutMs: 120_000, intervalMs: 250 },
    );
    expect((await statefulSet()).spec.replicas).toBe(1);
    expect(await healthCheck(address, 60_000)).toEqual({ status: 'SERVING' });
    await atZero();
  }, 300_000);
});
