// The controller in this process, watching one namespace and electing its leader there under
// `lease`, so test files sharing the cluster neither see each other's objects nor share a Lease.
import { pino } from 'pino';
import type { Logger } from 'pino';

import { parseOptions } from '../../flags/options.ts';
import type { RunningController } from '../../controller/main.ts';
import { CONTROLLER_OPTIONS, startController } from '../../controller/main.ts';
import type { TestCluster } from '../../hack/testenv.ts';

export const quietLogger = (): Logger => pino({ level: process.env['BKF_TEST_LOG'] ?? 'silent' });

export function startLocalController(
  cluster: TestCluster,
  namespace: string,
  lease: string,
  logger: Logger = quietLogger(),
  extraArgs: string[] = [],
): Promise<RunningController> {
  const options = parseOptions(
    [
      '--kubeconfig',
      cluster.kubeconfigPath,
      '--watch-namespace',
      namespace,
      '--leader-election-namespace',
      namespace,
      '--leader-election-name',
      lease,
      '--metrics-listen',
      '127.0.0.1:0',
      ...extraArgs,
    ],
    CONTROLLER_OPTIONS,
  );
  return startController(options, logger);
}
