// `buildkit-fleet certs`: the self-managed certificate lifecycle on its own, without the webhook
// server: make or repair the Secret, put the CA into the webhook configurations' caBundle, and keep
// both current (rotation). `--once` does one pass and exits (a Helm hook Job, or a CI step).
import { Registry } from 'prom-client';

import { loadKubeConfig } from '../kube/load-kube-config.ts';
import { createLogger } from '../telemetry/logger.ts';
import { shutdownSignal } from '../telemetry/shutdown.ts';
import type { ParsedOptions } from '../flags/options.ts';
import { certConfigFromOptions, startCertSource } from './options.ts';

// the lifecycle without the server: no mode choice, no file reloading
export { CERTS_COMMAND_OPTIONS } from './cert-options.ts';
import type { CERTS_COMMAND_OPTIONS } from './cert-options.ts';

export type CertsCommandOptions = ParsedOptions<typeof CERTS_COMMAND_OPTIONS>;

export async function runCertsCommand(options: CertsCommandOptions): Promise<number> {
  const logger = createLogger({ level: options['log-level'], component: 'certs' });
  const kc = loadKubeConfig(options.kubeconfig);
  // cert-reload-interval only matters in files mode; self-managed ignores it
  const config = certConfigFromOptions({
    ...options,
    'cert-mode': 'self-managed',
    'cert-reload-interval': '60s',
  });
  const source = await startCertSource(config, { logger, registry: new Registry(), kubeConfig: kc });
  if (options.once) {
    await source.stop();
    logger.info('certificate Secret and caBundle are in place');
    return 0;
  }
  logger.info({ signal: await shutdownSignal() }, 'stopping');
  await source.stop();
  return 0;
}
