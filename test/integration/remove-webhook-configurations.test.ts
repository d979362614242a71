// `buildkit-fleet remove-webhook-configurations` (the chart's pre-delete hook) on the real API
// server: both configurations go, a second run still succeeds, bad input fails clearly.
import { AdmissionregistrationV1Api } from '@kubernetes/client-node';

import { runCli } from '../../cli/commands.ts';
import { testCluster } from '../../hack/testenv.ts';
import {
  mutatingWebhookConfiguration,
  validatingWebhookConfiguration,
} from '../../webhook/configurations.ts';
import { applyWebhookConfigurations } from '../../webhook/kube.ts';

const cluster = testCluster();
const api = cluster.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
const NAME = `bkf-uninstall-${process.pid}`;

async function cli(args: string[]) {
  let out = '';
  let err = '';
  const code = await runCli(args, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

const exists = async () => {
  const names = async (list: Promise<{ items: { metadata?: { name?: string } }[] }>) =>
    (await list).items.map((i) => i.metadata?.name);
  return {
    mutating: (await names(api.listMutatingWebhookConfiguration())).includes(NAME),
    validating: (await names(api.listValidatingWebhookConfiguration())).includes(NAME),
  };
};

test('removes both configurations, and succeeds again when they are gone', async () => {
  // nothing matches: the configurations point nowhere and select no object
  const options = {
    name: NAME,
    clientConfig: (path: string) => ({ url: `https://127.0.0.1:9${path}` }),
    namespaceLabels: { 'bkf-uninstall-test': 'never' },
  };
  await applyWebhookConfigurations(
    cluster.kubeConfig,
    mutatingWebhookConfiguration(options),
    validatingWebhookConfiguration(options),
  );
  expect(await exists()).toEqual({ mutating: true, validating: true });

  const first = await cli([
    'remove-webhook-configurations',
    `--name=${NAME}`,
    '--kubeconfig',
    cluster.kubeconfigPath,
  ]);
  expect(first).toMatchObject({ code: 0, err: '' });
  expect(first.out).toContain(`removed the webhook configurations "${NAME}"`);
  expect(await exists()).toEqual({ mutating: false, validating: false });

  const again = await cli([
    'remove-webhook-configurations',
    `--name=${NAME}`,
    '--kubeconfig',
    cluster.kubeconfigPath,
  ]);
  expect(again.code).toBe(0);
});

test('bad input: an unknown flag or an empty name is a usage error (exit 2)', async () => {
  expect((await cli(['remove-webhook-configurations', '--nmae=x'])).code).toBe(2);
  const empty = await cli([
    'remove-webhook-configurations',
    '--name=',
    '--kubeconfig',
    cluster.kubeconfigPath,
  ]);
  expect(empty.code).toBe(2);
  expect(empty.err).toContain('--name must not be empty');
  const blank = await cli([
    'remove-webhook-configurations',
    '--name= ',
    '--kubeconfig',
    cluster.kubeconfigPath,
  ]);
  expect(blank.code).toBe(2);
  expect(blank.err).toContain('--name must name the webhook configurations');
});

test('an API server it cannot reach fails with exit 1 and the reason', async () => {
  const broken = `${cluster.dir}/unreachable-kubeconfig`;
  // a port nobody listens on (fetch refuses well-known ones such as 9 outright)
  const { createServer } = await import('node:net');
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const closedPort = (probe.address() as { port: number }).port;
  await new Promise((resolve) => probe.close(resolve));
  const { writeFileSync } = await import('node:fs');
  writeFileSync(
    broken,
    [
      'apiVersion: v1',
      'kind: Config',
      `clusters: [{ name: c, cluster: { server: "https://127.0.0.1:${closedPort}", insecure-skip-tls-verify: true } }]`,
      'users: [{ name: u, user: { token: x } }]',
      'contexts: [{ name: x, context: { cluster: c, user: u } }]',
      'current-context: x',
    ].join('\n'),
  );
  const result = await cli(['remove-webhook-configurations', '--name=x', '--kubeconfig', broken]);
  expect(result.code).toBe(1);
  expect(result.err).toMatch(/could not remove the webhook configurations "x": .*ECONNREFUSED/);
});
