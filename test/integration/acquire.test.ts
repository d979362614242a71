// `buildkit-fleet acquire` and `release` (the CI client) on the real API server. With a
// controller watching the namespace, acquire prints the Buildkit's status.endpoint and exits 0,
// and release removes it; without one (a second namespace), a timeout deletes what acquire
// created, and a Buildkit at zero gets the wake annotation the controller reads. Bad input and a
// missing template exit non-zero and create nothing. (The hollow node runs no container, so the
// endpoint is compared with status rather than dialled.)
import { randomBytes } from 'node:crypto';
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';

import { BUILDKIT, GROUP, VERSION } from '../../api/group.ts';
import { WAKE_REQUESTED_ANNOTATION } from '../../api/labels.ts';
import type { Buildkit } from '../../api/types.generated.ts';
import { parseAcquireArgs } from '../../cli/acquire/plan.ts';
import { runAcquire } from '../../cli/acquire/run.ts';
import { runCli } from '../../cli/commands.ts';
import type { RunningController } from '../../controller/main.ts';
import { testCluster } from '../../hack/testenv.ts';
import { installCrds } from '../support/crds.ts';
import { startLocalController } from '../support/local-controller.ts';
import { waitFor } from '../support/wait.ts';

const cluster = testCluster();
const { kubectl } = cluster;
const custom = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const lease = `bkf-acquire-${randomBytes(3).toString('hex')}`;
const TEMPLATE = 'ci';

async function cli(...argv: string[]) {
  let out = '';
  let err = '';
  const code = await runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

const acquire = (namespace: string, ...args: string[]) =>
  cli('acquire', '--kubeconfig', cluster.kubeconfigPath, '--namespace', namespace, ...args);
const release = (namespace: string, name: string) =>
  cli('release', name, '--kubeconfig', cluster.kubeconfigPath, '--namespace', namespace);

const base = (namespace: string) => ({ group: GROUP, version: VERSION, namespace, plural: BUILDKIT.plural });
const getBuildkit = (namespace: string, name: string) =>
  custom.getNamespacedCustomObject({ ...base(namespace), name }).then(
    (o) => o as Buildkit,
    (error: { code?: number }) => {
      if (error.code === 404) return undefined;
      throw error;
    },
  );
const buildkitNames = async (namespace: string) =>
  ((await custom.listNamespacedCustomObject(base(namespace))) as { items: Buildkit[] }).items.map(
    (b) => b.metadata!.name!,
  );

const applyTemplate = (namespace: string, name = TEMPLATE) =>
  kubectl(['apply', '-n', namespace, '-f', '-'], {
    input: `apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: BuildkitTemplate\nmetadata:\n  name: ${name}\nspec:\n  image: moby/buildkit:v0.13.1\n`,
  });

/** stdout of a successful acquire: exactly BUILDKIT_HOST and BUILDKIT_NAME. */
function printed(out: string): { host: string; name: string } {
  const match = /^BUILDKIT_HOST=(tcp:\/\/\S+)\nBUILDKIT_NAME=(\S+)\n$/.exec(out);
  if (!match) throw new Error(`acquire printed ${JSON.stringify(out)}`);
  return { host: match[1]!, name: match[2]! };
}

beforeAll(async () => {
  await installCrds();
}, 120_000);

describe('with a controller watching the namespace', () => {
  let namespace: string;
  let controller: RunningController;

  beforeAll(async () => {
    namespace = await cluster.createNamespace('acquire');
    await applyTemplate(namespace);
    controller = await startLocalController(cluster, namespace, lease);
  }, 60_000);

  afterAll(async () => {
    await controller?.stop();
    if (namespace) await cluster.deleteNamespace(namespace);
  });

  test('acquire prints the Ready Buildkit endpoint and its name, exit 0; release removes it', async () => {
    const result = await acquire(namespace, '--template', TEMPLATE, '--wait', '90s');
    expect(result.code).toBe(0);
    const { host, name } = printed(result.out);
    expect(name).toMatch(new RegExp(`^${TEMPLATE}-[a-z0-9]{5}$`));
    // progress on stderr, short lines
    expect(result.err).toContain(
      `created Buildkit "${name}" from template "${TEMPLATE}" in namespace "${namespace}"`,
    );
    expect(result.err).toContain(`"${name}" is Ready at ${host}`);

    const bk = await getBuildkit(namespace, name);
    expect(bk?.status?.phase).toBe('Running');
    expect(bk?.status?.conditions).toEqual(
      expect.arrayContaining([expect.objectContaining({ type: 'Ready', status: 'True' })]),
    );
    expect(host).toBe(bk!.status!.endpoint);
    const service = await core.readNamespacedService({ name, namespace });
    expect(host).toBe(`tcp://${service.spec!.clusterIP}:1234`);
    expect(bk?.metadata?.labels).toMatchObject({ 'app.kubernetes.io/created-by': 'buildkit-fleet-acquire' });

    const released = await release(namespace, name);
    expect(released).toMatchObject({ code: 0, out: '' });
    expect(released.err).toContain(`deleted Buildkit "${name}" in namespace "${namespace}"`);
    await waitFor(`Buildkit ${name} gone`, async () => (await getBuildkit(namespace, name)) === undefined, {
      timeoutMs: 30_000,
      intervalMs: 200,
    });

    // a cleanup step that runs again: a note, still exit 0
    const again = await release(namespace, name);
    expect(again).toMatchObject({ code: 0, out: '' });
    expect(again.err).toContain(
      `Buildkit "${name}" in namespace "${namespace}" not found: nothing to release`,
    );
  }, 120_000);

  test('--owner-pod: the Buildkit is owned by the CI job pod and garbage-collected with it', async () => {
    const pod = await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name: 'ci-job' },
        spec: { containers: [{ name: 'job', image: 'registry.k8s.io/pause:3.2' }] },
      },
    });
    const result = await acquire(
      namespace,
      '--template',
      TEMPLATE,
      '--name',
      'job-42',
      '--owner-pod',
      'ci-job',
    );
    expect(result.code).toBe(0);
    expect(printed(result.out).name).toBe('job-42');
    const bk = await getBuildkit(namespace, 'job-42');
    expect(bk?.metadata?.ownerReferences).toEqual([
      { apiVersion: 'v1', kind: 'Pod', name: 'ci-job', uid: pod.metadata!.uid },
    ]);
    expect(printed(result.out).host).toBe(bk!.status!.endpoint);

    await core.deleteNamespacedPod({ name: 'ci-job', namespace, gracePeriodSeconds: 0 });
    await waitFor(
      'the garbage collector deletes the Buildkit',
      async () => !(await getBuildkit(namespace, 'job-42')),
      {
        timeoutMs: 60_000,
        intervalMs: 500,
      },
    );
  }, 120_000);

  test('an --owner-pod that does not exist fails with exit 1 before creating anything', async () => {
    const before = await buildkitNames(namespace);
    const result = await acquire(namespace, '--template', TEMPLATE, '--owner-pod', 'no-such-pod');
    expect(result).toMatchObject({ code: 1, out: '' });
    expect(result.err).toContain(`--owner-pod: pod "no-such-pod" not found in namespace "${namespace}"`);
    expect(await buildkitNames(namespace)).toEqual(before);
  });
});

describe('without a controller', () => {
  let namespace: string;

  beforeAll(async () => {
    namespace = await cluster.createNamespace('acquire-idle');
    await applyTemplate(namespace);
  }, 60_000);

  afterAll(async () => {
    if (namespace) await cluster.deleteNamespace(namespace);
  });

  test('a missing template: exit 1, says which and where, creates nothing', async () => {
    const result = await acquire(namespace, '--template', 'nope');
    expect(result).toMatchObject({ code: 1, out: '' });
    expect(result.err).toBe(
      `buildkit-fleet acquire: template "nope" not found in namespace "${namespace}"\n`,
    );
    expect(await buildkitNames(namespace)).toEqual([]);
  });

  test.each([
    [['--template', TEMPLATE, '--wait', 'soon'], '--wait "soon": must be a duration'],
    [['--template', TEMPLATE, '--bogus'], "Unknown option '--bogus'"],
    [['--wait', '2s'], '--template is required'],
  ])('bad flags %j: exit 2, nothing created', async (args, message) => {
    const result = await acquire(namespace, ...args);
    expect(result).toMatchObject({ code: 2, out: '' });
    expect(result.err).toContain(message);
    expect(await buildkitNames(namespace)).toEqual([]);
  });

  test('a timeout: exit 1 with the last reason, and the Buildkit it created is deleted', async () => {
    const started = Date.now();
    const result = await acquire(namespace, '--template', TEMPLATE, '--wait', '2s');
    expect(result).toMatchObject({ code: 1, out: '' });
    expect(Date.now() - started).toBeLessThan(15_000);
    const created = /created Buildkit "([^"]+)"/.exec(result.err)?.[1];
    expect(created).toMatch(new RegExp(`^${TEMPLATE}-`));
    expect(result.err).toContain(
      `buildkit-fleet acquire: Buildkit "${created}" in namespace "${namespace}" was not Ready after 2s (last: no status yet (is the controller running, and watching this namespace?)); deleted it\n`,
    );
    await waitFor('nothing left behind', async () => (await buildkitNames(namespace)).length === 0, {
      timeoutMs: 15_000,
      intervalMs: 200,
    });
  }, 30_000);

  test('interrupted (the CI job cancelled: SIGTERM aborts the wait): the Buildkit it created is deleted', async () => {
    const abort = new AbortController();
    let err = '';
    const request = parseAcquireArgs(
      [
        '--kubeconfig',
        cluster.kubeconfigPath,
        '--namespace',
        namespace,
        '--template',
        TEMPLATE,
        '--wait',
        '1m',
      ],
      {},
    );
    const running = runAcquire(request, { out: () => {}, err: (s) => (err += s) }, abort.signal);
    await waitFor('the Buildkit created', () => err.includes('created Buildkit'), { timeoutMs: 15_000 });
    abort.abort();
    await expect(running).rejects.toThrow(
      /^interrupted while waiting for Buildkit "ci-[a-z0-9]+" .*; deleted it$/,
    );
    await waitFor('nothing left behind', async () => (await buildkitNames(namespace)).length === 0, {
      timeoutMs: 15_000,
      intervalMs: 200,
    });
  }, 30_000);

  describe('an existing Buildkit at zero', () => {
    const name = 'sleepy';
    const setStatus = (status: Buildkit['status']) =>
      custom.patchNamespacedCustomObjectStatus({ ...base(namespace), name, body: { status } }, mergePatch);
    const condition = (status: 'True' | 'False', reason: string) => ({
      type: 'Ready',
      status,
      reason,
      message: reason,
      lastTransitionTime: new Date().toISOString(),
    });

    beforeEach(async () => {
      await kubectl(['apply', '-n', namespace, '-f', '-'], {
        input: `apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: Buildkit\nmetadata:\n  name: ${name}\nspec:\n  template: ${TEMPLATE}\n`,
      });
      await setStatus({
        phase: 'ScaledToZero',
        endpoint: 'tcp://10.96.0.99:1234',
        conditions: [condition('False', 'ScaledToZero')],
      });
    });

    afterEach(async () => {
      await kubectl(['delete', 'bk', name, '-n', namespace, '--ignore-not-found']);
    });

    test('acquire --name asks for a wake (the annotation) and prints the endpoint once it runs', async () => {
      const pending = acquire(namespace, '--template', TEMPLATE, '--name', name, '--wait', '30s');
      // play the controller: see the request, wake the instance
      const asked = await waitFor(
        'the wake annotation',
        async () => (await getBuildkit(namespace, name))?.metadata?.annotations?.[WAKE_REQUESTED_ANNOTATION],
        { timeoutMs: 15_000, intervalMs: 100 },
      );
      expect(Number.isNaN(Date.parse(asked))).toBe(false);
      await setStatus({ phase: 'Waking', conditions: [condition('False', 'Waking')] });
      await setStatus({ phase: 'Running', conditions: [condition('True', 'Running')] });
      const result = await pending;
      expect(result.code).toBe(0);
      expect(printed(result.out)).toEqual({ host: 'tcp://10.96.0.99:1234', name });
      expect(result.err).toContain(`using the existing Buildkit "${name}"`);
      expect(result.err).toContain(`"${name}" is scaled to zero: asked for a wake`);
    }, 60_000);

    test('a timeout leaves a Buildkit acquire did not create in place', async () => {
      const result = await acquire(namespace, '--template', TEMPLATE, '--name', name, '--wait', '2s');
      expect(result).toMatchObject({ code: 1, out: '' });
      expect(result.err).toContain('was not Ready after 2s (last: ScaledToZero, ScaledToZero: ScaledToZero)');
      expect(result.err).toContain('it was not created by acquire, so it is left in place');
      expect(await getBuildkit(namespace, name)).toBeDefined();
    }, 30_000);

    test('one made from another template is refused, exit 1, untouched', async () => {
      await applyTemplate(namespace, 'other');
      const result = await acquire(namespace, '--template', 'other', '--name', name, '--wait', '2s');
      expect(result).toMatchObject({ code: 1, out: '' });
      expect(result.err).toContain(`exists and was made from template "${TEMPLATE}", not "other"`);
      expect(
        (await getBuildkit(namespace, name))?.metadata?.annotations?.[WAKE_REQUESTED_ANNOTATION],
      ).toBeUndefined();
    });
  });
});
