// Scale to zero on the real node: an autoscaled Buildkit with a persistent cache goes to zero
// when idle and wakes when a client connects to its unchanged endpoint, through the activator in
// the controller process (a host process here, reached at the node address), the Service's
// activator route (kube-proxy), the injected sidecar and the buildkitd stand-in.
//
// The tests share one cluster and run in order.
import net from 'node:net';

import { startCluster, type LocalCluster } from '../../hack/cluster.ts';
import { NODE_IP } from '../../hack/real-node/plan.ts';
import { healthCheck, listWorkers } from '../support/buildkit-client.ts';
import {
  controllerArgs,
  describeRealNode,
  hostPathVolume,
  startPlatform,
  startPlatformProcess,
  standinBoots,
  stopAll,
  type PlatformProcess,
} from '../support/node-tier.ts';
import { waitFor } from '../support/wait.ts';

const NAMESPACE = 'scale-ns';
const TEMPLATE = 'autoscaled';
const INSTANCE = 'bk-zero';
const IDLE_SECONDS = 6;
const STORAGE_CLASS = 'bkf-static';
const CONTROLLER_FLAGS = [
  '--activator-address',
  NODE_IP,
  '--scale-interval',
  '0.5',
  '--fence-settle',
  '1',
  '--activator-hold-timeout',
  '120',
];

interface BuildkitView {
  metadata: { resourceVersion: string; annotations?: Record<string, string> };
  status?: {
    phase?: string;
    endpoint?: string;
    lastActivityTime?: string;
    conditions?: { type: string; status: string; reason: string; message: string }[];
    autoscaling?: {
      activatorPort?: number;
      idleSince?: string;
      scaledToZeroTime?: string;
      wakeStartTime?: string;
    };
  };
}
interface PodView {
  metadata: { name: string; uid: string; deletionTimestamp?: string };
  spec: { volumes?: { name: string; persistentVolumeClaim?: { claimName: string } }[] };
  status: { podIP?: string; conditions?: { type: string; status: string }[] };
}

describeRealNode('scale to zero on the real node', () => {
  let cluster: LocalCluster;
  let platform: PlatformProcess[] = [];
  let cacheDir: string;

  const json = async <T>(args: string[]): Promise<T> =>
    JSON.parse((await cluster.kubectl([...args, '-o', 'json'])).stdout) as T;
  const buildkit = () => json<BuildkitView>(['get', 'buildkit', '-n', NAMESPACE, INSTANCE]);
  const pods = async () =>
    (
      await json<{ items: PodView[] }>([
        'get',
        'pods',
        '-n',
        NAMESPACE,
        '-l',
        `buildkit.seatgeek.io/instance=${INSTANCE}`,
      ])
    ).items.filter((p) => !p.metadata.deletionTimestamp);
  const phase = (want: string, timeoutMs = 90_000) =>
    waitFor(
      `phase ${want}`,
      async () => {
        const bk = await buildkit();
        return bk.status?.phase === want ? bk : undefined;
      },
      { timeoutMs, intervalMs: 200 },
    );
  const instanceEvents = async () =>
    (
      await cluster.kubectl([
        'get',
        'events',
        '-n',
        NAMESPACE,
        '--field-selector',
        `involvedObject.name=${INSTANCE}`,
      ])
    ).stdout;
  const boots = () => standinBoots(cacheDir);

  beforeAll(async () => {
    cluster = await startCluster({ nodes: 0, realNode: true });
    platform = await startPlatform(cluster, 'bkf-scale-to-zero', CONTROLLER_FLAGS, [
      '--min-idle-timeout',
      '5s',
    ]);
    const volume = hostPathVolume(cluster, 'bkf-cache-pv', STORAGE_CLASS);
    cacheDir = volume.dir;
    await cluster.kubectl(['create', 'namespace', NAMESPACE]);
    const manifests = `${volume.yaml}
---
apiVersion: buildkit.seatgeek.io/v1alpha1
kind: BuildkitTemplate
metadata: { name: ${TEMPLATE}, namespace: ${NAMESPACE} }
spec:
  port: 1234
  autoscaling: { enabled: true, idleTimeout: ${IDLE_SECONDS}s }
  lifecycle: { preStopScript: true }
  persistence: { enabled: true, size: 1Gi, storageClassName: ${STORAGE_CLASS} }
---
apiVersion: buildkit.seatgeek.io/v1alpha1
kind: Buildkit
metadata: { name: ${INSTANCE}, namespace: ${NAMESPACE} }
spec: { template: ${TEMPLATE} }
`;
    await cluster.kubectl(['apply', '-f', '-'], { input: manifests });
  }, 600_000);

  afterAll(() => stopAll(cluster, platform, 'bkf-scale-to-zero-logs'), 120_000);

  let endpoint = '';

  test('an idle instance goes to zero: its pod goes, its claim and endpoint stay, and the Active condition says why', async () => {
    const running = await phase('Running', 180_000);
    endpoint = running.status!.endpoint!;
    expect(endpoint).toMatch(/^tcp:\/\/10\.[0-9.]+:1234$/);
    expect(await healthCheck(endpoint)).toEqual({ status: 'SERVING' });
    const [pod] = await pods();
    const claim = pod!.spec.volumes!.find((v) => v.persistentVolumeClaim)!.persistentVolumeClaim!.claimName;
    expect(boots()).toHaveLength(1);

    const zero = await phase('ScaledToZero', (IDLE_SECONDS + 30) * 1000);
    expect(zero.status!.endpoint).toBe(endpoint);
    expect(zero.status!.conditions!.find((c) => c.type === 'Active')).toMatchObject({
      status: 'False',
      reason: 'ScaledToZero',
    });
    await waitFor('the pod to go', async () => (await pods()).length === 0, { timeoutMs: 60_000 });
    const pvc = await json<{ status: { phase: string } }>(['get', 'pvc', '-n', NAMESPACE, claim]);
    expect(pvc.status.phase).toBe('Bound');
    const events = await instanceEvents();
    expect(events).toMatch(/ScaledToZero\s+.*scaled to zero: idle/);
  }, 300_000);

  test('a client connecting at zero is held, the pod comes back with the same cache, and its call completes', async () => {
    const started = Date.now();
    const reply = await healthCheck(endpoint, 120_000);
    expect(reply).toEqual({ status: 'SERVING' });
    // the held call is answered once buildkitd serves; Running follows with the pod's Ready
    const woke = await phase('Running');
    expect(woke.status?.endpoint).toBe(endpoint);
    expect(boots()).toHaveLength(2); // the same volume, mounted again
    expect(woke.metadata.annotations?.['buildkit-fleet.io/wake-requested']).toBeUndefined();
    // Events are recorded after the status write that reaches Running: wait for them
    const events = await waitFor(
      'the Woke event',
      async () => {
        const text = await instanceEvents();
        return /Woke\s+.*awake after/.test(text) ? text : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    expect(events).toMatch(/WakeRequested/);
    expect(Date.now() - started).toBeLessThan(120_000);
  }, 300_000);

  test('50 clients connecting at once at zero are all served', async () => {
    await phase('ScaledToZero', (IDLE_SECONDS + 30) * 1000);
    await waitFor('the pod to go', async () => (await pods()).length === 0, { timeoutMs: 60_000 });
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, () => listWorkers(endpoint, 120_000)),
    );
    const failed = results
      .filter((r) => r.status === 'rejected')
      .map((r) => String((r as PromiseRejectedResult).reason));
    expect(failed).toEqual([]);
    expect(results.every((r) => r.status === 'fulfilled' && r.value.record[0]?.ID === 'standin')).toBe(true);
  }, 300_000);

  test('an open connection with no traffic keeps the instance awake past the timeout', async () => {
    await phase('Running');
    const [host, port] = endpoint.replace('tcp://', '').split(':') as [string, string];
    const silent = net.connect(Number(port), host);
    await new Promise<void>((resolve, reject) => silent.once('connect', resolve).once('error', reject));
    const podBefore = (await pods())[0]!.metadata.uid;
    await new Promise((resolve) => setTimeout(resolve, (IDLE_SECONDS * 2 + 3) * 1000));
    const bk = await buildkit();
    expect(bk.status?.phase).toBe('Running');
    expect(bk.status?.conditions?.find((c) => c.type === 'Active')).toMatchObject({
      status: 'True',
      reason: 'OpenConnections',
      message: '1 open connection',
    });
    expect((await pods())[0]!.metadata.uid).toBe(podBefore);
    silent.destroy();
    await phase('ScaledToZero', (IDLE_SECONDS + 30) * 1000);
  }, 300_000);

  test('clients connecting around the idle deadline and during the fence are all served', async () => {
    // Each round: wake, then fire clients spread over the window in which the instance reaches its
    // idle deadline and fences; every one must get its answer.
    const ROUNDS = 10;
    const PER_ROUND = 20;
    const failures: string[] = [];
    let served = 0;
    for (let round = 0; round < ROUNDS; round++) {
      await healthCheck(endpoint, 120_000); // wake (or keep awake)
      const idleStart = Date.now();
      const calls = Array.from({ length: PER_ROUND }, (_, i) => {
        const at = (IDLE_SECONDS - 1) * 1000 + (i * 3000) / PER_ROUND + round * 37;
        return new Promise<void>((resolve) => {
          setTimeout(
            () => {
              listWorkers(endpoint, 120_000).then(
                () => {
                  served++;
                  resolve();
                },
                (error: Error) => {
                  failures.push(`round ${round} client ${i}: ${error.message}`);
                  resolve();
                },
              );
            },
            Math.max(0, idleStart + at - Date.now()),
          );
        });
      });
      await Promise.all(calls);
    }
    expect(failures).toEqual([]);
    expect(served).toBe(ROUNDS * PER_ROUND);
  }, 900_000);

  test('a client that gives up while held is no activity: the instance goes back to zero on time', async () => {
    await phase('ScaledToZero', (IDLE_SECONDS + 30) * 1000);
    await waitFor('the pod to go', async () => (await pods()).length === 0, { timeoutMs: 60_000 });
    const [host, port] = endpoint.replace('tcp://', '').split(':') as [string, string];
    const quitter = net.connect(Number(port), host);
    await new Promise<void>((resolve, reject) => quitter.once('connect', resolve).once('error', reject));
    quitter.destroy(); // gave up at once; the wake it caused still happens
    const running = await phase('Running');
    expect(running.status?.phase).toBe('Running');
    const awakeAt = Date.now();
    await phase('ScaledToZero', (IDLE_SECONDS + 30) * 1000);
    // back at zero within the idle timeout plus the scaler's interval and the fence
    expect(Date.now() - awakeAt).toBeLessThan((IDLE_SECONDS + 10) * 1000);
  }, 300_000);

  test('the controller killed mid-idle and restarted neither restarts nor shortens the idle clock', async () => {
    await healthCheck(endpoint, 120_000);
    await phase('Running');
    // The clock starts at the first idle reading, and again if the woken call's own connection
    // shows up in a later one: take it once it has held still for a few scaler intervals.
    let seen: { value: string; since: number } | undefined;
    const idle = await waitFor(
      'the idle clock to start and hold still',
      async () => {
        const value = (await buildkit()).status?.autoscaling?.idleSince;
        if (!value) return undefined;
        if (seen?.value !== value) seen = { value, since: Date.now() };
        return Date.now() - seen.since >= 1500 ? value : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    const controller = platform.find((p) => p.logPath.endsWith('controller.log'))!;
    controller.child.kill('SIGKILL');
    await new Promise((resolve) => controller.child.once('exit', resolve));
    const restarted = startPlatformProcess(
      'controller-2',
      controllerArgs(cluster, CONTROLLER_FLAGS),
      cluster.dir,
    );
    platform.push(restarted);
    const zero = await phase('ScaledToZero', (IDLE_SECONDS + 60) * 1000);
    const zeroAt = Date.parse(zero.status!.autoscaling!.scaledToZeroTime!);
    // not shortened: never before the deadline of the clock that was running at the kill
    expect(zeroAt).toBeGreaterThanOrEqual(Date.parse(idle) + IDLE_SECONDS * 1000);
    // not restarted: the persisted idle start survived the restart
    expect(zero.status!.autoscaling!.idleSince).toBe(idle);
  }, 300_000);
});
