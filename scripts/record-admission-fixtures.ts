// Records the AdmissionReviews a real kube-apiserver sends, as unit-test fixtures
// (test/unit/webhook/fixtures/admission/*.json). Needs a running cluster: npm run cluster:up, then
//   node scripts/record-admission-fixtures.ts .local/cluster/kubeconfig
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';

import { createCa, createServingCert } from '../certs/index.ts';
import { createApp } from '../webhook/app.ts';
import {
  ROUTES,
  mutatingWebhookConfiguration,
  validatingWebhookConfiguration,
} from '../webhook/configurations.ts';
import { mutateTemplate, validateBuildkitHandler, validateTemplateHandler } from '../webhook/handlers.ts';
import {
  applyWebhookConfigurations,
  deleteWebhookConfigurations,
  liveTemplateReader,
} from '../webhook/kube.ts';
import { createWebhookMetrics } from '../webhook/metrics.ts';
import { createWebhookServer } from '../webhook/server.ts';

const kubeconfig = process.argv[2];
if (!kubeconfig) {
  console.error('usage: node scripts/record-admission-fixtures.ts <kubeconfig> [kubectl]');
  process.exit(2);
}
const kubectlBin = process.argv[3] ?? 'kubectl';
const outDir = new URL('../test/unit/webhook/fixtures/admission/', import.meta.url);
mkdirSync(outDir, { recursive: true });

const kc = new KubeConfig();
kc.loadFromFile(kubeconfig);
const ca = createCa({ commonName: 'fixture recorder' });
const tls = createServingCert({ ca, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
let label = '';
const app = createApp({
  routes: {
    [ROUTES.mutateTemplate]: mutateTemplate,
    [ROUTES.validateTemplate]: validateTemplateHandler,
    [ROUTES.validateBuildkit]: validateBuildkitHandler(liveTemplateReader(kc)),
  },
  logger: pino({ level: 'silent' }),
  metrics: createWebhookMetrics(),
  isReady: () => true,
  onReview: (route, body) => {
    const review = structuredClone(body) as {
      request: {
        object?: { metadata?: { managedFields?: unknown } };
        oldObject?: { metadata?: { managedFields?: unknown } };
      };
    };
    // managedFields are noise for the tests and change with every kubectl version
    delete review.request.object?.metadata?.managedFields;
    delete review.request.oldObject?.metadata?.managedFields;
    const name = `${label}.${route.split('/').slice(1).join('-')}.json`;
    writeFileSync(new URL(name, outDir), `${JSON.stringify(review, null, 2)}\n`);
    console.log(`recorded ${name}`);
  },
});
const server = createWebhookServer(app, tls);
const { port } = await server.listen('127.0.0.1', 0);
const name = 'bkf-fixture-recorder';
const options = {
  name,
  clientConfig: (path: string) => ({ url: `https://127.0.0.1:${port}${path}` }),
  caBundle: Buffer.from(ca.certPem).toString('base64'),
};
await applyWebhookConfigurations(
  kc,
  mutatingWebhookConfiguration(options),
  validatingWebhookConfiguration(options),
);

// Async on purpose: the webhook answering the API server runs in this very process.
const kubectl = (args: string[], input?: string) =>
  new Promise<void>((resolve) => {
    const child = execFile(kubectlBin, ['--kubeconfig', kubeconfig, ...args], (_e, _out, err) => {
      if (err) console.error(err.trim());
      resolve();
    });
    child.stdin?.end(input ?? '');
  });
const ns = 'fixtures';
const steps: [string, string[], string?][] = [
  ['namespace', ['create', 'namespace', ns]],
  [
    'seed-template-create',
    ['apply', '-n', ns, '-f', '-'],
    'apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: BuildkitTemplate\nmetadata:\n  name: buildkit-arm64\nspec:\n  rootless: true\n  port: 1234\n  resources:\n    maximum:\n      cpu: 8\n      memory: 16Gi\n',
  ],
  [
    'template-dry-run',
    ['apply', '-n', ns, '--dry-run=server', '-f', '-'],
    'apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: BuildkitTemplate\nmetadata:\n  name: dry\nspec:\n  port: 0\n',
  ],
  [
    'buildkit-create',
    ['apply', '-n', ns, '-f', '-'],
    'apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: Buildkit\nmetadata:\n  name: job-1\nspec:\n  template: buildkit-arm64\n',
  ],
  [
    'buildkit-spec-update',
    ['apply', '-n', ns, '-f', '-'],
    'apiVersion: buildkit.seatgeek.io/v1alpha1\nkind: Buildkit\nmetadata:\n  name: job-1\nspec:\n  template: buildkit-arm64\n  labels:\n    team: ci\n',
  ],
];
for (const [step, args, input] of steps) {
  label = step;
  await kubectl(args, input);
}
await kubectl(['delete', 'namespace', ns, '--wait=false']);
await deleteWebhookConfigurations(kc, name);
await server.close(100);
