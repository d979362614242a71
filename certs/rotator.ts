// Self-managed certificates: the webhook keeps its CA and serving certificate in a Secret, publishes
// the CA in caBundle, renews and rotates them, and hands every change to the HTTPS server.
//
// Every replica runs this. They never coordinate directly: the Secret is the single source of truth,
// writes are optimistic (resourceVersion), and each decision is recomputed from what is stored, so a
// replica that loses a race simply adopts the winner's certificates.
//
// A check (at start, every checkInterval, on a Secret watch event, or checkNow()):
//   1. read the Secret; if it has a usable CA, make sure caBundle holds its ca.crt (this also tells
//      whether a pending next CA is published yet)
//   2. plan (rotation-policy.ts + material.ts) until the data needs nothing; a CA switch waits until the next CA
//      is in every caBundle
//   3. write it (create-if-absent / update with resourceVersion; on 409 re-read and plan again)
//   4. publish the written ca.crt in caBundle, then serve the new certificate (onChange)
// CA rotation order across checks: caBundle [old, new] -> (overlap) serve from new, caBundle [new, old]
// -> (overlap) caBundle [new]. Replicas re-read the Secret at least every checkInterval, which must be
// at most half the overlap, so every replica serves from the new CA before the old one is dropped.
import { X509Certificate } from 'node:crypto';
import type { KubeConfig, V1Secret } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

import type {
  CaBundleInjector,
  CaBundleSyncReport,
  WebhookConfigClient,
  WebhookTargets,
} from './ca-bundle.ts';
import { createCaBundleInjector } from './ca-bundle.ts';
import { DEFAULT_VALIDITY, decisionKind, validatePolicy } from './rotation-policy.ts';
import type { CertPolicy, Decision } from './rotation-policy.ts';
import { SECRET_KEYS, inspectSecret, pemBlocks } from './secret-inspection.ts';
import type { CertSecretData } from './secret-inspection.ts';
import { DAY_MS, formatCertDuration } from './duration.ts';
import { serviceDnsNames } from './generate.ts';
import type { CertFactory } from './material.ts';
import { planCertificates, unservableReason } from './material.ts';
import { certMetrics } from './metrics.ts';
import type { CertMetrics } from './metrics.ts';
import { CertificateError } from './parse.ts';
import {
  SECRET_TYPE_TLS,
  SecretAccessError,
  kubeSecretStore,
  kubeSecretWatchCalls,
  reconcileSecret,
} from './secret-store.ts';
import type { SecretStore, StoredSecret } from './secret-store.ts';
import type { KeptWatch, WatchCalls } from './watch.ts';
import { keepWatching } from './watch.ts';

/** What the HTTPS server needs; caBundlePem is what clients (the API server) trust. */
export interface ServingMaterial {
  certPem: string;
  keyPem: string;
  caBundlePem: string;
}

/** Where the webhook gets its certificate from; the same for self-managed and mounted files. */
export interface CertSource {
  current(): ServingMaterial;
  /** Called after the certificate in use changed; returns an unsubscribe function. */
  onChange(listener: (material: ServingMaterial) => void): () => void;
  stop(): Promise<void>;
}

export interface CheckResult {
  /** Kinds of the changes written, in order (empty when the Secret was reused). */
  steps: string[];
  /** The decision planning ended on (reuse, or a switch that was postponed). */
  final: Decision;
  /** This replica wrote the Secret. */
  wrote: boolean;
  /** The certificate served by this replica changed. */
  changed: boolean;
  postponed?: string;
  caBundle?: CaBundleSyncReport;
}

export interface SelfManagedCerts extends CertSource {
  /** Runs a check now (after any check in progress) and reports what it did. */
  checkNow(): Promise<CheckResult>;
  readonly secretRef: string;
}

export interface SelfManagedCertsOptions {
  namespace: string;
  secretName: string;
  /** The webhook's Service: the certificate covers svc, svc.ns, svc.ns.svc and svc.ns.svc.<domain>. */
  serviceName?: string;
  clusterDomain?: string;
  /** Additional names and addresses the certificate must cover. */
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
  /** In days (fractions allowed); defaults: CA 3650, serving 365, renew 90 before expiry, overlap 30. */
  validity?: Partial<Omit<CertPolicy, 'dnsNames' | 'ipAddresses'>>;
  /** Default 12 h. */
  checkIntervalMs?: number;
  caCommonName?: string;
  /** Our webhook configurations, whose caBundle we keep; false to leave caBundle alone. */
  webhookConfigurations: WebhookTargets | false;
  /** How often caBundle (and the Secret) is re-read besides watch events; default 60 s. */
  caBundleCheckIntervalMs?: number;
  /** Watch the Secret and the webhook configurations; default true. */
  watch?: boolean;
  logger: Logger;
  registry?: Registry;
  kubeConfig?: KubeConfig;
  /** Replace the API for tests. */
  store?: SecretStore;
  webhookClient?: WebhookConfigClient;
  /** The Secret watch's list and watch; default the kubeConfig's (unless the store is replaced). */
  secretWatchCalls?: WatchCalls<V1Secret>;
  now?: () => Date;
  factory?: CertFactory;
}

export const DEFAULT_CHECK_INTERVAL_MS = 12 * 3_600_000;
export const CERT_ANNOTATIONS = {
  lastChange: 'buildkit-fleet.io/certs-last-change',
  changedAt: 'buildkit-fleet.io/certs-changed-at',
} as const;
const SECRET_LABELS = {
  'app.kubernetes.io/name': 'buildkit-fleet',
  'app.kubernetes.io/component': 'webhook-certs',
  'app.kubernetes.io/managed-by': 'buildkit-fleet',
};

/** The policy a rotator runs with, validated including its check interval. */
export function rotatorPolicy(
  options: Pick<
    SelfManagedCertsOptions,
    | 'namespace'
    | 'serviceName'
    | 'clusterDomain'
    | 'dnsNames'
    | 'ipAddresses'
    | 'validity'
    | 'checkIntervalMs'
  >,
): { policy: CertPolicy; checkIntervalMs: number } {
  const dnsNames = [
    ...(options.serviceName
      ? serviceDnsNames(options.serviceName, options.namespace, options.clusterDomain)
      : []),
    ...(options.dnsNames ?? []),
  ];
  const policy: CertPolicy = {
    ...DEFAULT_VALIDITY,
    ...options.validity,
    dnsNames: [...new Set(dnsNames)],
    ipAddresses: [...new Set(options.ipAddresses ?? [])],
  };
  validatePolicy(policy);
  const checkIntervalMs = options.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS;
  const limit = Math.min(policy.caOverlapDays, policy.renewBeforeDays) * DAY_MS;
  if (!(checkIntervalMs > 0) || checkIntervalMs * 2 > limit) {
    throw new CertificateError(
      `certificate policy: the check interval (${formatCertDuration(checkIntervalMs)}) must be at most half of ` +
        `both the CA overlap and renew-before (${formatCertDuration(limit)}), so every replica sees each step in time`,
    );
  }
  return { policy, checkIntervalMs };
}

function materialOf(data: CertSecretData): ServingMaterial {
  return {
    certPem: data[SECRET_KEYS.cert]!,
    keyPem: data[SECRET_KEYS.key]!,
    caBundlePem: data[SECRET_KEYS.caBundle]!,
  };
}

const sameMaterial = (a: ServingMaterial | undefined, b: ServingMaterial) =>
  a !== undefined && a.certPem === b.certPem && a.keyPem === b.keyPem && a.caBundlePem === b.caBundlePem;

export async function startSelfManagedCerts(options: SelfManagedCertsOptions): Promise<SelfManagedCerts> {
  const { logger } = options;
  const { policy, checkIntervalMs } = rotatorPolicy(options);
  const clock = options.now ?? (() => new Date());
  const metrics: CertMetrics = certMetrics(options.registry);
  const store =
    options.store ??
    kubeSecretStore(need(options.kubeConfig, 'kubeConfig (or store)'), {
      namespace: options.namespace,
      name: options.secretName,
      labels: SECRET_LABELS,
    });
  const secret = store.ref;
  const injector: CaBundleInjector | undefined =
    options.webhookConfigurations === false
      ? undefined
      : createCaBundleInjector({
          targets: options.webhookConfigurations,
          logger,
          ...(options.webhookClient ? { client: options.webhookClient } : {}),
          ...(options.kubeConfig ? { kubeConfig: options.kubeConfig } : {}),
          ...(options.registry ? { registry: options.registry } : {}),
          ...(options.caBundleCheckIntervalMs ? { intervalMs: options.caBundleCheckIntervalMs } : {}),
          ...(options.watch === false ? { watch: false } : {}),
        });

  let material: ServingMaterial | undefined;
  const listeners = new Set<(m: ServingMaterial) => void>();
  let chain: Promise<unknown> = Promise.resolve();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let secretWatch: KeptWatch | undefined;
  let lastVersion = '';
  let warnedType = false;

  const setExpiry = (data: CertSecretData, leafNotAfter: Date) => {
    const view = inspectSecret(data, clock());
    metrics.expiry.set({ cert: 'serving' }, leafNotAfter.getTime() / 1000);
    if (view.active) metrics.expiry.set({ cert: 'ca' }, view.active.cert.notAfter.getTime() / 1000);
    if (view.next) metrics.expiry.set({ cert: 'ca_next' }, view.next.cert.notAfter.getTime() / 1000);
    else metrics.expiry.remove({ cert: 'ca_next' });
  };

  /** Serves `stored` if it differs from what we serve and can be served; says whether it changed. */
  const adopt = (stored: StoredSecret, why: string): boolean => {
    lastVersion = stored.resourceVersion;
    if (stored.type !== SECRET_TYPE_TLS && !warnedType) {
      warnedType = true;
      logger.warn(
        { secret, type: stored.type },
        `certificate Secret has type ${stored.type}, not ${SECRET_TYPE_TLS}; it works, but tools that expect a TLS Secret will not recognise it`,
      );
    }
    const next = materialOf(stored.data);
    if (sameMaterial(material, next)) return false;
    const problem = unservableReason(stored.data, clock(), policy);
    if (problem !== undefined) {
      // Keep serving what works; the next check repairs the Secret.
      metrics.errors.inc({ reason: 'invalid_secret' });
      logger.error(
        { secret, reason: problem, trigger: why },
        'certificate Secret is not servable; keeping the current certificate',
      );
      return false;
    }
    const first = material === undefined;
    material = next;
    const leaf = new X509Certificate(next.certPem);
    setExpiry(stored.data, leaf.validToDate);
    if (!first) metrics.reloads.inc({ source: 'secret' });
    logger.info(
      {
        secret,
        serial: leaf.serialNumber.toLowerCase(),
        notAfter: leaf.validToDate.toISOString(),
        caCount: pemBlocks(next.caBundlePem).length,
        trigger: why,
      },
      first ? 'serving certificate loaded from Secret' : 'serving certificate replaced',
    );
    if (!first) {
      for (const listener of listeners) {
        try {
          listener(next);
        } catch (error) {
          logger.error({ err: (error as Error).message }, 'certificate change listener failed');
        }
      }
    }
    return true;
  };

  const runCheck = async (why: string): Promise<CheckResult> => {
    const result: CheckResult = {
      steps: [],
      final: { action: 'reuse', reason: '' },
      wrote: false,
      changed: false,
    };
    let decisions: Decision[] = [];
    let published = new Set<string>();
    const outcome = await reconcileSecret(
      store,
      async (current) => {
        const now = clock();
        published = new Set();
        if (current && injector) {
          const view = inspectSecret(current.data, now);
          if (view.active) {
            // Restores a reset caBundle and tells whether a pending next CA is trusted yet.
            result.caBundle = await injector.sync(current.data[SECRET_KEYS.caBundle]!, `check (${why})`);
            if (result.caBundle.inSync) published = new Set(view.bundle.map((c) => c.fingerprint));
          }
        }
        const plan = planCertificates(current?.data, {
          now,
          policy,
          caCommonName: options.caCommonName ?? 'buildkit-fleet webhook CA',
          ...(options.factory ? { factory: options.factory } : {}),
          ...(injector ? { canSwitchTo: (ca) => published.has(ca.fingerprint) } : {}),
        });
        result.final = plan.final;
        decisions = plan.steps;
        result.steps = plan.steps.map(decisionKind);
        if (plan.postponed !== undefined) result.postponed = plan.postponed;
        if (plan.steps.length === 0) return undefined;
        const last = plan.steps[plan.steps.length - 1]!;
        return {
          data: plan.data!,
          annotations: {
            [CERT_ANNOTATIONS.lastChange]: `${result.steps.join(', ')}: ${last.reason}`.slice(0, 1000),
            [CERT_ANNOTATIONS.changedAt]: now.toISOString(),
          },
        };
      },
      {
        onConflict: () =>
          logger.info({ secret }, 'certificate Secret changed meanwhile (another replica?); deciding again'),
      },
    );
    result.wrote = outcome.wrote;
    if (outcome.wrote) {
      for (const step of decisions) {
        const kind = decisionKind(step);
        metrics.rotations.inc({ kind });
        const fields = {
          secret,
          action: kind,
          reason: step.reason,
          ...('problem' in step ? { problem: step.problem } : {}),
        };
        if (kind.startsWith('repair')) logger.warn(fields, 'certificate Secret repaired');
        else
          logger.info(
            fields,
            kind === 'create' ? 'certificate Secret created' : 'certificate Secret updated',
          );
      }
    } else {
      result.steps = [];
      logger.debug({ secret, reason: result.final.reason, trigger: why }, 'certificate Secret reused');
    }
    if (result.postponed !== undefined) {
      metrics.errors.inc({ reason: 'switch_postponed' });
      logger.warn(
        { secret, reason: result.postponed, caBundle: result.caBundle },
        'CA switch postponed: the next CA is not yet in every caBundle',
      );
    }
    // Publish before serving: after a repair the API server must trust the new CA before we present it.
    if (outcome.wrote && injector) {
      result.caBundle = await injector.sync(
        outcome.secret.data[SECRET_KEYS.caBundle]!,
        result.steps.join(', '),
      );
    }
    result.changed = adopt(outcome.secret, why);
    return result;
  };

  // Checks, re-reads and adoptions run one at a time, so an older read can never replace a newer one.
  const serialize = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = chain.then(fn);
    chain = run.catch(() => undefined);
    return run;
  };

  const failed = (error: unknown, why: string): never => {
    const forbidden = error instanceof SecretAccessError && error.forbidden;
    const reason = forbidden
      ? 'secret_forbidden'
      : error instanceof SecretAccessError
        ? 'secret_error'
        : 'check_failed';
    metrics.errors.inc({ reason });
    logger.error(
      { secret, err: (error as Error).message, trigger: why },
      'certificate check failed; keeping the current certificate',
    );
    throw error;
  };

  const check = (why: string): Promise<CheckResult> =>
    serialize(() => runCheck(why).catch((error: unknown) => failed(error, why)));

  /** Light re-read for the caBundle keeper: adopt another replica's change, or run a full check if broken. */
  const refresh = (why: string): Promise<string> =>
    serialize(async () => {
      try {
        const stored = await store.read();
        if (stored && unservableReason(stored.data, clock(), policy) === undefined) {
          if (stored.resourceVersion !== lastVersion) adopt(stored, why);
          return stored.data[SECRET_KEYS.caBundle]!;
        }
        await runCheck(`${why}: Secret ${stored ? 'not servable' : 'missing'}`);
        return material!.caBundlePem;
      } catch (error) {
        return failed(error, why);
      }
    });

  const schedule = (delayMs: number) => {
    if (stopped) return;
    timer = setTimeout(() => {
      check('periodic check').then(
        () => schedule(checkIntervalMs),
        // Retry sooner after a failure; the certificate in use stays valid for a long while.
        () => schedule(Math.min(checkIntervalMs, 60_000)),
      );
    }, delayMs);
    timer.unref();
  };

  try {
    await check('start');
  } catch (error) {
    injector?.stop();
    throw error;
  }
  if (!material) {
    injector?.stop();
    throw new CertificateError(`no servable certificate in Secret ${secret}`);
  }

  // The caBundle keeper re-reads the Secret, so a replica also picks up another replica's change there.
  injector?.start(() => refresh('Secret re-read'));
  const secretWatchCalls =
    options.secretWatchCalls ??
    (options.kubeConfig && !options.store
      ? kubeSecretWatchCalls(options.kubeConfig, options.namespace)
      : undefined);
  if (options.watch !== false && secretWatchCalls) {
    let debounce: NodeJS.Timeout | undefined;
    secretWatch = keepWatching<V1Secret>({
      path: `/api/v1/namespaces/${options.namespace}/secrets`,
      selector: { fieldSelector: `metadata.name=${options.secretName}` },
      calls: secretWatchCalls,
      what: `Secret ${secret}`,
      logger,
      ...(options.registry ? { registry: options.registry } : {}),
      // Only the version is read; the keys stay out of the informer's cache.
      transform: ({ metadata }) => ({
        metadata: {
          name: metadata?.name,
          namespace: metadata?.namespace,
          resourceVersion: metadata?.resourceVersion,
        },
      }),
      onEvent: (type, object) => {
        const version = object.metadata?.resourceVersion;
        if ((type !== 'DELETED' && version === lastVersion) || debounce) return;
        debounce = setTimeout(() => {
          debounce = undefined;
          if (!stopped) check(`watch: Secret ${type.toLowerCase()}`).catch(() => undefined);
        }, 100);
        debounce.unref();
      },
      onForbidden: () => metrics.errors.inc({ reason: 'secret_watch_forbidden' }),
    });
  }
  schedule(checkIntervalMs);

  return {
    secretRef: secret,
    current: () => material!,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    checkNow: () => check('checkNow'),
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      injector?.stop();
      await secretWatch?.stop();
      await chain;
    },
  };
}

function need<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`startSelfManagedCerts needs ${what}`);
  return value;
}
