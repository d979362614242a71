// Stops the shared integration cluster started by global-setup.ts.
import type { SharedClusterGlobal } from './global-setup.ts';

export default async function globalTeardown(): Promise<void> {
  const g = globalThis as SharedClusterGlobal;
  const cluster = g.__bkfCluster;
  g.__bkfCluster = undefined;
  await cluster?.stop();
}
