// Installs our CRDs into the shared test cluster (idempotent) and waits until they serve.
import { fileURLToPath } from 'node:url';

import { testCluster } from '../../cluster/testenv.ts';

export const CRD_DIR = fileURLToPath(new URL('../../../api/crds/', import.meta.url));
export const CRD_NAMES = ['buildkittemplates.buildkit.seatgeek.io', 'buildkits.buildkit.seatgeek.io'];

export async function installCrds(): Promise<void> {
  const { kubectl } = testCluster();
  await kubectl(['apply', '-f', CRD_DIR]);
  await kubectl([
    'wait',
    '--for=condition=Established',
    '--timeout=60s',
    ...CRD_NAMES.map((n) => `crd/${n}`),
  ]);
}
