// `buildkit-fleet webhook`: wires the admission server. In --local mode it also makes its own
// certificate for 127.0.0.1 and registers itself with the cluster, removing the registration on exit.
import type { Logger } from 'pino';

import type { CertSource } from '../certs/index.ts';
import { certConfigFromOptions, createCa, createServingCert, startCertSource } from '../certs/index.ts';
import { loadKubeConfig } from '../kube/load-kube-config.ts';
import { readServerVersion } from '../kube/server-version.ts';
import { UsageError } from '../flags/errors.ts';
import { parseMinIdleTimeout } from '../flags/min-idle-timeout.ts';
import type { TemplateLimits } from './template-validation.ts';
import { createLogger } from '../telemetry/logger.ts';
import { shutdownSignal } from '../telemetry/shutdown.ts';
import type { ParsedOptions } from '../flags/options.ts';
import { featuresFromVersionInfo } from '../kube/server-features.ts';
import { createApp } from './app.ts';
import { ROUTES, mutatingWebhookConfiguration, validatingWebhookConfiguration } from './configurations.ts';
import {
  mutatePodHandler,
  mutateTemplate,
  validateBuildkitHandler,
  templateValidationHandler,
} from './handlers.ts';
import { injectionConfigFromOptions } from './injection-options.ts';
import type { TemplateReader } from './handlers.ts';
import { applyWebhookConfigurations, deleteWebhookConfigurations, liveTemplateReader } from './kube.ts';
import { createWebhookMetrics } from './metrics.ts';
import type { TlsMaterial, WebhookServer } from './server.ts';
import { createWebhookServer } from './server.ts';

export { WEBHOOK_OPTIONS } from './options.ts';
import type { WEBHOOK_OPTIONS } from './options.ts';

export type WebhookOptions = ParsedOptions<typeof WEBHOOK_OPTIONS>;

/** --min-idle-timeout: a duration from 1s up to the 24h maximum. */
export function templateLimitsFromOptions(minIdleTimeout: string): TemplateLimits {
  return { minIdleTimeoutMs: parseMinIdleTimeout(minIdleTimeout) };
}

function parseLabel(text: string | undefined): Record<string, string> | undefined {
  if (text === undefined) return undefined;
  const match = /^([^=\s]+)=([^=\s]*)$/.exec(text);
  if (!match) throw new UsageError(`--namespace-label ${JSON.stringify(text)}: must be key=value`);
  return { [match[1]!]: match[2]! };
}

export interface RunningWebhook {
  server: WebhookServer;
  url: string;
  caPem?: string;
  stop(): Promise<void>;
}

/** Starts the webhook; resolves once it serves (and, in --local mode, is registered). */
export async function startWebhook(
  options: WebhookOptions,
  logger: Logger,
  explicitListen: boolean,
): Promise<RunningWebhook> {
  const haveCert = options['tls-cert-file'] !== undefined || options['tls-key-file'] !== undefined;
  if (haveCert && (!options['tls-cert-file'] || !options['tls-key-file'])) {
    throw new UsageError('--tls-cert-file and --tls-key-file go together');
  }
  const selfManaged = options['cert-mode'] === 'self-managed';
  if (!options.local && !selfManaged && !haveCert) {
    throw new UsageError(
      'no certificate: set --tls-cert-file and --tls-key-file (mounted, e.g. by cert-manager), use --cert-mode self-managed, or --local for development',
    );
  }
  if (options.local && (haveCert || selfManaged)) {
    throw new UsageError(
      '--local makes its own certificate; drop --tls-cert-file/--tls-key-file and --cert-mode',
    );
  }
  if (selfManaged && haveCert)
    throw new UsageError(
      '--cert-mode self-managed writes its own certificate; drop --tls-cert-file/--tls-key-file',
    );
  if (options.local && !options.kubeconfig)
    throw new UsageError('--local needs --kubeconfig (or KUBECONFIG)');
  const namespaceLabels = parseLabel(options['namespace-label']);
  const templateLimits = templateLimitsFromOptions(options['min-idle-timeout']);
  const injection = injectionConfigFromOptions(options, options.local);
  const certConfig = options.local ? undefined : certConfigFromOptions(options);

  const kc = loadKubeConfig(options.kubeconfig);
  // The sidecar's shape (native or regular container) depends on the server, read once like the
  // controller does: a server upgrade restarts the platform's pods anyway.
  const version = await readServerVersion(kc, logger);
  const features = featuresFromVersionInfo(version);
  logger.info(
    { server: version.gitVersion, nativeSidecars: features.nativeSidecars },
    'detected the API server',
  );
  const listen = options.local && !explicitListen ? { host: '127.0.0.1', port: 0 } : options.listen;

  const metrics = createWebhookMetrics();
  let tls: TlsMaterial;
  let caPem: string | undefined;
  let certSource: CertSource | undefined;
  if (options.local) {
    const ca = createCa({ commonName: 'buildkit-fleet local webhook CA', validityDays: 7 });
    tls = createServingCert({
      ca,
      dnsNames: ['localhost'],
      ipAddresses: [listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host],
      validityDays: 7,
    });
    caPem = ca.certPem;
  } else {
    // Same server code path in both modes; only who writes the certificate differs.
    certSource = await startCertSource(certConfig!, {
      logger,
      registry: metrics.registry,
      kubeConfig: kc,
      ...(haveCert ? { certFile: options['tls-cert-file']!, keyFile: options['tls-key-file']! } : {}),
    });
    tls = certSource.current();
  }

  const readTemplate: TemplateReader = liveTemplateReader(kc);
  let ready = false;
  const app = createApp({
    routes: {
      [ROUTES.mutateTemplate]: mutateTemplate,
      [ROUTES.validateTemplate]: templateValidationHandler(templateLimits),
      [ROUTES.validateBuildkit]: validateBuildkitHandler(readTemplate),
      [ROUTES.mutatePod]: mutatePodHandler({ config: injection, features }),
    },
    logger,
    metrics,
    isReady: () => ready,
  });
  let server: WebhookServer;
  try {
    server = createWebhookServer(app, tls);
  } catch (error) {
    await certSource?.stop();
    throw new UsageError(`the certificate or key cannot be used: ${(error as Error).message}`);
  }
  certSource?.onChange((next) => {
    server.setCertificate(next);
    logger.info({ mode: options['cert-mode'] }, 'serving a new certificate');
  });
  const address = await server
    .listen(listen.host, listen.port)
    .catch(async (error: NodeJS.ErrnoException) => {
      await certSource?.stop();
      throw new UsageError(`cannot listen on ${listen.host}:${listen.port}: ${error.code ?? error.message}`);
    });
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `https://${host === '0.0.0.0' ? '127.0.0.1' : host}:${address.port}`;
  ready = true;
  logger.info({ url, local: options.local }, 'webhook serving');

  const configName = options['config-name'];
  if (options.local) {
    const configOptions = {
      name: configName,
      clientConfig: (path: string) => ({ url: `${url}${path}` }),
      caBundle: Buffer.from(caPem!).toString('base64'),
      failurePolicy: options['failure-policy'] as 'Fail' | 'Ignore',
      labels: { 'buildkit-fleet.io/local-webhook': 'true' },
      platformNamespace: injection.platformNamespace,
      ...(namespaceLabels ? { namespaceLabels } : {}),
    };
    try {
      await applyWebhookConfigurations(
        kc,
        mutatingWebhookConfiguration(configOptions),
        validatingWebhookConfiguration(configOptions),
      );
    } catch (error) {
      await server.close(0);
      throw new Error(
        `could not register the webhook configurations "${configName}": ${(error as Error).message}`,
        { cause: error },
      );
    }
    logger.info({ name: configName, url }, 'registered webhook configurations');
  }

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      ready = false;
      if (options.local) {
        await deleteWebhookConfigurations(kc, configName).catch((error: Error) =>
          logger.error({ name: configName, err: error.message }, 'could not remove webhook configurations'),
        );
        logger.info({ name: configName }, 'removed webhook configurations');
      }
      await server.close(options['shutdown-grace'] * 1000);
      await certSource?.stop();
      logger.info('webhook stopped');
    })());
  return { server, url, ...(caPem ? { caPem } : {}), stop };
}

export async function runWebhookCommand(options: WebhookOptions, explicitListen: boolean): Promise<number> {
  const logger = createLogger({ level: options['log-level'], component: 'webhook' });
  const signalled = shutdownSignal();
  const running = await startWebhook(options, logger, explicitListen);
  logger.info({ signal: await signalled }, 'shutting down');
  await running.stop().catch(() => undefined);
  return 0;
}
