// Scale to zero, wired into the controller process: the activator and its sync run in every
// replica; the idle scaler runs only while this replica leads; the autoscale step is what the
// Buildkit reconciler calls, and the workload reconciler (annotated StatefulSets and
// Deployments) is built here on the same step.
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import type { KubeConfig, V1Pod, V1Service } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

import { createActivator } from '../../activator/index.ts';
import type { Buildkit, BuildkitTemplate } from '../../api/types.generated.ts';
import type { EventRecorder } from '../events.ts';
import type { IdleTarget } from './idle-scaler.ts';
import type { ActivatorRegistry } from './activator-registry.ts';
import { startActivatorRegistry } from './activator-registry.ts';
import { startActivatorSync } from './activator-sync.ts';
import type { TargetSource } from './activator-targets.ts';
import { fenceTokens } from './fence-token.ts';
import type { IdleScaler } from './idle-scaler.ts';
import { startIdleScaler } from './idle-scaler.ts';
import type { ActivatorSettings } from './reconcile-autoscale.ts';
import { autoscaleReconciler, idleTargets, isAutoscaled } from './reconcile-autoscale.ts';
import { routeWriter } from './route-writer.ts';
import type { WorkloadKind } from './target-kinds.ts';
import { isWorkloadKey, parseTargetKey, targetKey } from './target-kinds.ts';
import { requestWake } from './wake-request.ts';
import { workloadReconciler } from './reconcile-workload.ts';
import type { Workload } from './workload-config.ts';
import { isOptedIn, readWorkloadState, workloadSettings } from './workload-config.ts';
import { isAtZero } from './plan.ts';

export interface AutoscalingSettings {
  activator: ActivatorSettings;
  listenHost: string;
  maxHeld: number;
  holdTimeoutMs: number;
  /** how long a stopping replica's activator lets its open connections finish */
  drainTimeoutMs: number;
  scaleIntervalMs: number;
  fenceSettleMs: number;
  /** the shortest idle timeout an annotated workload may ask for */
  minIdleTimeoutMs: number;
  /** where this replica announces its activator to the others (activator-registry.ts) */
  registry: { namespace: string; identity: string; leaseDurationMs: number };
}

export interface AutoscalingCaches {
  buildkits(): Buildkit[];
  template(namespace: string, name: string): BuildkitTemplate | undefined;
  /** the Buildkit's pods (owned), terminating ones included */
  pods(bk: Buildkit): V1Pod[];
  service(bk: Buildkit): V1Service | undefined;
  /** the StatefulSets and Deployments in scope (opted in or not) */
  workloads(): { kind: WorkloadKind; workload: Workload }[];
  workload(kind: WorkloadKind, namespace: string, name: string): Workload | undefined;
  /** an annotated workload's pods (opted in, matching its selector), terminating ones included */
  workloadPods(workload: Workload): V1Pod[];
  servicesIn(namespace: string): readonly V1Service[];
}

export function startAutoscaling(o: {
  kc: KubeConfig;
  logger: Logger;
  registry: Registry;
  events: EventRecorder;
  settings: AutoscalingSettings;
  caches: AutoscalingCaches;
  enqueueBuildkit(key: string): void;
  enqueueWorkload(key: string): void;
  /** every autoscaled target (their routes need the new activator addresses) */
  enqueueAll(): void;
  endpointSliceVersion: 'v1' | 'v1beta1';
}) {
  const custom = o.kc.makeApiClient(CustomObjectsApi);
  const log = o.logger.child({ subsystem: 'activator' });
  const templateOf = (bk: Buildkit) =>
    o.caches.template(bk.metadata?.namespace ?? '', bk.spec?.template ?? '');
  const activator = createActivator({
    logger: log,
    registry: o.registry,
    listenHost: o.settings.listenHost,
    maxHeldPerTarget: o.settings.maxHeld,
    holdTimeoutMs: o.settings.holdTimeoutMs,
    drainTimeoutMs: o.settings.drainTimeoutMs,
    onWake(key) {
      const target = parseTargetKey(key);
      const { kind, namespace, name } = target;
      requestWake(custom, target, new Date().toISOString()).then(
        (outcome) =>
          log.info(
            { kind, namespace, name, decision: 'wake', outcome, reason: 'a client is held' },
            'wake request',
          ),
        (error: Error) => log.error({ kind, namespace, name, err: error.message }, 'wake request failed'),
      );
    },
  });
  // annotated workloads that are opted in, with their settings and state
  const configuredWorkloads = () =>
    o.caches.workloads().flatMap(({ kind, workload }) => {
      if (!isOptedIn(workload) || workload.metadata?.deletionTimestamp) return [];
      const namespace = workload.metadata?.namespace ?? '';
      const found = workloadSettings(workload, o.caches.servicesIn(namespace), o.settings.minIdleTimeoutMs);
      if (!found.ok) return [];
      const key = targetKey({ kind, namespace, name: workload.metadata?.name ?? '' });
      return [{ key, kind, workload, settings: found.settings, state: readWorkloadState(workload).state }];
    });
  const workloadSources = (): TargetSource[] =>
    configuredWorkloads().map((c) => ({
      key: c.key,
      activatorPort: c.state.activatorPort,
      pods: (c.workload.spec?.replicas ?? 1) === 0 ? [] : o.caches.workloadPods(c.workload),
      service: c.settings.service,
    }));
  const workloadIdleTargets = (): IdleTarget[] =>
    configuredWorkloads().flatMap((c) => {
      const pods = o.caches.workloadPods(c.workload).filter((p) => !p.metadata?.deletionTimestamp);
      if ((c.workload.spec?.replicas ?? 1) === 0 || isAtZero(c.state) || pods.length === 0) return [];
      return [{ key: c.key, idleTimeoutMs: c.settings.idleTimeoutMs, pods, record: c.state }];
    });
  const sources = (): TargetSource[] => [
    ...o.caches
      .buildkits()
      .filter((bk) => isAutoscaled(templateOf(bk)) && !bk.metadata?.deletionTimestamp)
      .map((bk) => ({
        key: `${bk.metadata?.namespace}/${bk.metadata?.name}`,
        activatorPort: bk.status?.autoscaling?.activatorPort,
        pods: o.caches.pods(bk),
        service: o.caches.service(bk),
      })),
    ...workloadSources(),
  ];
  const sync = startActivatorSync({ activator, logger: log, listSources: sources });

  let scaler: IdleScaler | undefined;
  const routes = routeWriter(o.kc, o.endpointSliceVersion);
  // announced once the caches have synced and the activator listens (announce())
  let replicas: ActivatorRegistry | undefined;
  const ownAddresses = [...o.settings.activator.addresses].sort();
  const autoscale = autoscaleReconciler({
    kc: o.kc,
    logger: o.logger,
    events: o.events,
    registry: o.registry,
    tokens: fenceTokens(o.kc.makeApiClient(CoreV1Api)),
    routes,
    activator: o.settings.activator,
    routeAddresses: () => replicas?.addresses() ?? ownAddresses,
    scaler: () => scaler,
    takenPorts: () => [
      ...o.caches.buildkits().flatMap((bk) => bk.status?.autoscaling?.activatorPort ?? []),
      ...o.caches
        .workloads()
        .flatMap(({ workload }) => readWorkloadState(workload).state.activatorPort ?? []),
    ],
    settleMs: o.settings.fenceSettleMs,
    requestTimeoutMs: 2000,
    now: () => new Date(),
  });
  if (o.settings.activator.addresses.length === 0) {
    o.logger.warn(
      { reason: 'no --activator-address and no POD_IP' },
      'scale to zero is off: autoscaled instances stay awake',
    );
  }

  const reconcileWorkload = workloadReconciler({
    kc: o.kc,
    logger: o.logger,
    events: o.events,
    autoscale,
    routes,
    getWorkload: (kind, namespace, name) => o.caches.workload(kind, namespace, name),
    podsOf: (w) => o.caches.workloadPods(w),
    servicesIn: (namespace) => o.caches.servicesIn(namespace),
    minIdleTimeoutMs: o.settings.minIdleTimeoutMs,
    forget: (key) => autoscale.forget(key),
    now: () => new Date(),
  });

  return {
    autoscale,
    reconcileWorkload,
    /** a target, one of its pods or a Service changed (key: the target's, when known) */
    changed(key?: string) {
      sync.schedule();
      if (key && scaler) scaler.poke(key);
    },
    /** the idle scaler for one leadership term */
    lead(signal: AbortSignal): Promise<void> {
      const term = startIdleScaler({
        logger: o.logger,
        registry: o.registry,
        listTargets: () => [
          ...idleTargets(o.caches.buildkits(), templateOf, o.caches.pods),
          ...workloadIdleTargets(),
        ],
        onChange: (key) => (isWorkloadKey(key) ? o.enqueueWorkload(key) : o.enqueueBuildkit(key)),
        intervalMs: o.settings.scaleIntervalMs,
        readTimeoutMs: 1000,
      });
      scaler = term;
      return new Promise<void>((resolve) => {
        const end = () => {
          if (scaler === term) scaler = undefined;
          void term.stop().then(resolve);
        };
        if (signal.aborted) end();
        else signal.addEventListener('abort', end, { once: true });
      });
    },
    /** the caches have synced: listen for every target, then tell the other replicas */
    async announce() {
      await sync.sync();
      replicas ??= startActivatorRegistry({
        kc: o.kc,
        logger: o.logger,
        ...o.settings.registry,
        own: o.settings.activator.addresses,
        lingerMs: Math.min(15_000, o.settings.registry.leaseDurationMs / 3 + o.settings.fenceSettleMs),
        onChange: () => o.enqueueAll(),
      });
    },
    async stop() {
      // leave the others' routes first (the registry lingers until they have), then stop
      // listening; the sync goes on while draining, so held clients are still spliced once
      // their target runs (another replica leads the wake), and builds already spliced finish
      await replicas?.stop();
      await activator.drain();
      sync.stop();
      await activator.close();
    },
  };
}

export type Autoscaling = ReturnType<typeof startAutoscaling>;
