// Command-line/env settings of the certificate lifecycle, in the format of cli/options.ts, and the
// one function that turns them into a running certificate source for either mode. Durations are
// plain strings to the CLI parser and are checked here (cli/options.ts has no duration type).
import { readFileSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

import { StartupError, UsageError } from '../flags/errors.ts';
import type { ParsedOptions } from '../flags/options.ts';
import { DAY_MS, requireDuration } from './duration.ts';
import { startFileReloader } from './file-reloader.ts';
import { CertificateError } from './parse.ts';
import { SecretAccessError } from './secret-store.ts';
import { errorMessage } from '../kube/errors.ts';
import type { CertSource, SelfManagedCertsOptions } from './rotator.ts';
import { rotatorPolicy, startSelfManagedCerts } from './rotator.ts';

export { CERT_OPTIONS } from '../flags/cert-options.ts';
import type { CERT_OPTIONS } from '../flags/cert-options.ts';

export type CertOptions = ParsedOptions<typeof CERT_OPTIONS>;

export type CertConfig =
  | { mode: 'files'; reloadIntervalMs: number }
  | {
      mode: 'self-managed';
      /** Everything startSelfManagedCerts needs except logger, kubeConfig and registry. */
      selfManaged: Omit<SelfManagedCertsOptions, 'logger' | 'kubeConfig' | 'registry'>;
    };

const SERVICE_ACCOUNT_NAMESPACE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

function list(text: string | undefined): string[] {
  return (text ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function duration(flag: string, text: string): number {
  try {
    return requireDuration(`--${flag}`, text);
  } catch (error) {
    throw new UsageError(errorMessage(error));
  }
}

function podNamespace(env: NodeJS.ProcessEnv, readFile: (path: string) => string): string | undefined {
  if (env['POD_NAMESPACE']) return env['POD_NAMESPACE'];
  try {
    return readFile(SERVICE_ACCOUNT_NAMESPACE).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Checks the options and turns them into a configuration; bad values are UsageErrors (exit 2). */
export function certConfigFromOptions(
  options: CertOptions,
  env: NodeJS.ProcessEnv = process.env,
  readFile: (path: string) => string = (p) => readFileSync(p, 'utf8'),
): CertConfig {
  if (options['cert-mode'] === 'files') {
    return {
      mode: 'files',
      reloadIntervalMs: duration('cert-reload-interval', options['cert-reload-interval']),
    };
  }
  const namespace = options['cert-namespace'] ?? podNamespace(env, readFile);
  if (!namespace) {
    throw new UsageError(
      '--cert-mode self-managed needs --cert-namespace (or BKF_CERT_NAMESPACE, POD_NAMESPACE, or running in a pod)',
    );
  }
  const names = list(options['webhook-configurations']);
  const selector = options['webhook-configuration-selector'];
  const days = (flag: keyof CertOptions & string) => duration(flag, options[flag] as string) / DAY_MS;
  const selfManaged: CertConfig & { mode: 'self-managed' } = {
    mode: 'self-managed',
    selfManaged: {
      namespace,
      secretName: options['cert-secret'],
      serviceName: options['service-name'],
      clusterDomain: options['cluster-domain'],
      dnsNames: list(options['cert-dns-names']),
      ipAddresses: list(options['cert-ip-addresses']),
      validity: {
        caValidityDays: days('ca-validity'),
        servingValidityDays: days('serving-validity'),
        renewBeforeDays: days('renew-before'),
        caOverlapDays: days('ca-overlap'),
      },
      checkIntervalMs: duration('check-interval', options['check-interval']),
      caBundleCheckIntervalMs: duration('ca-bundle-check-interval', options['ca-bundle-check-interval']),
      webhookConfigurations:
        names.length > 0 || selector ? { names, ...(selector ? { labelSelector: selector } : {}) } : false,
    },
  };
  try {
    // Fail at startup with the reason, not hours later at the first rotation.
    rotatorPolicy(selfManaged.selfManaged);
  } catch (error) {
    throw new UsageError(errorMessage(error));
  }
  return selfManaged;
}

/**
 * Starts the certificate source for `config`: the same interface in both modes, so the server code
 * path does not depend on who writes the certificate.
 */
export async function startCertSource(
  config: CertConfig,
  context: {
    logger: Logger;
    registry?: Registry;
    kubeConfig?: KubeConfig;
    /** files mode: the certificate and key (e.g. --tls-cert-file, --tls-key-file) and optional CA. */
    certFile?: string;
    keyFile?: string;
    caFile?: string;
  },
): Promise<CertSource> {
  try {
    return await startSource(config, context);
  } catch (error) {
    // Unusable files, a Secret RBAC forbids, no servable certificate: the command cannot serve,
    // and the message says why; a stack trace would only bury it.
    if (error instanceof CertificateError || error instanceof SecretAccessError) {
      throw new StartupError(error.message, { cause: error });
    }
    throw error;
  }
}

async function startSource(
  config: CertConfig,
  context: Parameters<typeof startCertSource>[1],
): Promise<CertSource> {
  const { logger, registry } = context;
  if (config.mode === 'files') {
    if (!context.certFile || !context.keyFile) {
      throw new UsageError('--cert-mode files needs --tls-cert-file and --tls-key-file');
    }
    return startFileReloader({
      certFile: context.certFile,
      keyFile: context.keyFile,
      ...(context.caFile ? { caFile: context.caFile } : {}),
      pollIntervalMs: config.reloadIntervalMs,
      logger,
      ...(registry ? { registry } : {}),
    });
  }
  if (!context.kubeConfig)
    throw new UsageError('--cert-mode self-managed needs access to the cluster (kubeconfig)');
  return startSelfManagedCerts({
    ...config.selfManaged,
    logger,
    kubeConfig: context.kubeConfig,
    ...(registry ? { registry } : {}),
  });
}
