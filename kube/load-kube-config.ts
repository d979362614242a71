// Options and start-up steps every long-running command shares.
import type { KubeConfig } from '@kubernetes/client-node';

import { UsageError } from '../flags/errors.ts';
import { PooledKubeConfig } from './kube-config.ts';

export { COMMON_OPTIONS } from '../flags/common-options.ts';
/** The kubeconfig at `path`, or the in-cluster config; a clear UsageError when neither works. */
export function loadKubeConfig(path: string | undefined): KubeConfig {
  const kc = new PooledKubeConfig();
  try {
    if (path) kc.loadFromFile(path);
    else kc.loadFromCluster();
  } catch (error) {
    throw new UsageError(`cannot load kubeconfig ${path ?? '(in-cluster)'}: ${(error as Error).message}`);
  }
  if (!kc.getCurrentCluster()) {
    throw new UsageError(
      path
        ? `kubeconfig ${path} has no current cluster`
        : 'not running in a cluster: set --kubeconfig or KUBECONFIG',
    );
  }
  return kc;
}
