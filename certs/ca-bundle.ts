// Puts our CA bundle into caBundle of every webhook entry of our Mutating/ValidatingWebhookConfigurations
// and keeps it there: `helm upgrade` or a GitOps sync re-applying the chart resets caBundle to what
// the manifest says (usually nothing), which makes every review fail TLS until it is restored.
// A periodic check restores it; a watch restores it within moments.
//
// RBAC: get and patch on the named configurations; list for a label selector; list and watch for
// the watch (an informer: it lists, then watches from the list's resourceVersion). Both verbs can
// be limited to the named configurations (resourceNames): the watch selects each by a
// `metadata.name=` field selector, which Kubernetes authorizes against resourceNames. Without list
// or watch only the periodic check by name runs.
import { AdmissionregistrationV1Api } from '@kubernetes/client-node';
import type { KubeConfig, KubernetesListObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

import { FAILURE_POLICY_ANNOTATION } from '../api/labels.ts';
import { apiErrorText, errorStatus, isNotFound } from '../kube/errors.ts';
import { kubeWatchFn } from '../kube/informer.ts';
import type { WatchFn } from '../kube/informer.ts';
import { certMetrics } from './metrics.ts';
import type { KeptWatch, WatchEventType, WatchSelector } from './watch.ts';
import { keepWatching } from './watch.ts';

export type WebhookKind = 'mutating' | 'validating';
export const WEBHOOK_KINDS: readonly WebhookKind[] = ['mutating', 'validating'];
const KIND_NAMES: Record<WebhookKind, string> = {
  mutating: 'MutatingWebhookConfiguration',
  validating: 'ValidatingWebhookConfiguration',
};
const RESOURCES: Record<WebhookKind, string> = {
  mutating: 'mutatingwebhookconfigurations',
  validating: 'validatingwebhookconfigurations',
};

/** Which configurations are ours: by name, by label selector, or both. */
export interface WebhookTargets {
  names?: readonly string[];
  labelSelector?: string;
}

export interface WebhookConfigObject {
  metadata?: { name?: string; resourceVersion?: string; annotations?: Record<string, string> };
  webhooks?: { name: string; failurePolicy?: string; clientConfig?: { caBundle?: string } }[];
}

export type JsonPatchOp = { op: 'test' | 'add'; path: string; value: unknown };

const FAILURE_POLICIES: readonly string[] = ['Fail', 'Ignore'];

/** The policy the configuration's annotation asks for once caBundle is in place, if it names one. */
export function intendedFailurePolicy(config: WebhookConfigObject): string | undefined {
  const value = config.metadata?.annotations?.[FAILURE_POLICY_ANNOTATION];
  return value !== undefined && FAILURE_POLICIES.includes(value) ? value : undefined;
}

/** The API said no; `status` 403 means RBAC. */
export class WebhookConfigAccessError extends Error {
  override name = 'WebhookConfigAccessError';
  readonly status: number | undefined;
  constructor(message: string, status: number | undefined, options?: ErrorOptions) {
    super(message, options);
    this.status = status;
  }
}

export interface WebhookConfigClient {
  /** undefined on 404. */
  get(kind: WebhookKind, name: string): Promise<WebhookConfigObject | undefined>;
  list(kind: WebhookKind, labelSelector: string): Promise<WebhookConfigObject[]>;
  patch(kind: WebhookKind, name: string, ops: JsonPatchOp[]): Promise<void>;
  /** The watch's API calls; without them only the periodic check runs. */
  watcher?: WebhookConfigWatcher;
}

/** What the watch (a kube/ Informer per configuration name and per label selector) calls. */
export interface WebhookConfigWatcher {
  /** By a `metadata.name=` field selector or a label selector, with the list's resourceVersion. */
  list(kind: WebhookKind, selector: WatchSelector): Promise<KubernetesListObject<WebhookConfigObject>>;
  watch: WatchFn;
}

export const bundleBase64 = (pem: string): string => Buffer.from(pem, 'utf8').toString('base64');

/**
 * JSON patch that sets caBundle on every entry of `config` not already holding `desired` (base64);
 * empty when nothing needs changing. Each change is guarded by a test of the entry's name, so a
 * concurrent reorder of the webhooks list makes the patch fail instead of hitting the wrong entry.
 * An entry that gets the bundle also gets the failurePolicy the configuration's
 * FAILURE_POLICY_ANNOTATION names (a first install holds it at Ignore until a CA exists). Entries
 * that already hold the bundle keep whatever policy they have, so a policy someone set by hand
 * stays.
 */
export function caBundlePatch(config: WebhookConfigObject, desired: string): JsonPatchOp[] {
  const ops: JsonPatchOp[] = [];
  const policy = intendedFailurePolicy(config);
  (config.webhooks ?? []).forEach((webhook, i) => {
    if (webhook.clientConfig?.caBundle === desired) return;
    ops.push({ op: 'test', path: `/webhooks/${i}/name`, value: webhook.name });
    ops.push({ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: desired });
    if (policy !== undefined && webhook.failurePolicy !== policy) {
      ops.push({ op: 'add', path: `/webhooks/${i}/failurePolicy`, value: policy });
    }
  });
  return ops;
}

/** The entries a patch from caBundlePatch gives a failurePolicy, as "name: policy". */
export function failurePolicyChanges(config: WebhookConfigObject, ops: readonly JsonPatchOp[]): string[] {
  return ops.flatMap((op) => {
    const match = /^\/webhooks\/(\d+)\/failurePolicy$/.exec(op.path);
    return match ? [`${config.webhooks?.[Number(match[1])]?.name ?? '?'}: ${String(op.value)}`] : [];
  });
}

export function kubeWebhookConfigClient(kc: KubeConfig): WebhookConfigClient {
  const api = kc.makeApiClient(AdmissionregistrationV1Api);
  const wrap = async <T>(verb: string, kind: WebhookKind, name: string, call: () => Promise<T>) => {
    try {
      return await call();
    } catch (error) {
      const status = errorStatus(error);
      if (isNotFound(error) && verb === 'get') return undefined;
      const hint =
        status === 403
          ? ` (RBAC: the service account needs "${verb}" on ${RESOURCES[kind]}${name ? ` named ${name}` : ''})`
          : '';
      throw new WebhookConfigAccessError(
        `cannot ${verb} ${KIND_NAMES[kind]}${name ? ` ${name}` : 's'}: ${status ?? 'no answer'} ${apiErrorText(error)}${hint}`,
        status,
        { cause: error },
      );
    }
  };
  return {
    get: (kind, name) =>
      wrap('get', kind, name, () =>
        kind === 'mutating'
          ? api.readMutatingWebhookConfiguration({ name })
          : api.readValidatingWebhookConfiguration({ name }),
      ) as Promise<WebhookConfigObject | undefined>,
    list: async (kind, labelSelector) => {
      const list = await wrap('list', kind, '', () =>
        kind === 'mutating'
          ? api.listMutatingWebhookConfiguration({ labelSelector })
          : api.listValidatingWebhookConfiguration({ labelSelector }),
      );
      return (list?.items ?? []) as WebhookConfigObject[];
    },
    patch: async (kind, name, ops) => {
      // client-node sends the first content type the endpoint accepts: application/json-patch+json.
      await wrap('patch', kind, name, () =>
        kind === 'mutating'
          ? api.patchMutatingWebhookConfiguration({ name, body: ops })
          : api.patchValidatingWebhookConfiguration({ name, body: ops }),
      );
    },
    // Unwrapped: the informer reads client-node's errors itself (a 403 stops the watch).
    watcher: {
      list: (kind, selector) =>
        kind === 'mutating'
          ? api.listMutatingWebhookConfiguration(selector)
          : api.listValidatingWebhookConfiguration(selector),
      watch: kubeWatchFn(kc),
    },
  };
}

export interface CaBundleSyncReport {
  /** "MutatingWebhookConfiguration/name" of every configuration found. */
  found: string[];
  /** Named configurations that do not exist. */
  missing: string[];
  /** Configurations whose caBundle we wrote in this sync. */
  patched: string[];
  /** Messages of calls RBAC refused. */
  forbidden: string[];
  /** Messages of other failures. */
  failed: string[];
  /** Every configuration found now holds the bundle, and nothing was refused or failed. */
  inSync: boolean;
}

export interface CaBundleInjector {
  /** Writes `bundlePem` into every entry that does not hold it yet. Never throws. */
  sync(bundlePem: string, why?: string): Promise<CaBundleSyncReport>;
  /** Keeps caBundle at what `source` returns: every `intervalMs`, and on watch events that differ. */
  start(source: () => Promise<string>): void;
  stop(): void;
}

export interface CaBundleInjectorOptions {
  targets: WebhookTargets;
  logger: Logger;
  client?: WebhookConfigClient;
  kubeConfig?: KubeConfig;
  registry?: Registry;
  /** Periodic check; default 60 s. */
  intervalMs?: number;
  /** Default true (when the client can watch). */
  watch?: boolean;
  /** A repeated identical problem is logged again after this long; default 10 min. */
  repeatLogMs?: number;
}

export function createCaBundleInjector(options: CaBundleInjectorOptions): CaBundleInjector {
  const { targets, logger } = options;
  const names = [...new Set(targets.names ?? [])];
  if (names.length === 0 && !targets.labelSelector) {
    throw new Error('caBundle injection needs webhook configuration names or a label selector');
  }
  if (!options.client && !options.kubeConfig) {
    throw new Error('createCaBundleInjector needs a client or a kubeConfig');
  }
  const client = options.client ?? kubeWebhookConfigClient(options.kubeConfig!);
  const metrics = certMetrics(options.registry);
  const intervalMs = options.intervalMs ?? 60_000;
  const repeatLogMs = options.repeatLogMs ?? 10 * 60_000;
  let desired: string | undefined;
  let chain: Promise<unknown> = Promise.resolve();
  let source: (() => Promise<string>) | undefined;
  let timer: NodeJS.Timeout | undefined;
  let debounce: NodeJS.Timeout | undefined;
  const watches: KeptWatch[] = [];
  let stopped = false;
  let lastProblem = '';
  let lastProblemAt = 0;

  const describe = (kind: WebhookKind, name: string) => `${KIND_NAMES[kind]}/${name}`;

  const collect = async (kind: WebhookKind, report: CaBundleSyncReport) => {
    const byName = new Map<string, WebhookConfigObject>();
    const note = (error: unknown) => {
      const message = error instanceof Error ? error.message : String(error);
      if (error instanceof WebhookConfigAccessError && error.status === 403) report.forbidden.push(message);
      else report.failed.push(message);
    };
    for (const name of names) {
      try {
        const config = await client.get(kind, name);
        if (config) byName.set(name, config);
        else report.missing.push(describe(kind, name));
      } catch (error) {
        note(error);
      }
    }
    if (targets.labelSelector) {
      try {
        for (const config of await client.list(kind, targets.labelSelector)) {
          if (config.metadata?.name) byName.set(config.metadata.name, config);
        }
      } catch (error) {
        note(error);
      }
    }
    return { byName, note };
  };

  const syncKind = async (kind: WebhookKind, b64: string, why: string, report: CaBundleSyncReport) => {
    const { byName, note } = await collect(kind, report);
    for (const [name, first] of byName) {
      report.found.push(describe(kind, name));
      let config: WebhookConfigObject | undefined = first;
      for (let attempt = 1; config; attempt++) {
        const ops = caBundlePatch(config, b64);
        if (ops.length === 0) break;
        const entries = ops.filter((op) => op.op === 'test').map((op) => op.value as string);
        const before = (config.webhooks ?? []).map((w) => w.clientConfig?.caBundle ?? '');
        const policies = failurePolicyChanges(config, ops);
        try {
          await client.patch(kind, name, ops);
          report.patched.push(describe(kind, name));
          metrics.caBundlePatches.inc({ kind });
          logger.info(
            {
              configuration: describe(kind, name),
              webhooks: entries,
              reason: before.every((b) => b === '') ? 'caBundle was empty' : 'caBundle differed',
              trigger: why,
              ...(policies.length > 0
                ? {
                    failurePolicy: policies,
                    policyReason: `set to what ${FAILURE_POLICY_ANNOTATION} asks for`,
                  }
                : {}),
            },
            policies.length > 0 ? 'caBundle patched, failurePolicy set' : 'caBundle patched',
          );
          break;
        } catch (error) {
          const status = (error as WebhookConfigAccessError).status;
          // 409/422: the object changed between our read and the patch (the name test failed): read again.
          if ((status === 409 || status === 422 || status === 404) && attempt < 3) {
            config = await client.get(kind, name).catch((e: unknown) => {
              note(e);
              return undefined;
            });
            continue;
          }
          note(error);
          break;
        }
      }
    }
  };

  const runSync = async (pem: string, why: string): Promise<CaBundleSyncReport> => {
    const b64 = bundleBase64(pem);
    desired = b64;
    const report: CaBundleSyncReport = {
      found: [],
      missing: [],
      patched: [],
      forbidden: [],
      failed: [],
      inSync: false,
    };
    for (const kind of WEBHOOK_KINDS) await syncKind(kind, b64, why, report);
    report.inSync = report.forbidden.length === 0 && report.failed.length === 0;
    metrics.caBundleInSync.set(report.inSync && report.found.length > 0 ? 1 : 0);
    if (report.forbidden.length > 0)
      metrics.errors.inc({ reason: 'ca_bundle_forbidden' }, report.forbidden.length);
    if (report.failed.length > 0) metrics.errors.inc({ reason: 'ca_bundle_error' }, report.failed.length);

    const problem = JSON.stringify([
      report.forbidden,
      report.failed,
      report.missing,
      report.found.length === 0,
    ]);
    const now = Date.now();
    const hasProblem =
      report.forbidden.length + report.failed.length + report.missing.length > 0 || report.found.length === 0;
    if (hasProblem && (problem !== lastProblem || now - lastProblemAt >= repeatLogMs)) {
      lastProblemAt = now;
      const fields = {
        targets: { names, labelSelector: targets.labelSelector },
        forbidden: report.forbidden,
        failed: report.failed,
        missing: report.missing,
        found: report.found,
      };
      if (report.forbidden.length > 0) {
        logger.error(fields, 'caBundle cannot be kept in the webhook configurations: RBAC forbids it');
      } else if (report.failed.length > 0) {
        logger.error(fields, 'caBundle could not be checked or patched');
      } else {
        logger.warn(fields, 'webhook configurations to put the caBundle into were not found');
      }
    } else if (!hasProblem && lastProblem !== '' && lastProblem !== problem) {
      logger.info({ found: report.found }, 'caBundle is in place again in every webhook configuration');
    }
    lastProblem = hasProblem ? problem : '';
    return report;
  };

  // One sync at a time, in order, so a stale bundle can never be written after a newer one.
  const sync = (pem: string, why = 'sync'): Promise<CaBundleSyncReport> => {
    const result = chain.then(() => runSync(pem, why));
    chain = result.catch(() => undefined);
    return result;
  };

  const fromSource = async (why: string) => {
    if (!source || stopped) return;
    let pem: string;
    try {
      pem = await source();
    } catch (error) {
      metrics.errors.inc({ reason: 'ca_bundle_source' });
      logger.error(
        { err: (error as Error).message, trigger: why },
        'cannot tell which CA bundle to keep in place',
      );
      return;
    }
    await sync(pem, why);
  };

  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      void fromSource('periodic check').finally(schedule);
    }, intervalMs);
    timer.unref();
  };

  const onEvent = (type: WatchEventType, object: WebhookConfigObject) => {
    if (type !== 'ADDED' && type !== 'MODIFIED') return;
    if (desired === undefined || caBundlePatch(object, desired).length === 0) return;
    const name = object.metadata?.name;
    if (debounce) return;
    debounce = setTimeout(() => {
      debounce = undefined;
      void fromSource(`watch: ${name ?? 'configuration'} changed`);
    }, 100);
    debounce.unref();
  };

  const startWatches = (watcher: WebhookConfigWatcher) => {
    for (const kind of WEBHOOK_KINDS) {
      const path = `/apis/admissionregistration.k8s.io/v1/${RESOURCES[kind]}`;
      const selectors: WatchSelector[] = names.map((n) => ({ fieldSelector: `metadata.name=${n}` }));
      if (targets.labelSelector) selectors.push({ labelSelector: targets.labelSelector });
      for (const selector of selectors) {
        watches.push(
          keepWatching<WebhookConfigObject>({
            path,
            selector,
            calls: { list: (s) => watcher.list(kind, s), watch: watcher.watch },
            what: `${RESOURCES[kind]} ${selector.fieldSelector ?? selector.labelSelector}`,
            logger,
            ...(options.registry ? { registry: options.registry } : {}),
            onEvent,
            onForbidden: () => metrics.errors.inc({ reason: 'ca_bundle_watch_forbidden' }),
          }),
        );
      }
    }
  };

  return {
    sync,
    start(next) {
      if (source) throw new Error('caBundle injector already started');
      source = next;
      schedule();
      if (options.watch !== false && client.watcher) startWatches(client.watcher);
    },
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (debounce) clearTimeout(debounce);
      for (const w of watches.splice(0)) void w.stop();
    },
  };
}
