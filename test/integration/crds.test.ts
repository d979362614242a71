// The CRDs on a real API server, through kubectl as a user runs it.
import { CustomObjectsApi } from '@kubernetes/client-node';

import { testCluster } from '../../hack/testenv.ts';
import { CRD_NAMES, installCrds } from '../support/crds.ts';
import { seatgeekExamples } from '../support/examples.ts';

const cluster = testCluster();
const kubectl = cluster.kubectl;

beforeAll(async () => {
  await installCrds();
}, 120_000);

test('both CRDs install and become Established', async () => {
  for (const name of CRD_NAMES) {
    const { stdout } = await kubectl([
      'get',
      'crd',
      name,
      '-o',
      'jsonpath={.status.conditions[?(@.type=="Established")].status}',
    ]);
    expect(stdout).toBe('True');
  }
});

describe('the seatgeek README examples (seed 002)', () => {
  const namespace = 'some-ns'; // as written in the seed
  const { template, instance } = seatgeekExamples();

  beforeAll(async () => {
    await kubectl(['create', 'namespace', namespace], { allowFail: true });
  });
  afterAll(async () => {
    // wait: the controller tests apply the same seed into the same namespace afterwards
    await kubectl(['delete', 'namespace', namespace, '--timeout=90s'], { allowFail: true });
  }, 120_000);

  test('apply unchanged with kubectl apply', async () => {
    const t = await kubectl(['apply', '-f', '-'], { input: template });
    expect(t.stdout).toContain('buildkittemplate.buildkit.seatgeek.io/buildkit-arm64 created');
    const i = await kubectl(['apply', '-f', '-'], { input: instance });
    expect(i.stdout).toContain('buildkit.buildkit.seatgeek.io/buildkit-arm64-instance created');
  });

  test('are stored with schema defaults, and no image default that ignores rootless', async () => {
    const api = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
    const stored = (await api.getNamespacedCustomObject({
      group: 'buildkit.seatgeek.io',
      version: 'v1alpha1',
      namespace,
      plural: 'buildkittemplates',
      name: 'buildkit-arm64',
    })) as { spec: Record<string, unknown> };
    expect(stored.spec).toMatchObject({
      rootless: true,
      port: 1234,
      imagePullPolicy: 'IfNotPresent',
      hostUsers: true,
      lifecycle: { requireOwner: false, terminationGracePeriodSeconds: 900 },
      autoscaling: { enabled: false, idleTimeout: '5m' },
      resources: { maximum: { cpu: 8, memory: '16Gi' } },
    });
    // A schema default here would hand this rootless template the rootful image (seatgeek's bug).
    expect(stored.spec).not.toHaveProperty('image');
  });

  test('kubectl get shows the printer columns, by short name too', async () => {
    const bkt = await kubectl(['get', 'bkt', '-n', namespace]);
    expect(bkt.stdout.split('\n')[0]).toMatch(/^NAME\s+IMAGE\s+ROOTLESS\s+AUTOSCALING\s+AGE$/);
    // no webhook in this file, so no image default: the Image cell is blank
    expect(bkt.stdout).toMatch(/buildkit-arm64\s+true\s+false\s+\d+s/);
    const bk = await kubectl(['get', 'bk', '-n', namespace]);
    expect(bk.stdout.split('\n')[0]).toMatch(/^NAME\s+TEMPLATE\s+PHASE\s+ENDPOINT\s+AGE$/);
    expect(bk.stdout).toMatch(/buildkit-arm64-instance\s+buildkit-arm64\s+/);
  });
});

/** kubectl explain reads the published OpenAPI, which lags a new CRD by a few seconds. */
async function explain(path: string): Promise<string> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const r = await kubectl(['explain', path], { allowFail: true });
    if (r.code === 0) return r.stdout.replace(/\s+/g, ' '); // explain wraps long lines
    if (Date.now() > deadline) throw new Error(`kubectl explain ${path} kept failing: ${r.stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

test('kubectl explain teaches the API', async () => {
  const resources = { stdout: await explain('buildkittemplate.spec.resources') };
  expect(resources.stdout).toContain('Compute resources of the buildkitd container.');
  expect(resources.stdout).toMatch(/maximum <map\[string\]/);
  expect(resources.stdout).toContain('Upper bound per resource name');
  const nested = { stdout: await explain('buildkittemplate.spec.scheduling.tolerations.effect') };
  expect(nested.stdout).toContain('Effect indicates the taint effect to match.');
  const status = { stdout: await explain('buildkit.status.phase') };
  expect(status.stdout).toContain('Pending, Running, ScaledToZero, Waking or Failed');
});

test('kubectl explain shows spec.persistence and its fields', async () => {
  const persistence = await explain('buildkittemplate.spec.persistence');
  expect(persistence).toContain("give each Buildkit its own PersistentVolumeClaim for buildkitd's state");
  for (const field of ['accessModes', 'enabled', 'mountPath', 'size', 'storageClassName', 'whenDeleted']) {
    expect(persistence).toMatch(new RegExp(`${field} <`));
  }
  expect(await explain('buildkittemplate.spec.persistence.whenDeleted')).toContain(
    '`Retain` (the claim stays',
  );
  expect(await explain('buildkittemplate.spec.persistence.mountPath')).toContain(
    '/home/user/.local/share/buildkit',
  );
});

describe('the schema refuses bad objects', () => {
  let namespace: string;
  beforeAll(async () => {
    namespace = await cluster.createNamespace('crd-bad');
  });
  afterAll(async () => {
    await kubectl(['delete', 'namespace', namespace, '--wait=false'], { allowFail: true });
  });

  const template = (spec: string): string =>
    `apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: BuildkitTemplate\nmetadata:\n  name: bad\nspec:\n${spec}`;

  test('a wrong type is refused with the field path and nothing is stored', async () => {
    const r = await kubectl(['apply', '-n', namespace, '-f', '-'], {
      input: template('  port: "abc"\n'),
      allowFail: true,
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/spec\.port/);
    expect(r.stderr).toMatch(/integer/);
    const get = await kubectl(['get', 'bkt', 'bad', '-n', namespace], { allowFail: true });
    expect(get.stderr).toContain('NotFound');
  });

  test('an invalid enum value names the field and the allowed values', async () => {
    const r = await kubectl(['apply', '-n', namespace, '-f', '-'], {
      input: template('  imagePullPolicy: Sometimes\n'),
      allowFail: true,
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/spec\.imagePullPolicy/);
    expect(r.stderr).toContain('"Always", "IfNotPresent", "Never"');
  });

  test('a malformed idleTimeout is refused', async () => {
    const r = await kubectl(['apply', '-n', namespace, '-f', '-'], {
      input: template('  autoscaling:\n    idleTimeout: five minutes\n'),
      allowFail: true,
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/spec\.autoscaling\.idleTimeout/);
  });

  test('an unknown field is reported by kubectl apply', async () => {
    const r = await kubectl(['apply', '-n', namespace, '-f', '-'], {
      input: template('  rootles: true\n'),
      allowFail: true,
    });
    expect(r.code).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toMatch(/unknown field "?(spec\.)?rootles"?/);
  });

  test('a Buildkit without spec.template is refused', async () => {
    const r = await kubectl(['apply', '-n', namespace, '-f', '-'], {
      input: 'apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: Buildkit\nmetadata:\n  name: x\nspec: {}\n',
      allowFail: true,
    });
    expect(r.code).not.toBe(0);
    // kubectl's validation against the published schema catches it before the server
    expect(r.stderr).toContain(
      'missing required field "template" in io.seatgeek.buildkit.v1alpha1.Buildkit.spec',
    );
    const server = await kubectl(['apply', '--validate=false', '-n', namespace, '-f', '-'], {
      input: 'apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: Buildkit\nmetadata:\n  name: x\nspec: {}\n',
      allowFail: true,
    });
    expect(server.stderr).toMatch(/spec\.template: Required value/);
  });
});
