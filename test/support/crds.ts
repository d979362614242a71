// Installs our CRDs into the shared test cluster (idempotent) and waits until they serve.
import { installCrds as install } from '../../hack/crds.ts';
import { testCluster } from '../../hack/testenv.ts';

export { CRD_DIR, CRD_NAMES } from '../../hack/crds.ts';

export async function installCrds(): Promise<void> {
  const { kubectl } = testCluster();
  await install(async (args) => (await kubectl(args)).stdout);
}
