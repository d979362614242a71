// `buildkit-fleet remove-webhook-configurations`: what the chart's pre-delete hook runs. The pod
// webhook fails closed, so its configurations must go before the webhook pods do; otherwise every
// labelled pod in the cluster is refused until someone deletes them by hand. A configuration that
// is already gone counts as removed, so the hook can be retried.
import { StartupError, UsageError } from '../flags/errors.ts';
import type { ParsedOptions } from '../flags/options.ts';
import { apiErrorText, errorMessage } from '../kube/errors.ts';
import { loadKubeConfig } from '../kube/load-kube-config.ts';
import { deleteWebhookConfigurations } from './kube.ts';
import type { REMOVE_CONFIGURATIONS_OPTIONS } from './uninstall-options.ts';

export async function runRemoveConfigurations(
  options: ParsedOptions<typeof REMOVE_CONFIGURATIONS_OPTIONS>,
  out: (line: string) => void,
): Promise<number> {
  if (!options.name.trim()) throw new UsageError('--name must name the webhook configurations');
  const kc = loadKubeConfig(options.kubeconfig);
  try {
    await deleteWebhookConfigurations(kc, options.name);
  } catch (error) {
    throw new StartupError(
      `could not remove the webhook configurations "${options.name}": ${(error as { body?: unknown }).body ? apiErrorText(error) : errorMessage(error)}`,
    );
  }
  out(`removed the webhook configurations "${options.name}" (mutating and validating), or they were gone\n`);
  return 0;
}
