// The admission webhook in --local mode, in this process, registered with the test cluster and
// limited to namespaces carrying `label` (so test files sharing the cluster do not interfere).
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';

import { parseOptions } from '../../flags/options.ts';
import type { RunningWebhook } from '../../webhook/main.ts';
import { WEBHOOK_OPTIONS, startWebhook } from '../../webhook/main.ts';
import type { TestCluster } from '../../hack/testenv.ts';

export interface LocalWebhook {
  webhook: RunningWebhook;
  /** name of its Mutating/ValidatingWebhookConfiguration */
  configName: string;
  /** `key=value`: namespaces with this label are reviewed */
  label: string;
}

export async function startLocalWebhook(
  cluster: TestCluster,
  labelKey: string,
  extraArgs: string[] = [],
): Promise<LocalWebhook> {
  const configName = `bkf-test-${randomBytes(3).toString('hex')}`;
  const label = `${labelKey}=${configName}`;
  const options = parseOptions(
    [
      '--local',
      '--kubeconfig',
      cluster.kubeconfigPath,
      '--config-name',
      configName,
      '--namespace-label',
      label,
      '--shutdown-grace',
      '1',
      ...extraArgs,
    ],
    WEBHOOK_OPTIONS,
  );
  const webhook = await startWebhook(
    options,
    pino({ level: process.env['BKF_TEST_LOG'] ?? 'silent' }),
    false,
  );
  return { webhook, configName, label };
}
