// Puts our CA bundle into caBundle of every webhook entry of our Mutating/ValidatingWebhookConfigurations
// and keeps it there: `helm upgrade` or a GitOps sync re-applying the chart resets caBundle to what
// the manifest says (usually nothing), which makes every review fail TLS until it is restored.
// A periodic check restores it; a watch restores it within moments.
//
// RBAC: get and patch on the named configurations; list for a label selector; list and watch for
// the watch (an informer: it lists, then watches from the list's resourceVersion). Both verbs can
// be limited to the named configurations (resourceNames): the watch selects each by a
// `metadata.name=` field selector, which Kubernetes authorizes against resourceNames. Without list
// or watch only the periodic check by name runs. While a first install waits to set failurePolicy
// Fail, list on endpointslices in the webhook Service's namespace tells when that Service answers.
import { AdmissionregistrationV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import type { V1EndpointSlice } from '@kubernetes/client-node';
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

/** The Service a webhook entry is called through. */
export interface WebhookServiceRef {
  namespace: string;
  name: string;
}

export interface WebhookConfigObject {
  metadata?: { name?: string; resourceVersion?: string; annotations?: Record<string, string> };
  webhooks?: {
    name: string;
    failurePolicy?: string;
    clientConfig?: { caBundle?: string; service?: WebhookServiceRef; url?: string };
  }[];
}

export type JsonPatchOp = { op: 'test' | 'add' | 'remove'; path: string; value?: unknown };

const FAILURE_POLICIES: readonly string[] = ['Fail', 'Ignore'];
/** JSON pointer to the annotation: `/` in a key is written `~1` (RFC 6901). */
const FAILURE_POLICY_ANNOTATION_PATH = `/metadata/annotations/${FAILURE_POLICY_ANNOTATION.replaceAll('~', '~0').replaceAll('/', '~1')}`;

/**
 * The policy a first install is waiting to set, if the configuration's annotation names one. The
 * annotation marks the wait: it is removed once every entry holds that policy.
 */
export function intendedFailurePolicy(config: WebhookConfigObject): string | undefined {
  const value = config.metadata?.annotations?.[FAILURE_POLICY_ANNOTATION];
  return value !== undefined && FAILURE_POLICIES.includes(value) ? value : undefined;
}

/** Whether a webhook Service has an endpoint that answers; entries called by URL always do. */
export type ServingCheck = (service: WebhookServiceRef) => boolean;
const alwaysServing: ServingCheck = () => true;
export const serviceKey = (service: WebhookServiceRef): string => `${service.namespace}/${service.name}`;

/**
 * Why an entry waits for its failurePolicy, or undefined when it can have it now: Fail is only set
 * where the API server can reach the webhook, else a first install would refuse every request
 * between the caBundle patch and the first webhook pod turning ready.
 */
type WebhookEntry = NonNullable<WebhookConfigObject['webhooks']>[number];

/** The Service an entry must wait for before it gets `policy`: only Fail waits, only for a Service. */
const serviceToAwait = (entry: WebhookEntry, policy: string): WebhookServiceRef | undefined =>
  policy === 'Fail' ? entry.clientConfig?.service : undefined;

function policyWait(entry: WebhookEntry, policy: string, serving: ServingCheck): string | undefined {
  const service = serviceToAwait(entry, policy);
  if (!service || serving(service)) return undefined;
  return `Service ${serviceKey(service)} has no ready endpoint yet`;
}

/** Entries still waiting for the annotation's policy once caBundle is in place, as "name: why". */
export function failurePolicyWaits(
  config: WebhookConfigObject,
  serving: ServingCheck = alwaysServing,
): string[] {
  const policy = intendedFailurePolicy(config);
  if (policy === undefined) return [];
  return (config.webhooks ?? []).flatMap((entry) => {
    if (entry.failurePolicy === policy) return [];
    const wait = policyWait(entry, policy, serving);
    return wait === undefined ? [] : [`${entry.name}: ${wait}`];
  });
}

/** The Services the waiting entries of `config` are called through. */
export function servicesAwaited(config: WebhookConfigObject): WebhookServiceRef[] {
  const policy = intendedFailurePolicy(config);
  if (policy === undefined) return [];
  return (config.webhooks ?? []).flatMap((entry) => {
    const service = entry.failurePolicy === policy ? undefined : serviceToAwait(entry, policy);
    return service ? [service] : [];
  });
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
  /**
   * Whether `service` has an endpoint the cluster routes to now (an EndpointSlice endpoint not
   * marked unready). Without it every Service counts as serving.
   */
  servingEndpoints?(service: WebhookServiceRef): Promise<boolean>;
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
 * While the configuration's FAILURE_POLICY_ANNOTATION names a policy (a first install renders
 * Ignore until a CA exists), an entry also gets that policy as soon as `serving` says its Service
 * answers, and the patch that leaves no entry waiting removes the annotation. Without the
 * annotation the policy is never touched, so one set by hand stays.
 */
export function caBundlePatch(
  config: WebhookConfigObject,
  desired: string,
  serving: ServingCheck = alwaysServing,
): JsonPatchOp[] {
  const ops: JsonPatchOp[] = [];
  const policy = intendedFailurePolicy(config);
  let waiting = 0;
  (config.webhooks ?? []).forEach((entry, i) => {
    const needsBundle = entry.clientConfig?.caBundle !== desired;
    const needsPolicy = policy !== undefined && entry.failurePolicy !== policy;
    const policyNow = needsPolicy && policyWait(entry, policy, serving) === undefined;
    if (needsPolicy && !policyNow) waiting++;
    if (!needsBundle && !policyNow) return;
    ops.push({ op: 'test', path: `/webhooks/${i}/name`, value: entry.name });
    if (needsBundle) ops.push({ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: desired });
    if (policyNow) ops.push({ op: 'add', path: `/webhooks/${i}/failurePolicy`, value: policy });
  });
  if (policy !== undefined && waiting === 0) {
    ops.push({
      op: 'test',
      path: FAILURE_POLICY_ANNOTATION_PATH,
      value: config.metadata?.annotations?.[FAILURE_POLICY_ANNOTATION],
    });
    ops.push({ op: 'remove', path: FAILURE_POLICY_ANNOTATION_PATH });
  }
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
  const objects = kc.makeApiClient(CustomObjectsApi);
  // discovery.k8s.io/v1 from Kubernetes 1.21; v1beta1 (same fields read here) before it
  let sliceVersions = ['v1', 'v1beta1'];
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
    servingEndpoints: async (service) => {
      let slices: { items: V1EndpointSlice[] } | undefined;
      try {
        for (const version of sliceVersions) {
          try {
            slices = (await objects.listNamespacedCustomObject({
              group: 'discovery.k8s.io',
              version,
              plural: 'endpointslices',
              namespace: service.namespace,
              labelSelector: `kubernetes.io/service-name=${service.name}`,
            })) as { items: V1EndpointSlice[] };
            sliceVersions = [version];
            break;
          } catch (error) {
            if (!isNotFound(error) || version === sliceVersions.at(-1)) throw error;
          }
        }
      } catch (error) {
        const status = errorStatus(error);
        const hint =
          status === 403
            ? ` (RBAC: the service account needs "list" on endpointslices in ${service.namespace})`
            : '';
        throw new WebhookConfigAccessError(
          `cannot list EndpointSlices of Service ${serviceKey(service)}: ${status ?? 'no answer'} ${apiErrorText(error)}${hint}`,
          status,
          { cause: error },
        );
      }
      // ready is unset when the controller does not know: the API reads that as ready
      return (slices?.items ?? []).some((slice) =>
        (slice.endpoints ?? []).some((e) => e.conditions?.ready !== false),
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
  /** Entries whose failurePolicy waits for their Service to answer, as "name: why". */
  waiting: string[];
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
  /**
   * How long a webhook Service must have had a ready endpoint before an entry gets failurePolicy
   * Fail; default 2 s. The endpoint being ready is not yet the API server reaching it: kube-proxy
   * programs a new endpoint on its next sync.
   */
  settleMs?: number;
  /** While an entry waits for its Service, the check runs again after this long; default 1 s. */
  pendingRecheckMs?: number;
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
  const settleMs = options.settleMs ?? 2000;
  const pendingRecheckMs = options.pendingRecheckMs ?? 1000;
  /** per Service key: since when it has had a ready endpoint */
  const readySince = new Map<string, number>();
  let endpointsForbiddenLogged = false;
  let waitingLogged = '';
  let recheck: NodeJS.Timeout | undefined;
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

  const serving: ServingCheck = (service) => {
    if (!client.servingEndpoints) return true;
    const since = readySince.get(serviceKey(service));
    return since !== undefined && Date.now() - since >= settleMs;
  };

  /** Reads each Service's endpoints once per sync (`checked`), however many entries await it. */
  const refreshServing = async (services: readonly WebhookServiceRef[], checked: Set<string>) => {
    if (!client.servingEndpoints) return;
    for (const service of services) {
      const key = serviceKey(service);
      if (checked.has(key)) continue;
      checked.add(key);
      let ready: boolean;
      try {
        ready = await client.servingEndpoints(service);
      } catch (error) {
        const status = (error as WebhookConfigAccessError).status;
        if (status !== 403) {
          // unknown is not serving: the entry stays at Ignore until the next check can tell
          logger.warn(
            { service: key, err: (error as Error).message },
            'cannot tell whether the webhook Service answers',
          );
          readySince.delete(key);
          continue;
        }
        // without the permission the wait could never end: set the policy now and say why
        if (!endpointsForbiddenLogged) {
          endpointsForbiddenLogged = true;
          metrics.errors.inc({ reason: 'endpoints_forbidden' });
          logger.error(
            { service: key, err: (error as Error).message },
            'failurePolicy is set without waiting for the webhook Service to answer: RBAC forbids reading its endpoints',
          );
        }
        ready = true;
        readySince.set(key, Date.now() - settleMs);
      }
      if (!ready) readySince.delete(key);
      else if (!readySince.has(key)) readySince.set(key, Date.now());
    }
  };

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

  const syncKind = async (
    kind: WebhookKind,
    b64: string,
    why: string,
    report: CaBundleSyncReport,
    checked: Set<string>,
  ) => {
    const { byName, note } = await collect(kind, report);
    for (const [name, first] of byName) {
      report.found.push(describe(kind, name));
      let config: WebhookConfigObject | undefined = first;
      for (let attempt = 1; config; attempt++) {
        await refreshServing(servicesAwaited(config), checked);
        const ops = caBundlePatch(config, b64, serving);
        const waits = failurePolicyWaits(config, serving).map((wait) => `${describe(kind, name)} ${wait}`);
        if (ops.length === 0) {
          report.waiting.push(...waits);
          break;
        }
        const entries = ops.filter((op) => op.op === 'test').map((op) => op.value as string);
        const before = (config.webhooks ?? []).map((w) => w.clientConfig?.caBundle ?? '');
        const policies = failurePolicyChanges(config, ops);
        const settled = ops.some((op) => op.op === 'remove');
        try {
          await client.patch(kind, name, ops);
          report.patched.push(describe(kind, name));
          report.waiting.push(...waits);
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
                    policyReason: `set to what ${FAILURE_POLICY_ANNOTATION} asks for, the webhook Service answering`,
                  }
                : {}),
              ...(settled ? { annotationRemoved: FAILURE_POLICY_ANNOTATION } : {}),
            },
            policies.length > 0
              ? 'caBundle patched, failurePolicy set'
              : settled
                ? 'every entry holds its failurePolicy: the first-install annotation is removed'
                : 'caBundle patched',
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
      waiting: [],
      inSync: false,
    };
    const checked = new Set<string>();
    for (const kind of WEBHOOK_KINDS) await syncKind(kind, b64, why, report, checked);
    noteWaiting(report.waiting);
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

  // Logged when the set of waiting entries changes, not on every recheck; a wait is rechecked soon,
  // not at the periodic interval, since every request until then is admitted unchecked.
  const noteWaiting = (waiting: readonly string[]) => {
    const key = JSON.stringify(waiting);
    if (waiting.length > 0 && key !== waitingLogged) {
      logger.info(
        {
          waiting,
          reason: 'the API server cannot reach the webhook yet, and Fail would refuse every request',
        },
        'failurePolicy held at Ignore until the webhook Service has a ready endpoint',
      );
    }
    waitingLogged = waiting.length > 0 ? key : '';
    if (waiting.length > 0) scheduleRecheck();
  };

  const scheduleRecheck = () => {
    // before start() there is no source to recheck with: start() schedules it then
    if (stopped || !source || recheck) return;
    recheck = setTimeout(() => {
      recheck = undefined;
      void fromSource('waiting for the webhook Service to answer');
    }, pendingRecheckMs);
    recheck.unref();
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
    if (desired === undefined || caBundlePatch(object, desired, serving).length === 0) return;
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
      if (waitingLogged !== '') scheduleRecheck();
      if (options.watch !== false && client.watcher) startWatches(client.watcher);
    },
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (debounce) clearTimeout(debounce);
      if (recheck) clearTimeout(recheck);
      for (const w of watches.splice(0)) void w.stop();
    },
  };
}
