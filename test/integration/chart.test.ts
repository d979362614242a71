// The Helm chart as `helm lint`, `helm template` and the real API server see it: every rendering
// a user can pick is accepted by `kubectl apply --dry-run=server`, the webhook configurations are
// exactly what the webhook's code builds, and a wrong value fails with its name.
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

import { testCluster } from '../../hack/testenv.ts';
import {
  mutatingWebhookConfiguration,
  validatingWebhookConfiguration,
} from '../../webhook/configurations.ts';
import { installCrds } from '../support/crds.ts';
import { runHelm } from '../support/helm.ts';

const CHART = fileURLToPath(new URL('../../charts/buildkit-fleet', import.meta.url));
const CERT_MANAGER_CRDS = fileURLToPath(new URL('../fixtures/cert-manager-crds', import.meta.url));
const cluster = testCluster();

const helm = (args: string[]) => runHelm(cluster.helmPath, cluster.kubeconfigPath, args);

type Doc = { kind: string; apiVersion: string; metadata: { name: string; namespace?: string } } & Record<
  string,
  unknown
>;
const docs = (text: string): Doc[] =>
  parseAllDocuments(text)
    .map((d) => d.toJS() as Doc | null)
    .filter((d): d is Doc => d !== null);

let namespace = '';
beforeAll(async () => {
  await installCrds();
  namespace = await cluster.createNamespace('chart');
}, 120_000);
afterAll(async () => {
  await cluster.deleteNamespace(namespace);
  await cluster.kubectl(['delete', '-f', CERT_MANAGER_CRDS, '--ignore-not-found'], { allowFail: true });
}, 120_000);

test('helm lint --strict is clean', async () => {
  const result = await helm(['lint', '--strict', CHART]);
  expect(result.stderr + result.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
  expect(result.code).toBe(0);
});

// --validate renders with the cluster's API versions (policy/v1beta1 on 1.20) and checks the
// objects against its schemas; the CRDs are already in the cluster (installCrds), so each
// rendering leaves them out and the CRD templates are checked on their own below.
const CASES: [string, string[]][] = [
  ['the default values', []],
  ['certManager.enabled=true', ['--set', 'certManager.enabled=true']],
  ['stack.enabled=true', ['--set', 'stack.enabled=true', '--set', 'networkPolicy.enabled=true']],
];

describe.each(CASES)('helm template with %s', (name, values) => {
  test('renders, and the API server accepts every object (kubectl apply --dry-run=server)', async () => {
    if (name.startsWith('certManager')) {
      await cluster.kubectl(['apply', '--validate=false', '-f', CERT_MANAGER_CRDS]);
      await cluster.kubectl([
        'wait',
        '--for=condition=Established',
        '--timeout=60s',
        '-f',
        CERT_MANAGER_CRDS,
      ]);
    }
    const release = `r${CASES.findIndex(([n]) => n === name)}`;
    const rendered = await helm([
      'template',
      release,
      CHART,
      '-n',
      namespace,
      '--validate',
      '--set',
      'crds.install=false',
      '--set',
      `fullnameOverride=chart-${release}`,
      ...values,
    ]);
    expect(rendered.stderr).toBe('');
    expect(rendered.code).toBe(0);
    const objects = docs(rendered.stdout);
    const applied = await cluster.kubectl(['apply', '--dry-run=server', '-n', namespace, '-f', '-'], {
      input: rendered.stdout,
    });
    for (const o of objects) {
      expect(applied.stdout).toContain(`${o.metadata.name} created (server dry run)`);
    }
    const kinds = objects.map((o) => o.kind);
    expect(kinds).toEqual(
      expect.arrayContaining([
        'Deployment',
        'MutatingWebhookConfiguration',
        'ValidatingWebhookConfiguration',
        'PodDisruptionBudget',
        'ClusterRole',
      ]),
    );
    if (name.startsWith('certManager')) {
      expect(kinds.filter((k) => k === 'Certificate')).toHaveLength(2);
      const mutating = objects.find((o) => o.kind === 'MutatingWebhookConfiguration')!;
      expect((mutating.metadata as { annotations?: Record<string, string> }).annotations).toEqual({
        'cert-manager.io/inject-ca-from': `${namespace}/chart-${release}-webhook`,
      });
    }
    if (name.startsWith('stack')) {
      const sts = objects.find((o) => o.kind === 'StatefulSet')!;
      expect(JSON.stringify(sts)).toContain('"buildkit-fleet.io/autoscale":"enabled"');
      expect(kinds).toContain('NetworkPolicy');
    }
  }, 120_000);
});

test('the CRD templates are accepted by the API server as they are', async () => {
  const rendered = await helm([
    'template',
    'crds',
    CHART,
    '--show-only',
    'templates/crds/buildkits.yaml',
    '--show-only',
    'templates/crds/buildkittemplates.yaml',
  ]);
  expect(rendered.code).toBe(0);
  const crds = docs(rendered.stdout);
  expect(crds.map((c) => c.metadata.name).sort()).toEqual([
    'buildkits.buildkit.seatgeek.io',
    'buildkittemplates.buildkit.seatgeek.io',
  ]);
  for (const crd of crds) {
    expect((crd.metadata as { annotations?: Record<string, string> }).annotations).toEqual({
      'helm.sh/resource-policy': 'keep',
    });
  }
  const applied = await cluster.kubectl(['apply', '--dry-run=server', '-f', '-'], { input: rendered.stdout });
  expect(applied.stdout).toMatch(
    /buildkits\.buildkit\.seatgeek\.io (configured|unchanged) \(server dry run\)/,
  );
  const off = await helm(['template', 'crds', CHART, '--set', 'crds.install=false']);
  expect(docs(off.stdout).filter((d) => d.kind === 'CustomResourceDefinition')).toEqual([]);
  const notKept = await helm([
    'template',
    'crds',
    CHART,
    '--set',
    'crds.keep=false',
    '--show-only',
    'templates/crds/buildkits.yaml',
  ]);
  expect(notKept.stdout).not.toContain('helm.sh/resource-policy');
}, 60_000);

// Self-managed with no certificate Secret yet (as `helm template` and a first install see it): the
// entries start at Ignore and the annotation names the configured policy, which the webhook sets
// when it writes caBundle; with cert-manager they carry the configured policy from the start.
test.each([
  ['self-managed, before its Secret exists', [], 'Ignore', { 'buildkit-fleet.io/failure-policy': 'Fail' }],
  [
    'certManager.enabled=true',
    ['--set', 'certManager.enabled=true'],
    'Fail',
    { 'cert-manager.io/inject-ca-from': 'platform/fleet-buildkit-fleet-webhook' },
  ],
] as const)(
  'the webhook configurations are the ones webhook/configurations.ts builds (%s)',
  async (_name, values, policy, annotations) => {
    const rendered = await helm(['template', 'fleet', CHART, '-n', 'platform', ...values]);
    const objects = docs(rendered.stdout);
    const options = {
      name: 'fleet-buildkit-fleet',
      clientConfig: (path: string) => ({
        service: { name: 'fleet-buildkit-fleet-webhook', namespace: 'platform', port: 443, path },
      }),
      platformNamespace: 'platform',
      failurePolicy: policy,
    };
    const strip = (o: Doc) => ({ ...o, metadata: { name: o.metadata.name } });
    for (const [kind, build] of [
      ['MutatingWebhookConfiguration', mutatingWebhookConfiguration],
      ['ValidatingWebhookConfiguration', validatingWebhookConfiguration],
    ] as const) {
      const object = objects.find((o) => o.kind === kind)!;
      expect(strip(object)).toEqual(strip(build(options) as Doc));
      expect((object.metadata as { annotations?: Record<string, string> }).annotations).toEqual(annotations);
    }
  },
  60_000,
);

// A controller pod that stops first leaves the routes, then drains: the kubelet must not kill it
// before its activator's drain timeout has run.
test.each([
  ['the default', [], 600],
  ['drainTimeout=900', ['--set', 'controller.activator.drainTimeout=900'], 900],
] as const)(
  'the controller pod outlives its activator drain (%s)',
  async (_name, values, drain) => {
    const rendered = await helm([
      'template',
      'fleet',
      CHART,
      '--show-only',
      'templates/controller/deployment.yaml',
      ...values,
    ]);
    expect(rendered.code).toBe(0);
    const [deployment] = docs(rendered.stdout) as unknown as {
      spec: {
        template: { spec: { terminationGracePeriodSeconds: number; containers: { args: string[] }[] } };
      };
    }[];
    const pod = deployment!.spec.template.spec;
    expect(pod.containers[0]!.args).toContain(`--activator-drain-timeout=${drain}`);
    expect(pod.terminationGracePeriodSeconds).toBe(drain + 30);
  },
  60_000,
);

describe('values.schema.json refuses a wrong value, naming it', () => {
  test.each([
    ['webhook.failurePolicy=Sometimes', 'webhook.failurePolicy'],
    ['controller.replicas=two', 'controller.replicas'],
    ['webhook.replica=2', 'replica'],
    ['autoscaler.idleTimeout=soon', 'autoscaler.idleTimeout'],
    ['buildkitd.persistence.size=lots', 'buildkitd.persistence.size'],
    ['certs.caValidity=10years', 'certs.caValidity'],
    ['buildkitd.service.port=70000', 'buildkitd.service.port'],
    ['controller.activator.drainTimeout=3000000', 'controller.activator.drainTimeout'],
  ])('--set %s', async (setting, named) => {
    const result = await helm(['template', 'bad', CHART, '--set', setting]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(named);
    expect(result.stdout).toBe('');
  });
});
