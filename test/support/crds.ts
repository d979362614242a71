// Installs our CRDs into the shared test cluster (idempotent) and waits until they serve.
import { fileURLToPath } from 'node:url';

import { testCluster } from '../../hack/testenv.ts';

export const CRD_DIR = fileURLToPath(new URL('../../api/crds/', import.meta.url));
export const CRD_NAMES = ['buildkittemplates.buildkit.seatgeek.io', 'buildkits.buildkit.seatgeek.io'];

export async function installCrds(): Promise<void> {
  const { kubectl } = testCluster();
  await kubectl(['apply', '-f', CRD_DIR]);
  for (let attempt = 1; ; attempt++) {
    const r = await kubectl(
      ['wait', '--for=condition=Established', '--timeout=60s', ...CRD_NAMES.map((n) => `crd/${n}`)],
      { allowFail: true },
    );
    if (r.code === 0) return;
    // kubectl wait right after the create can run before the API server has set any condition
    // (".status.conditions accessor error: <nil>"); the wait itself is safe to repeat.
    if (attempt >= 5 || !r.stderr.includes('status.conditions accessor error')) {
      throw new Error(`CRDs did not become Established: ${r.stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}
