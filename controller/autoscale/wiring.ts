// Scale to zero, wired into the controller process: the activator and its sync run in every
// replica; the idle scaler runs only while this replica leads; the autoscale step is what the
// Buildkit reconciler calls.
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import type { KubeConfig, V1Pod, V1Service } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

import { createActivator } from '../../activator/index.ts';
import type { Buildkit, BuildkitTemplate } from '../../api/types.generated.ts';
import type { EventRecorder } from '../events.ts';
import { startActivatorSync } from './activator-sync.ts';
import type { TargetSource } from './activator-targets.ts';
import { fenceTokens } from './fence-token.ts';
import type { IdleScaler } from './idle-scaler.ts';
import { startIdleScaler } from './idle-scaler.ts';
import type { ActivatorSettings } from './reconcile-autoscale.ts';
import { autoscaleReconciler, idleTargets, isAutoscaled } from './reconcile-autoscale.ts';
import { routeWriter } from './route-writer.ts';
import { requestWake } from './wake-request.ts';

export interface AutoscalingSettings {
  activator: ActivatorSettings;
  listenHost: string;
  maxHeld: number;
  holdTimeoutMs: number;
  scaleIntervalMs: number;
  fenceSettleMs: number;
}

export interface AutoscalingCaches {
  buildkits(): Buildkit[];
  template(namespace: string, name: string): BuildkitTemplate | undefined;
  /** the Buildkit's pods (owned), terminating ones included */
  pods(bk: Buildkit): V1Pod[];
  service(bk: Buildkit): V1Service | undefined;
}

export function startAutoscaling(o: {
  kc: KubeConfig;
  logger: Logger;
  registry: Registry;
  events: EventRecorder;
  settings: AutoscalingSettings;
  caches: AutoscalingCaches;
  enqueueBuildkit(key: string): void;
  endpointSliceVersion: 'v1' | 'v1beta1';
}) {
  const custom = o.kc.makeApiClient(CustomObjectsApi);
  const log = o.logger.child({ component: 'activator' });
  const templateOf = (bk: Buildkit) =>
    o.caches.template(bk.metadata?.namespace ?? '', bk.spec?.template ?? '');
  const activator = createActivator({
    logger: log,
    registry: o.registry,
    listenHost: o.settings.listenHost,
    maxHeldPerTarget: o.settings.maxHeld,
    holdTimeoutMs: o.settings.holdTimeoutMs,
    onWake(key) {
      const [namespace, name] = key.split('/') as [string, string];
      requestWake(custom, namespace, name, new Date().toISOString()).then(
        (outcome) =>
          log.info(
            { namespace, name, decision: 'wake', outcome, reason: 'a client is held' },
            'wake request',
          ),
        (error: Error) => log.error({ namespace, name, err: error.message }, 'wake request failed'),
      );
    },
  });
  const sources = (): TargetSource[] =>
    o.caches
      .buildkits()
      .filter((bk) => isAutoscaled(templateOf(bk)) && !bk.metadata?.deletionTimestamp)
      .map((bk) => ({
        key: `${bk.metadata?.namespace}/${bk.metadata?.name}`,
        activatorPort: bk.status?.autoscaling?.activatorPort,
        pods: o.caches.pods(bk),
        service: o.caches.service(bk),
      }));
  const sync = startActivatorSync({ activator, logger: log, listSources: sources });

  let scaler: IdleScaler | undefined;
  const autoscale = autoscaleReconciler({
    kc: o.kc,
    logger: o.logger,
    events: o.events,
    registry: o.registry,
    tokens: fenceTokens(o.kc.makeApiClient(CoreV1Api)),
    routes: routeWriter(o.kc, o.endpointSliceVersion),
    activator: o.settings.activator,
    scaler: () => scaler,
    listBuildkits: () => o.caches.buildkits(),
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

  return {
    autoscale,
    /** a Buildkit, pod or Service changed */
    changed(bk?: Buildkit) {
      sync.schedule();
      if (bk && scaler) scaler.poke(`${bk.metadata?.namespace}/${bk.metadata?.name}`);
    },
    /** the idle scaler for one leadership term */
    lead(signal: AbortSignal): Promise<void> {
      const term = startIdleScaler({
        logger: o.logger,
        registry: o.registry,
        listTargets: () => idleTargets(o.caches.buildkits(), templateOf, o.caches.pods),
        onChange: o.enqueueBuildkit,
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
    async stop() {
      sync.stop();
      await activator.close();
    },
  };
}

export type Autoscaling = ReturnType<typeof startAutoscaling>;
