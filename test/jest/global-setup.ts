// Starts the one local cluster the whole integration project shares (1 hollow node, so pods
// get scheduled and run), and hands it to test files through environment variables, which
// jest's workers inherit (see hack/testenv.ts). global-teardown.ts stops it.
import type * as ClusterModule from '../../hack/cluster.ts';
import type * as TestenvModule from '../../hack/testenv.ts';

export interface SharedClusterGlobal {
  __bkfCluster?: ClusterModule.LocalCluster;
}

// Jest compiles this file with ts-jest, whose tsconfig rewrites relative `.ts` import
// specifiers to `.js`, but then lets Node resolve its imports without the moduleNameMapper, so a
// static `import '../../hack/cluster.ts'` fails with "Cannot find module .../cluster.js".
// Absolute file URLs are not rewritten, and Node 24 runs the harness's .ts modules as they are
// (type stripping), exactly as `npm run cluster:up` does.
async function load<T>(relative: string): Promise<T> {
  return (await import(new URL(relative, import.meta.url).href)) as T;
}

export default async function globalSetup(): Promise<void> {
  const { startCluster } = await load<typeof ClusterModule>('../../hack/cluster.ts');
  const { ENV } = await load<typeof TestenvModule>('../../hack/testenv.ts');
  process.stderr.write('\n');
  const cluster = await startCluster({ nodes: 1 });
  // globalThis is shared with globalTeardown (same process), not with the test workers.
  (globalThis as SharedClusterGlobal).__bkfCluster = cluster;
  process.env[ENV.kubeconfig] = cluster.kubeconfigPath;
  process.env[ENV.kubectl] = cluster.kubectlPath;
  process.env[ENV.helm] = cluster.helmPath;
  process.env[ENV.dir] = cluster.dir;
  process.env[ENV.server] = cluster.server;
}
