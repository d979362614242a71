// Where the commands' API server connection comes from, and the errors a user sees when it cannot.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { UsageError } from '../../../flags/errors.ts';
import { loadKubeConfig } from '../../../kube/load-kube-config.ts';

const dir = mkdtempSync(join(tmpdir(), 'bkf-kubeconfig-'));
const file = (name: string, text: string) => {
  writeFileSync(join(dir, name), text);
  return join(dir, name);
};

test('outside a pod and without --kubeconfig: a usage error that says what to set', () => {
  expect(() => loadKubeConfig(undefined, {})).toThrow(UsageError);
  expect(() => loadKubeConfig(undefined, {})).toThrow('not running in a cluster');
  expect(() => loadKubeConfig(undefined, { KUBERNETES_SERVICE_HOST: '10.0.0.1' })).toThrow(
    'set --kubeconfig or KUBECONFIG',
  );
});

test('a kubeconfig that is missing, or has no current cluster, is a usage error naming it', () => {
  expect(() => loadKubeConfig(join(dir, 'absent'))).toThrow(`cannot load kubeconfig ${join(dir, 'absent')}`);
  const empty = file('empty', 'apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n');
  expect(() => loadKubeConfig(empty)).toThrow(`kubeconfig ${empty} has no current cluster`);
});

test('a kubeconfig file with a current context is loaded', () => {
  const good = file(
    'good',
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters: [{ name: c, cluster: { server: "https://127.0.0.1:6443" } }]',
      'users: [{ name: u, user: { token: t } }]',
      'contexts: [{ name: x, context: { cluster: c, user: u } }]',
      'current-context: x',
      '',
    ].join('\n'),
  );
  expect(loadKubeConfig(good).getCurrentCluster()?.server).toBe('https://127.0.0.1:6443');
});
