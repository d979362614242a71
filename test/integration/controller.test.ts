// The controller on the real control plane with kube-controller-manager, kube-scheduler and a
// hollow node: Buildkits become scheduled, ready pods behind a stable Service endpoint.
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import type { Logger } from 'pino';

import type { RunningController } from '../../controller/main.ts';
import { testCluster } from '../../hack/testenv.ts';
import { installCrds } from '../support/crds.ts';
import { startLocalController, quietLogger } from '../support/local-controller.ts';
import { seatgeekExamples } from '../support/examples.ts';
import { waitFor } from '../support/wait.ts';

/** Probes here read through kubectl, which can fail while objects are being replaced: retry. */
const eventually = <T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 60_000) =>
  waitFor(what, probe, { timeoutMs, intervalMs: 250, retryErrors: true });

const cluster = testCluster();
const { kubectl } = cluster;
const lease = `bkf-test-${randomBytes(3).toString('hex')}`;
const quiet = quietLogger();

function controllerFor(
  namespace: string,
  logger: Logger = quiet,
  extra: string[] = [],
): Promise<RunningController> {
  return startLocalController(cluster, namespace, lease, logger, extra);
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

describe('spec.persistence: a PersistentVolumeClaim per Buildkit', () => {
  let namespace: string;
  let controller: RunningController;
  const bkt = (name: string, spec: string) =>
    `apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: BuildkitTemplate\nmetadata:\n  name: ${name}\nspec:\n  image: moby/buildkit:v0.13.1\n${spec}`;
  const bk = (name: string, template: string) =>
    `apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: Buildkit\nmetadata:\n  name: ${name}\nspec:\n  template: ${template}\n`;
  const apply = (yaml: string) => kubectl(['apply', '-n', namespace, '-f', '-'], { input: yaml });
  type Claim = {
    metadata: {
      uid: string;
      labels?: Record<string, string>;
      ownerReferences?: { kind: string; name: string; uid: string; controller?: boolean }[];
    };
    spec: { accessModes: string[]; storageClassName?: string; resources: { requests: { storage: string } } };
  };
  type Pod = {
    metadata: { name: string; uid: string };
    spec: {
      volumes: { name: string; persistentVolumeClaim?: { claimName: string }; emptyDir?: object }[];
      containers: { args: string[]; volumeMounts: { name: string; mountPath: string }[] }[];
      securityContext?: { fsGroup?: number };
    };
  };
  const claimOf = (name: string) =>
    eventually(`claim ${name}`, () => getJson('pvc', name, namespace) as Promise<Claim | undefined>);
  /** The one live pod of the Buildkit, read in full, other than `not` (a pod uid). */
  const podOf = (name: string, not?: string) =>
    eventually(`a pod of ${name}`, async () => {
      const live = (await ownedPods(name, namespace)).filter(
        (p) => !p.metadata.deletionTimestamp && p.metadata.uid !== not,
      );
      return live.length === 1
        ? ((await getJson('pod', live[0]!.metadata.name, namespace)) as Pod | undefined)
        : undefined;
    });
  const mountOf = (pod: Pod) => {
    const volume = pod.spec.volumes.find((v) => v.name === 'buildkitd')!;
    const mount = pod.spec.containers[0]!.volumeMounts.find((m) => m.name === 'buildkitd')!;
    const args = pod.spec.containers[0]!.args;
    return {
      claim: volume.persistentVolumeClaim?.claimName,
      path: mount.mountPath,
      root: args[args.indexOf('--root') + 1],
    };
  };
  const claimRefs = (name: string) =>
    eventually(`${name} lists its claim in status.resourceRefs`, async () => {
      const refs = ((await getJson('bk', name, namespace))?.status?.resourceRefs ?? []) as {
        kind: string;
        name: string;
      }[];
      const claims = refs.filter((r) => r.kind === 'PersistentVolumeClaim');
      return claims.length ? claims : undefined;
    });

  beforeAll(async () => {
    namespace = await cluster.createNamespace('ctrl-pvc');
    controller = await controllerFor(namespace);
    // No StorageClass of that name exists, so the claims stay Pending and the pods unschedulable:
    // what is checked here is what the controller asks for, not a provisioner.
    await apply(
      bkt(
        'cached',
        '  persistence:\n    enabled: true\n    size: 2Gi\n    storageClassName: bkf-test-none\n    accessModes: [ReadWriteOnce, ReadWriteMany]\n',
      ),
    );
    await apply(
      bkt('kept', '  rootless: true\n  persistence:\n    enabled: true\n    whenDeleted: Retain\n'),
    );
  }, 60_000);
  afterAll(async () => {
    await controller?.stop();
    await cluster.deleteNamespace(namespace);
  });

  test('the Buildkit gets a claim it owns, sized and classed as the template says, mounted at the mountPath', async () => {
    await apply(bk('one', 'cached'));
    const claim = await claimOf('one-cache');
    const uid = (await getJson('bk', 'one', namespace)).metadata.uid;
    expect(claim.metadata.ownerReferences).toEqual([
      expect.objectContaining({ kind: 'Buildkit', name: 'one', uid, controller: true }),
    ]);
    expect(claim.metadata.labels).toMatchObject({
      'app.kubernetes.io/managed-by': 'buildkit-fleet',
      'buildkit.seatgeek.io/instance': 'one',
      'buildkit.seatgeek.io/template': 'cached',
    });
    expect(claim.spec).toMatchObject({
      accessModes: ['ReadWriteOnce', 'ReadWriteMany'],
      storageClassName: 'bkf-test-none',
      resources: { requests: { storage: '2Gi' } },
    });
    // no webhook here: the controller defaults mountPath itself (api/defaults.ts)
    expect(mountOf(await podOf('one'))).toEqual({
      claim: 'one-cache',
      path: '/var/lib/buildkit',
      root: '/var/lib/buildkit',
    });
    expect(await claimRefs('one')).toEqual([
      { version: 'v1', kind: 'PersistentVolumeClaim', name: 'one-cache', namespace },
    ]);
    const events = await eventually('the CreatedPod event names the claim', async () => {
      const r = await kubectl([
        'get',
        'events',
        '-n',
        namespace,
        '--field-selector',
        'involvedObject.name=one,reason=CreatedPod',
        '-o',
        'jsonpath={.items[*].message}',
      ]);
      return r.stdout.includes('PersistentVolumeClaim') && r.stdout;
    });
    expect(events).toMatch(
      /^created pod one-\w+, Service one \(the stable endpoint\) and PersistentVolumeClaim one-cache \(the build cache\)$/,
    );

    // Delete: garbage-collected with the Buildkit (once no pod uses it: pvc-protection)
    await kubectl(['delete', 'bk', 'one', '-n', namespace]);
    await eventually(
      'claim one-cache gone with its Buildkit',
      async () => !(await getJson('pvc', 'one-cache', namespace)),
      60_000,
    );
  }, 120_000);

  test('Retain: the claim has no owner, and a new Buildkit of the same name mounts the same claim', async () => {
    await apply(bk('keeper', 'kept'));
    const claim = await claimOf('keeper-cache');
    expect(claim.metadata.ownerReferences).toBeUndefined();
    expect(claim.metadata.labels).toMatchObject({ 'buildkit.seatgeek.io/instance': 'keeper' });
    const first = await podOf('keeper');
    expect(mountOf(first)).toEqual({
      claim: 'keeper-cache',
      path: '/home/user/.local/share/buildkit',
      root: '/home/user/.local/share/buildkit',
    });
    expect(first.spec.securityContext).toMatchObject({ fsGroup: 1000 });

    await kubectl(['delete', 'bk', 'keeper', '-n', namespace]);
    await eventually(
      'the pod is garbage-collected',
      async () => (await ownedPods('keeper', namespace)).length === 0,
      60_000,
    );
    expect((await getJson('pvc', 'keeper-cache', namespace))?.metadata.uid).toBe(claim.metadata.uid);

    await apply(bk('keeper', 'kept'));
    const second = await podOf('keeper', first.metadata.uid);
    expect(mountOf(second).claim).toBe('keeper-cache');
    const after = (await getJson('pvc', 'keeper-cache', namespace)) as Claim;
    expect(after.metadata.uid).toBe(claim.metadata.uid);
    expect(after.metadata.ownerReferences).toBeUndefined();
    expect(await claimRefs('keeper')).toEqual([expect.objectContaining({ name: 'keeper-cache' })]);
  }, 150_000);

  test("a claim of that name that is not the Buildkit's is reported and never mounted", async () => {
    await apply(
      'apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: taken-cache\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n',
    );
    await apply(bk('taken', 'cached'));
    const ready = await eventually('Ready=False ClaimConflict', async () => {
      const conditions = ((await getJson('bk', 'taken', namespace))?.status?.conditions ?? []) as {
        type: string;
        reason: string;
        message: string;
      }[];
      return conditions.find((c) => c.type === 'Ready' && c.reason === 'ClaimConflict');
    });
    expect(ready.message).toBe(
      'PersistentVolumeClaim taken-cache exists and is not labelled for this Buildkit; delete or rename it',
    );
    expect(await ownedPods('taken', namespace)).toEqual([]);
    const claim = (await getJson('pvc', 'taken-cache', namespace)) as Claim;
    expect(claim.metadata.ownerReferences).toBeUndefined();
    expect(claim.metadata.labels).toBeUndefined();
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
