// The admission webhook on the real API server: kubectl apply as a user runs it.
import { AdmissionregistrationV1Api } from '@kubernetes/client-node';

import type { RunningWebhook } from '../../webhook/main.ts';
import { testCluster } from '../../hack/testenv.ts';
import { installCrds } from '../support/crds.ts';
import { seatgeekExamples } from '../support/examples.ts';
import { startLocalWebhook } from '../support/local-webhook.ts';

const cluster = testCluster();
const kubectl = cluster.kubectl;
let configName: string;
let namespace: string;
let webhook: RunningWebhook;

const apply = (yaml: string, ...extra: string[]) =>
  kubectl(['apply', '-n', namespace, ...extra, '-f', '-'], { input: yaml, allowFail: true });
const exists = async (kind: string, name: string) =>
  (await kubectl(['get', kind, name, '-n', namespace], { allowFail: true })).code === 0;
const template = (name: string, spec: string) =>
  `apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: BuildkitTemplate\nmetadata:\n  name: ${name}\nspec:\n${spec}`;
const buildkit = (name: string, spec: string, metadata = '') =>
  `apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: Buildkit\nmetadata:\n  name: ${name}\n${metadata}spec:\n${spec}`;

beforeAll(async () => {
  await installCrds();
  namespace = await cluster.createNamespace('webhook');
  const local = await startLocalWebhook(cluster, 'buildkit-fleet.test/webhook');
  ({ webhook, configName } = local);
  await kubectl(['label', 'namespace', namespace, local.label]);
}, 120_000);

afterAll(async () => {
  await webhook?.stop();
  await cluster.deleteNamespace(namespace);
});

test('local mode registers both configurations with its URL and CA bundle', async () => {
  const api = cluster.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
  const mutating = await api.readMutatingWebhookConfiguration({ name: configName });
  const validating = await api.readValidatingWebhookConfiguration({ name: configName });
  const all = [...mutating.webhooks!, ...validating.webhooks!];
  expect(all.map((w) => w.name).sort()).toEqual([
    'default.buildkittemplates.buildkit.seatgeek.io',
    'sidecar.pods.buildkit-fleet.io',
    'validate.buildkits.buildkit.seatgeek.io',
    'validate.buildkittemplates.buildkit.seatgeek.io',
  ]);
  for (const w of all) {
    expect(w.clientConfig.url).toMatch(new RegExp(`^${webhook.url}/`));
    expect(Buffer.from(w.clientConfig.caBundle!, 'base64').toString()).toBe(webhook.caPem);
    expect(w).toMatchObject({
      sideEffects: 'None',
      admissionReviewVersions: ['v1'],
      failurePolicy: 'Fail',
      matchPolicy: 'Equivalent',
    });
  }
});

describe('invalid manifests are refused with a clear message and nothing is stored', () => {
  test.each([
    [
      'bad-toml',
      template('bad-toml', '  buildkitdToml: |\n    [log\n'),
      'spec.buildkitdToml: Invalid value: not valid TOML: line 1',
    ],
    [
      'bad-resources',
      template(
        'bad-resources',
        '  resources:\n    default:\n      limits:\n        memory: 32Gi\n    maximum:\n      memory: 16Gi\n',
      ),
      'spec.resources.default.limits.memory: Invalid value: "32Gi": must not exceed spec.resources.maximum.memory (16Gi)',
    ],
    [
      'bad-idle',
      template('bad-idle', '  autoscaling:\n    idleTimeout: 5s\n'),
      'spec.autoscaling.idleTimeout: Invalid value: "5s": must be between 30s and 24h',
    ],
    [
      'bad-labels',
      template('bad-labels', '  podLabels:\n    "a/b/c": x\n'),
      'spec.podLabels: Invalid value: "a/b/c": invalid key',
    ],
    ['a'.repeat(58), template('a'.repeat(58), '  port: 1234\n'), 'metadata.name: Too long'],
    [
      'bad-persistence',
      template('bad-persistence', '  persistence:\n    enabled: true\n    mountPath: /etc/buildkit/cache\n'),
      'spec.persistence.mountPath: Invalid value: "/etc/buildkit/cache": must not be, contain or lie inside /etc/buildkit (the buildkitd.toml mount)',
    ],
  ])('BuildkitTemplate %s', async (name, yaml, message) => {
    for (const dryRun of [[], ['--dry-run=server']]) {
      const r = await apply(yaml, ...dryRun);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(`The BuildkitTemplate "${name}" is invalid: `);
      expect(r.stderr).toContain(message);
    }
    expect(await exists('bkt', name)).toBe(false);
  });

  test('several problems are reported together', async () => {
    const r = await apply(
      template(
        'many',
        '  buildkitdToml: "= x"\n  podAnnotations:\n    "-bad": x\n  autoscaling:\n    idleTimeout: 99h\n',
      ),
    );
    // kubectl lists each cause of the one denial on its own line
    expect(r.stderr).toContain(
      'The BuildkitTemplate "many" is invalid: \n* spec.buildkitdToml: Invalid value: not valid TOML: line 1, column 1',
    );
    expect(r.stderr).toContain('\n* spec.podAnnotations: Invalid value: "-bad": invalid key');
    expect(r.stderr).toContain(
      '\n* spec.autoscaling.idleTimeout: Invalid value: "99h": must be between 30s and 24h',
    );
  });

  test('a Buildkit naming a missing template', async () => {
    const r = await apply(buildkit('orphan', '  template: nope\n'));
    expect(r.stderr).toContain('spec.template: Not found: "nope": no BuildkitTemplate "nope" in namespace');
    expect(await exists('bk', 'orphan')).toBe(false);
  });
});

describe('valid manifests', () => {
  test('the seed template (rootless, no image) is stored with the rootless image and defaults', async () => {
    const { template: seed, instance } = seatgeekExamples();
    const r = await apply(seed.replace(/^ {2}namespace: .*\n/m, ''));
    expect(r.code).toBe(0);
    // the webhook's warnings reach the user through kubectl
    expect(r.stderr).toContain(
      'Warning: spec.image "moby/buildkit:rootless" uses the floating tag :rootless',
    );
    const spec = JSON.parse(
      (await kubectl(['get', 'bkt', 'buildkit-arm64', '-n', namespace, '-o', 'json'])).stdout,
    ).spec;
    expect(spec).toMatchObject({
      image: 'moby/buildkit:rootless',
      port: 1234,
      imagePullPolicy: 'IfNotPresent',
      autoscaling: { enabled: false, idleTimeout: '5m' },
    });
    expect((await apply(instance.replace(/^ {2}namespace: .*\n/m, ''))).code).toBe(0);
  });

  test('--dry-run=server runs the webhooks, shows the defaults and stores nothing', async () => {
    const r = await apply(template('dry', '  rootless: false\n'), '--dry-run=server', '-o', 'json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).spec.image).toBe('moby/buildkit:latest');
    expect(r.stderr).toContain('uses the floating tag :latest');
    expect(await exists('bkt', 'dry')).toBe(false);
  });

  test('persistence: schema defaults from the API server, mountPath from the webhook by rootless', async () => {
    for (const [name, rootless, mountPath] of [
      ['cache-rootful', false, '/var/lib/buildkit'],
      ['cache-rootless', true, '/home/user/.local/share/buildkit'],
    ] as const) {
      const r = await apply(
        template(
          name,
          `  image: moby/buildkit:v0.13.1\n  rootless: ${rootless}\n  persistence:\n    enabled: true\n`,
        ),
        '--dry-run=server',
        '-o',
        'json',
      );
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout).spec.persistence).toEqual({
        enabled: true,
        size: '20Gi',
        accessModes: ['ReadWriteOnce'],
        whenDeleted: 'Delete',
        mountPath,
      });
    }
  });

  test('re-applying the same manifest changes nothing', async () => {
    const yaml = template(
      'steady',
      '  image: moby/buildkit:v0.13.1\n  resources:\n    maximum:\n      memory: 8Gi\n',
    );
    expect((await apply(yaml)).code).toBe(0);
    const before = JSON.parse(
      (await kubectl(['get', 'bkt', 'steady', '-n', namespace, '-o', 'json'])).stdout,
    );
    const again = await apply(yaml);
    expect(again.stdout).toContain('unchanged');
    const after = JSON.parse((await kubectl(['get', 'bkt', 'steady', '-n', namespace, '-o', 'json'])).stdout);
    expect(after.metadata.resourceVersion).toBe(before.metadata.resourceVersion);
  });

  test('requireOwner refuses an instance without owners', async () => {
    await apply(
      template(
        'owned',
        '  image: moby/buildkit:v0.13.1\n  lifecycle:\n    requireOwner: true\n  resources:\n    maximum:\n      memory: 8Gi\n',
      ),
    );
    const r = await apply(buildkit('lonely', '  template: owned\n'));
    expect(r.stderr).toContain(
      'metadata.ownerReferences: Required value: BuildkitTemplate "owned" requires owner references',
    );
  });

  test('resources above the maximum are accepted with a warning that they are clamped', async () => {
    const r = await apply(
      buildkit('big', '  template: steady\n  resources:\n    limits:\n      memory: 32Gi\n'),
    );
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(
      'Warning: spec.resources.limits.memory 32Gi exceeds BuildkitTemplate "steady" maximum 8Gi; the pod gets 8Gi',
    );
  });
});

describe('Buildkit updates', () => {
  beforeAll(async () => {
    expect((await apply(buildkit('fixed', '  template: steady\n'))).code).toBe(0);
  });

  test('a spec change is refused and not stored', async () => {
    const r = await apply(buildkit('fixed', '  template: steady\n  labels:\n    team: ci\n'));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(
      'spec: Forbidden: spec changes are not allowed for existing Buildkit objects (changed: spec.labels)',
    );
    const stored = JSON.parse((await kubectl(['get', 'bk', 'fixed', '-n', namespace, '-o', 'json'])).stdout);
    expect(stored.spec).toEqual({ template: 'steady' });
  });

  test('a metadata change is allowed', async () => {
    const r = await kubectl(['label', 'bk', 'fixed', '-n', namespace, 'team=ci']);
    expect(r.code).toBe(0);
  });
});
