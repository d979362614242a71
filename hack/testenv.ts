// What integration test files use to reach the shared test cluster.
//
// test/jest/global-setup.ts starts one cluster (1 hollow node) for the whole integration
// project and exports it through environment variables, which jest's workers inherit:
//   KUBECONFIG, BKF_KUBECTL, BKF_HELM, BKF_CLUSTER_DIR, BKF_CLUSTER_SERVER.
// testCluster() reads them back. It is synchronous so test files can call it at the top level.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { kubectlError, runKubectl, type KubectlOptions, type RunResult } from './cluster.ts';
import { isRunning } from './proc.ts';
import { readState } from './state.ts';

export const ENV = {
  kubeconfig: 'KUBECONFIG',
  kubectl: 'BKF_KUBECTL',
  helm: 'BKF_HELM',
  dir: 'BKF_CLUSTER_DIR',
  server: 'BKF_CLUSTER_SERVER',
} as const;

export const TEST_NAMESPACE_LABEL = 'buildkit-fleet.test/namespace';

export interface TestCluster {
  kubeconfigPath: string;
  server: string;
  kubectlPath: string;
  helmPath: string;
  // Cluster dir: <process>.log files live here.
  dir: string;
  kubeConfig: KubeConfig;
  // Runs kubectl against the cluster. Throws on a non-zero exit unless allowFail; says so
  // clearly if the cluster itself has died.
  kubectl: (args: string[], opts?: KubectlOptions) => Promise<RunResult>;
  // Creates `<prefix>-<random>` and waits until pods can be created in it (its default service
  // account has its token). The test deletes it when done (deleteNamespace).
  createNamespace: (prefix: string) => Promise<string>;
  // Starts deleting a namespace; does not wait for it to be gone.
  deleteNamespace: (name: string) => Promise<void>;
  // Throws if a process of the shared cluster has died.
  assertRunning: () => void;
}

let cached: TestCluster | undefined;

function need(name: string): string {
  const v = process.env[name];
  if (!v) {
    throw new Error(
      `${name} is not set: the shared test cluster is started by test/jest/global-setup.ts, ` +
        'so run integration tests through jest (npm run test:jest -- --selectProjects integration)',
    );
  }
  return v;
}

// A valid namespace name (RFC 1123 label) from a test's prefix.
export function namespaceName(prefix: string, suffix = randomBytes(3).toString('hex')): string {
  const clean = prefix
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63 - suffix.length - 1)
    .replace(/-+$/, '');
  return `${clean || 'test'}-${suffix}`;
}

export function testCluster(): TestCluster {
  if (cached) return cached;
  const kubeconfigPath = need(ENV.kubeconfig);
  const kubectlPath = need(ENV.kubectl);
  const dir = need(ENV.dir);
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(kubeconfigPath);

  // The processes belong to jest's main process; we only see them through state.json.
  const assertRunning = (): void => {
    const state = readState(dir);
    if (!state) throw new Error(`the shared test cluster in ${dir} is gone (no state.json)`);
    for (const p of state.processes) {
      if (!isRunning(p)) {
        throw new Error(
          `the shared test cluster is down: ${p.name} (pid ${p.pid}) is not running; see ${path.join(dir, `${p.name}.log`)}`,
        );
      }
    }
  };

  const kubectl = async (args: string[], opts: KubectlOptions = {}): Promise<RunResult> => {
    const r = await runKubectl(kubectlPath, kubeconfigPath, args, opts);
    if (r.code !== 0) {
      assertRunning();
      if (!opts.allowFail) throw kubectlError(args, r);
    }
    return r;
  };

  const core = kubeConfig.makeApiClient(CoreV1Api);
  const createNamespace = async (prefix: string): Promise<string> => {
    const name = namespaceName(prefix);
    await core.createNamespace({
      body: { metadata: { name, labels: { [TEST_NAMESPACE_LABEL]: 'true' } } },
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const sa = await core
        .readNamespacedServiceAccount({ name: 'default', namespace: name })
        .catch(() => undefined);
      if ((sa?.secrets?.length ?? 0) > 0) return name;
      if (Date.now() > deadline) {
        assertRunning();
        throw new Error(`namespace ${name}: the default service account got no token within 30 s`);
      }
      await sleep(100);
    }
  };

  const deleteNamespace = async (name: string): Promise<void> => {
    await core.deleteNamespace({ name }).catch((e: unknown) => {
      if ((e as { code?: number }).code !== 404) throw e;
    });
  };

  cached = {
    kubeconfigPath,
    server: process.env[ENV.server] ?? kubeConfig.getCurrentCluster()?.server ?? '',
    kubectlPath,
    helmPath: need(ENV.helm),
    dir,
    kubeConfig,
    kubectl,
    createNamespace,
    deleteNamespace,
    assertRunning,
  };
  return cached;
}
