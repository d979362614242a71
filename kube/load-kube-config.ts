// The API server connection every long-running command starts with.
import type { KubeConfig } from '@kubernetes/client-node';

import { UsageError } from '../flags/errors.ts';
import { PooledKubeConfig } from './kube-config.ts';

/**
 * The kubeconfig at `path`, or the in-cluster config; a clear UsageError when neither works.
 * client-node's in-cluster loader does not fail outside a pod: it builds a server address from
 * KUBERNETES_SERVICE_HOST/PORT even when they are unset ("https://undefined:undefined"), which
 * would surface only later as an unreachable API server. So their absence is checked here.
 */
export function loadKubeConfig(path: string | undefined, env: NodeJS.ProcessEnv = process.env): KubeConfig {
  if (!path && (!env['KUBERNETES_SERVICE_HOST'] || !env['KUBERNETES_SERVICE_PORT'])) {
    throw new UsageError(
      'not running in a cluster (KUBERNETES_SERVICE_HOST/PORT unset): set --kubeconfig or KUBECONFIG',
    );
  }
  const kc = new PooledKubeConfig();
  try {
    if (path) kc.loadFromFile(path);
    else kc.loadFromCluster();
  } catch (error) {
    throw new UsageError(`cannot load kubeconfig ${path ?? '(in-cluster)'}: ${(error as Error).message}`);
  }
  // in-cluster, the environment checked above always yields a cluster; only a file can lack one
  if (!kc.getCurrentCluster()) throw new UsageError(`kubeconfig ${path} has no current cluster`);
  return kc;
}
