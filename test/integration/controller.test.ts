// The controller on the real control plane with kube-controller-manager, kube-scheduler and a
// hollow node: Buildkits become scheduled, ready pods behind a stable Service endpoint.
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import type { Logger } from 'pino';

import { parseOptions } from '../../flags/options.ts';
import type { RunningController } from '../../controller/main.ts';
import { CONTROLLER_OPTIONS, startController } from '../../controller/main.ts';
import { testCluster } from '../../hack/testenv.ts';
import { installCrds } from '../support/crds.ts';
import { seatgeekExamples } from '../support/examples.ts';
import { waitFor } from '../support/wait.ts';

/** Probes here read through kubectl, which can fail while objects are being replaced: retry. */
const eventually = <T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 60_000) =>
  waitFor(what, probe, { timeoutMs, intervalMs: 250, retryErrors: true });

const cluster = testCluster();
const { kubectl } = cluster;
const lease = `bkf-test-${randomBytes(3).toString('hex')}`;
const quiet = pino({ level: process.env['BKF_TEST_LOG'] ?? 'silent' });

function controllerFor(
  namespace: string,
  logger: Logger = quiet,
  extra: string[] = [],
): Promise<RunningController> {
  const options = parseOptions(
    [
      '--kubeconfig',
      cluster.kubeconfigPath,
      '--watch-namespace',
      namespace,
      '--leader-election-namespace',
      namespace,
      '--leader-election-name',
      lease,
      '--metrics-listen',
      '127.0.0.1:0',
      ...extra,
    ],
    CONTROLLER_OPTIONS,
  );
  return startController(options, logger);
}

async function getJson(kind: string, name: string, namespace: string) {
  const r = await kubectl(['get', kind, name, '-n', namespace, '-o', 'json'], { allowFail: true });
  return r.code === 0 ? JSON.parse(r.stdout) : undefined;
}

const runningBuildkit = (name: string, namespace: string) =>
  eventually(`Buildkit ${name} Running with an endpoint`, async () => {
    const bk = await getJson('bk', name, namespace);
    return bk?.status?.phase === 'Running' && bk.status.endpoint ? bk : undefined;
  });

const ownedPods = async (name: string, namespace: string) =>
  JSON.parse(
    (
      await kubectl([
        'get',
        'pods',
        '-n',
        namespace,
        '-l',
        `buildkit.seatgeek.io/instance=${name}`,
        '-o',
        'json',
      ])
    ).stdout,
  ).items as { metadata: { name: string; deletionTimestamp?: string; uid: string } }[];

beforeAll(async () => {
  await installCrds();
}, 120_000);

describe('the seed template and instance, applied unchanged', () => {
  const namespace = 'some-ns'; // as written in the seed
  let controller: RunningController;
  let node: string;
  let originalArch: string;

  beforeAll(async () => {
    // The seed schedules on arm64 nodes; the hollow node says amd64. Relabel it for this test.
    node = (await kubectl(['get', 'nodes', '-o', 'jsonpath={.items[0].metadata.name}'])).stdout;
    originalArch = (
      await kubectl(['get', 'node', node, '-o', 'jsonpath={.metadata.labels.kubernetes\\.io/arch}'])
    ).stdout;
    await kubectl(['label', 'node', node, 'kubernetes.io/arch=arm64', '--overwrite']);
    await kubectl(['create', 'namespace', namespace], { allowFail: true });
    await eventually('default service account', async () =>
      (await kubectl(['get', 'secrets', '-n', namespace, '-o', 'name'], { allowFail: true })).stdout.includes(
        'default-token',
      ),
    );
    controller = await controllerFor(namespace);
    const { template, instance } = seatgeekExamples();
    await kubectl(['apply', '-f', '-'], { input: template });
    await kubectl(['apply', '-f', '-'], { input: instance });
  }, 120_000);

  afterAll(async () => {
    await controller?.stop();
    await kubectl(['label', 'node', node, `kubernetes.io/arch=${originalArch || 'amd64'}`, '--overwrite'], {
      allowFail: true,
    });
    await kubectl(['delete', 'namespace', namespace, '--wait=false'], { allowFail: true });
  });

  test('a pod is scheduled and Ready; the Buildkit is Running, Ready=True, with its endpoint', async () => {
    const bk = await runningBuildkit('buildkit-arm64-instance', namespace);
    const service = await getJson('service', 'buildkit-arm64-instance', namespace);
    expect(bk.status.endpoint).toBe(`tcp://${service.spec.clusterIP}:1234`);
    expect(bk.status.conditions).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          type: 'Ready',
          status: 'True',
          reason: 'Running',
          observedGeneration: bk.metadata.generation,
        }),
        expect.objectContaining({ type: 'TemplateResolved', status: 'True' }),
      ]),
    );
    expect(bk.status.observedGeneration).toBe(bk.metadata.generation);
    const [pod] = await ownedPods('buildkit-arm64-instance', namespace);
    const full = await getJson('pod', pod!.metadata.name, namespace);
    expect(full.spec.nodeName).toBe(node);
    expect(full.spec.containers[0].image).toBe('moby/buildkit:rootless');
    expect(full.spec.containers[0].resources).toEqual({
      requests: { cpu: '500m', memory: '8Gi' },
      limits: { cpu: '8', memory: '8Gi' },
    });
    const printed = await kubectl(['get', 'bk', '-n', namespace]);
    expect(printed.stdout).toMatch(
      /buildkit-arm64-instance\s+buildkit-arm64\s+Running\s+tcp:\/\/[\d.]+:1234/,
    );
  }, 90_000);

  test('kubectl describe shows what the controller did, as events on the Buildkit', async () => {
    await runningBuildkit('buildkit-arm64-instance', namespace);
    // events are written after the status, so they may trail it by a moment
    const reasons = await eventually('CreatedPod and PhaseRunning events', async () => {
      const r = await kubectl([
        'get',
        'events',
        '-n',
        namespace,
        '--field-selector',
        'involvedObject.kind=Buildkit,involvedObject.name=buildkit-arm64-instance',
        '-o',
        'jsonpath={range .items[*]}{.reason}={.message}{"\\n"}{end}',
      ]);
      const lines = r.stdout.trim().split('\n');
      return lines.some((l) => l.startsWith('PhaseRunning=')) && lines;
    });
    expect(reasons).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          /^CreatedPod=created pod buildkit-arm64-instance-\w+ and Service buildkit-arm64-instance/,
        ),
        expect.stringMatching(/^PhaseRunning=/),
      ]),
    );
  });

  test('the template ConfigMap holds buildkitd.toml', async () => {
    const cm = await eventually('ConfigMap', () =>
      getJson('configmap', 'buildkit-buildkit-arm64-toml', namespace),
    );
    expect(cm.data['buildkitd.toml']).toContain('max-parallelism = 3');
  });

  test('a pod deleted by hand is replaced and the endpoint does not change', async () => {
    const before = await runningBuildkit('buildkit-arm64-instance', namespace);
    const [pod] = await ownedPods('buildkit-arm64-instance', namespace);
    await kubectl(['delete', 'pod', pod!.metadata.name, '-n', namespace, '--wait=false']);
    await eventually('a replacement pod', async () => {
      const pods = await ownedPods('buildkit-arm64-instance', namespace);
      return pods.some((p) => p.metadata.uid !== pod!.metadata.uid && !p.metadata.deletionTimestamp);
    });
    const after = await eventually('Running again on the new pod', async () => {
      const bk = await runningBuildkit('buildkit-arm64-instance', namespace);
      return bk.status.resourceRefs.some(
        (r: { kind: string; name: string }) => r.kind === 'Pod' && r.name !== pod!.metadata.name,
      )
        ? bk
        : undefined;
    });
    expect(after.status.endpoint).toBe(before.status.endpoint);
  }, 90_000);

  test('deleting the Buildkit garbage-collects its pod and Service', async () => {
    await kubectl(['delete', 'bk', 'buildkit-arm64-instance', '-n', namespace]);
    await eventually(
      'pod and service gone',
      async () => {
        const pods = await ownedPods('buildkit-arm64-instance', namespace);
        const svc = await getJson('service', 'buildkit-arm64-instance', namespace);
        return pods.length === 0 && !svc;
      },
      60_000,
    );
  }, 90_000);
});

describe('a Buildkit naming a missing template', () => {
  let namespace: string;
  let controller: RunningController;
  beforeAll(async () => {
    namespace = await cluster.createNamespace('ctrl-missing');
    controller = await controllerFor(namespace);
  }, 60_000);
  afterAll(async () => {
    await controller?.stop();
    await cluster.deleteNamespace(namespace);
  });

  test('reports why, and recovers on its own once the template appears', async () => {
    await kubectl(['apply', '-n', namespace, '-f', '-'], {
      input:
        'apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: Buildkit\nmetadata:\n  name: early\nspec:\n  template: later\n',
    });
    const waiting = await eventually('TemplateNotFound', async () => {
      const bk = await getJson('bk', 'early', namespace);
      return bk?.status?.conditions?.find(
        (c: { type: string; reason: string }) => c.type === 'Ready' && c.reason === 'TemplateNotFound',
      )
        ? bk
        : undefined;
    });
    expect(waiting.status.phase).toBe('Pending');
    expect(waiting.status.endpoint).toBeUndefined();
    await kubectl(['apply', '-n', namespace, '-f', '-'], {
      input:
        'apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: BuildkitTemplate\nmetadata:\n  name: later\nspec:\n  image: moby/buildkit:v0.13.1\n',
    });
    await runningBuildkit('early', namespace);
  }, 90_000);
});

describe('two controller replicas', () => {
  let namespace: string;
  const lines = { a: [] as string[], b: [] as string[] };
  const capture = (into: string[]) =>
    pino({ level: 'info' }, { write: (line: string) => void into.push(line) });
  let a: RunningController;
  let b: RunningController;
  beforeAll(async () => {
    namespace = await cluster.createNamespace('ctrl-ha');
    await kubectl(['apply', '-n', namespace, '-f', '-'], {
      input:
        'apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: BuildkitTemplate\nmetadata:\n  name: t\nspec:\n  image: moby/buildkit:v0.13.1\n',
    });
    const fast = [
      '--leader-election-lease-duration',
      '4',
      '--leader-election-renew-deadline',
      '3',
      '--leader-election-retry-period',
      '1',
    ];
    a = await controllerFor(namespace, capture(lines.a), fast);
    b = await controllerFor(namespace, capture(lines.b), fast);
  }, 60_000);
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await cluster.deleteNamespace(namespace);
  });

  const actions = (l: string[]) => l.filter((x) => x.includes('"msg":"buildkit reconcile"'));

  test('only the leader acts, and stopping it hands over', async () => {
    await eventually('a leader', async () => a.isLeader() || b.isLeader());
    expect(a.isLeader() && b.isLeader()).toBe(false);
    const [leader, follower, leaderLines, followerLines] = a.isLeader()
      ? [a, b, lines.a, lines.b]
      : [b, a, lines.b, lines.a];
    await kubectl(['apply', '-n', namespace, '-f', '-'], {
      input:
        'apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: Buildkit\nmetadata:\n  name: one\nspec:\n  template: t\n',
    });
    await runningBuildkit('one', namespace);
    expect(actions(leaderLines).length).toBeGreaterThan(0);
    expect(actions(followerLines)).toEqual([]);

    await leader.stop();
    await eventually('the other replica to lead', async () => follower.isLeader(), 20_000);
    await kubectl(['apply', '-n', namespace, '-f', '-'], {
      input:
        'apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: Buildkit\nmetadata:\n  name: two\nspec:\n  template: t\n',
    });
    await runningBuildkit('two', namespace);
    expect(actions(followerLines).some((l) => l.includes('"name":"two"'))).toBe(true);
  }, 120_000);
});
