// `buildkit-fleet controller`: wires informers, work queues, reconcilers and leader election.
// Informers run on every replica (a new leader starts with warm caches); only the leader's
// queues process keys, and a new leadership term starts by enqueueing everything.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type {
  KubernetesObject,
  V1ConfigMap,
  V1PersistentVolumeClaim,
  V1Pod,
  V1Service,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Registry, collectDefaultMetrics } from 'prom-client';

import { BUILDKIT, BUILDKIT_TEMPLATE } from '../api/group.ts';
import type { Buildkit, BuildkitTemplate } from '../api/types.generated.ts';
import { loadKubeConfig } from '../kube/load-kube-config.ts';
import { readServerVersion } from '../kube/server-version.ts';
import { createLogger } from '../telemetry/logger.ts';
import { shutdownSignal } from '../telemetry/shutdown.ts';
import { startMetricsServer } from '../telemetry/metrics-server.ts';
import type { ParsedOptions } from '../flags/options.ts';
import { INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE } from '../api/labels.ts';
import { activatorSettings } from './autoscale/activator-settings.ts';
import { startAutoscaling } from './autoscale/wiring.ts';
import { kubeEventRecorder } from './events.ts';
import { labelValueForName, serviceNameFor } from './meta.ts';
import { buildkitReconciler } from './reconcile-buildkit.ts';
import { templateReconciler } from './reconcile-template.ts';
import {
  Informer,
  LeaderElector,
  WorkQueue,
  buildkitSource,
  buildkitTemplateSource,
  configMapSource,
  podSource,
  pvcSource,
  serviceSource,
} from '../kube/index.ts';
import type { Scope } from '../kube/sources.ts';
import { featuresFromVersionInfo } from '../kube/server-features.ts';

export { CONTROLLER_OPTIONS } from './options.ts';
import type { CONTROLLER_OPTIONS } from './options.ts';

export type ControllerOptions = ParsedOptions<typeof CONTROLLER_OPTIONS>;

export interface RunningController {
  isLeader(): boolean;
  metricsUrl: string;
  stop(): Promise<void>;
}

const keyOf = (o: KubernetesObject) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
const splitKey = (key: string): [string, string] => {
  const i = key.indexOf('/');
  return [key.slice(0, i), key.slice(i + 1)];
};
const controllerOwner = (o: KubernetesObject, kind: string) =>
  o.metadata?.ownerReferences?.find((r) => r.controller && r.kind === kind);

export async function startController(
  options: ControllerOptions,
  logger: Logger,
): Promise<RunningController> {
  const kc = loadKubeConfig(options.kubeconfig);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'buildkit_fleet_controller_' });
  const version = await readServerVersion(kc, logger);
  const features = featuresFromVersionInfo(version);
  logger.info({ server: version.gitVersion, features }, 'detected the API server');

  const namespace = options['watch-namespace'];
  const scope: Scope = namespace ? { namespace } : {};
  // only what we manage: never a cluster-wide cache of every pod
  const managed: Scope = { ...scope, labelSelector: `${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}` };
  const common = { kubeConfig: kc, logger, registry, resyncMs: options.resync * 1000 };
  const buildkits = new Informer<Buildkit & KubernetesObject>({
    ...common,
    name: 'buildkits',
    source: buildkitSource(kc, scope),
  });
  const templates = new Informer<BuildkitTemplate & KubernetesObject>({
    ...common,
    name: 'buildkittemplates',
    source: buildkitTemplateSource(kc, scope),
  });
  const pods = new Informer<V1Pod>({ ...common, name: 'pods', source: podSource(kc, managed) });
  const services = new Informer<V1Service>({
    ...common,
    name: 'services',
    source: serviceSource(kc, managed),
  });
  const configMaps = new Informer<V1ConfigMap>({
    ...common,
    name: 'configmaps',
    source: configMapSource(kc, managed),
  });
  // spec.persistence: the claims; a retained one has no owner, only the instance label
  const pvcs = new Informer<V1PersistentVolumeClaim>({
    ...common,
    name: 'persistentvolumeclaims',
    source: pvcSource(kc, managed),
  });
  const informers = [buildkits, templates, pods, services, configMaps, pvcs];

  const events = kubeEventRecorder(kc, logger);
  const ownedPods = (bk: Buildkit) =>
    pods
      .list(bk.metadata?.namespace)
      .filter(
        (p) =>
          p.metadata?.labels?.[INSTANCE_LABEL] === labelValueForName(bk.metadata?.name ?? '') &&
          p.metadata?.ownerReferences?.some((r) => r.controller && r.uid === bk.metadata?.uid),
      );
  // The queues of the current leadership term; undefined while not leading.
  let queues: { buildkits: WorkQueue<string>; templates: WorkQueue<string> } | undefined;
  const enqueueBuildkit = (key: string) => queues?.buildkits.add(key);
  const settings = activatorSettings(options['activator-address'], options['activator-ports']);
  const autoscaling = startAutoscaling({
    kc,
    logger,
    registry,
    events,
    settings: {
      activator: settings,
      listenHost: options['activator-listen-host'],
      maxHeld: options['activator-max-held'],
      holdTimeoutMs: options['activator-hold-timeout'] * 1000,
      scaleIntervalMs: options['scale-interval'] * 1000,
      fenceSettleMs: options['fence-settle'] * 1000,
    },
    caches: {
      buildkits: () => [...buildkits.list()],
      template: (ns, name) => templates.get(ns, name),
      pods: ownedPods,
      service: (bk) => {
        const service = services.get(bk.metadata?.namespace ?? '', serviceNameFor(bk.metadata?.name ?? ''));
        return service?.metadata?.ownerReferences?.some((r) => r.controller && r.uid === bk.metadata?.uid)
          ? service
          : undefined;
      },
    },
    enqueueBuildkit,
    endpointSliceVersion: features.endpointSliceVersion,
  });

  const reconcileBuildkit = buildkitReconciler({
    kc,
    logger,
    events,
    autoscale: autoscaling.autoscale,
    activatorsRoute: settings.addresses.length > 0,
    features,
    getBuildkit: (ns, name) => buildkits.get(ns, name),
    getTemplate: (ns, name) => templates.get(ns, name),
    listPods: (ns, name) =>
      pods.list(ns).filter((p) => p.metadata?.labels?.[INSTANCE_LABEL] === labelValueForName(name)),
    getService: (ns, name) => services.get(ns, name),
    getPvc: (ns, name) => pvcs.get(ns, name),
  });
  const reconcileTemplate = templateReconciler({
    kc,
    logger,
    getTemplate: (ns, name) => templates.get(ns, name),
    getConfigMap: (ns, name) => configMaps.get(ns, name),
  });

  const enqueueTemplate = (key: string) => queues?.templates.add(key);
  const onTemplate = (t: BuildkitTemplate & KubernetesObject) => {
    enqueueTemplate(keyOf(t));
    // instances waiting for this template, or now running an outdated one
    for (const bk of buildkits.list(t.metadata?.namespace)) {
      if (bk.spec?.template === t.metadata?.name) enqueueBuildkit(keyOf(bk));
    }
  };
  const onOwned = (kind: string, enqueue: (key: string) => void) => (o: KubernetesObject) => {
    const owner = controllerOwner(o, kind);
    if (owner) enqueue(`${o.metadata?.namespace}/${owner.name}`);
  };
  buildkits.addEventHandler({
    onAdd: (o) => enqueueBuildkit(keyOf(o)),
    onUpdate: (o) => enqueueBuildkit(keyOf(o)),
    onDelete: (o) => enqueueBuildkit(keyOf(o)),
  });
  // The activator follows every change of a Buildkit, its pods and its Service, in every replica;
  // the leader's idle scaler reads a target's sidecars again when its pods change.
  const activatorFollows = (o: KubernetesObject) => {
    const owner = controllerOwner(o, BUILDKIT.kind);
    autoscaling.changed(owner ? buildkits.get(o.metadata?.namespace ?? '', owner.name) : undefined);
  };
  for (const informer of [buildkits, pods, services] as Informer<KubernetesObject>[]) {
    informer.addEventHandler({
      onAdd: activatorFollows,
      onUpdate: activatorFollows,
      onDelete: activatorFollows,
    });
  }
  templates.addEventHandler({ onAdd: onTemplate, onUpdate: onTemplate, onDelete: onTemplate });
  // A claim queues its owner or, retained (no owner), the Buildkit its instance label names.
  const onClaim = (claim: V1PersistentVolumeClaim) => {
    if (controllerOwner(claim, BUILDKIT.kind)) return onOwned(BUILDKIT.kind, enqueueBuildkit)(claim);
    const instance = claim.metadata?.labels?.[INSTANCE_LABEL];
    for (const bk of buildkits.list(claim.metadata?.namespace)) {
      if (labelValueForName(bk.metadata?.name ?? '') === instance) enqueueBuildkit(keyOf(bk));
    }
  };
  pvcs.addEventHandler({ onAdd: onClaim, onUpdate: onClaim, onDelete: onClaim });
  for (const [informer, kind, enqueue] of [
    [pods, BUILDKIT.kind, enqueueBuildkit],
    [services, BUILDKIT.kind, enqueueBuildkit],
    [configMaps, BUILDKIT_TEMPLATE.kind, enqueueTemplate],
  ] as const) {
    const handler = onOwned(kind, enqueue);
    (informer as Informer<KubernetesObject>).addEventHandler({
      onAdd: handler,
      onUpdate: handler,
      onDelete: handler,
    });
  }

  for (const informer of informers) informer.start();
  await Promise.all(informers.map((i) => i.waitForSync({ timeoutMs: 120_000 })));
  logger.info({ namespace: namespace ?? '(all)' }, 'caches synced');

  const lead = async (signal: AbortSignal) => {
    const term = {
      buildkits: new WorkQueue<string>({ name: 'buildkits', logger, registry }),
      templates: new WorkQueue<string>({ name: 'buildkittemplates', logger, registry }),
    };
    queues = term;
    for (const t of templates.list()) term.templates.add(keyOf(t));
    for (const b of buildkits.list()) term.buildkits.add(keyOf(b));
    const running = [
      term.buildkits.run((key) => reconcileBuildkit(...splitKey(key)), options.workers),
      term.templates.run((key) => reconcileTemplate(...splitKey(key)), options.workers),
      autoscaling.lead(signal),
    ];
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      signal.addEventListener('abort', () => resolve(), { once: true });
    });
    queues = undefined;
    await Promise.all([term.buildkits.shutdown(), term.templates.shutdown()]);
    await Promise.allSettled(running);
  };

  let elector: LeaderElector | undefined;
  let standalone: AbortController | undefined;
  let standaloneWork: Promise<void> | undefined;
  if (options['disable-leader-election']) {
    standalone = new AbortController();
    standaloneWork = lead(standalone.signal);
  } else {
    elector = new LeaderElector({
      namespace:
        options['leader-election-namespace'] ?? process.env['POD_NAMESPACE'] ?? namespace ?? 'default',
      name: options['leader-election-name'],
      identity: `${hostname()}_${randomBytes(4).toString('hex')}`,
      kubeConfig: kc,
      logger,
      registry,
      leaseDurationMs: options['leader-election-lease-duration'] * 1000,
      renewDeadlineMs: options['leader-election-renew-deadline'] * 1000,
      retryPeriodMs: options['leader-election-retry-period'] * 1000,
      onStartedLeading: (signal) => {
        logger.info('started leading: reconciling');
        return lead(signal);
      },
      onStoppedLeading: () => logger.info('stopped leading: standing by'),
    });
    elector.start();
  }

  const metrics = await startMetricsServer(options['metrics-listen'], registry, () =>
    informers.every((i) => i.hasSynced()),
  );
  let stopping: Promise<void> | undefined;
  return {
    isLeader: () => (elector ? elector.isLeader() : true),
    metricsUrl: metrics.url,
    stop: () =>
      (stopping ??= (async () => {
        if (elector) await elector.stop();
        standalone?.abort();
        await standaloneWork;
        await autoscaling.stop();
        await Promise.all(informers.map((i) => i.stop()));
        await metrics.close();
        logger.info('controller stopped');
      })()),
  };
}

export async function runControllerCommand(options: ControllerOptions): Promise<number> {
  const logger = createLogger({ level: options['log-level'], component: 'controller' });
  const signalled = shutdownSignal();
  const controller = await startController(options, logger);
  logger.info({ signal: await signalled }, 'shutting down');
  await controller.stop();
  return 0;
}
