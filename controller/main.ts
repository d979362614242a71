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
import { millisecondsOf, type ParsedOptions } from '../flags/options.ts';
import {
  AUTOSCALE_ENABLED,
  AUTOSCALE_LABEL,
  AUTOSCALING_STATE_ANNOTATION,
  INSTANCE_LABEL,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
} from '../api/labels.ts';
import { parseMinIdleTimeout } from '../flags/min-idle-timeout.ts';
import { selectorMatches } from './autoscale/label-selector.ts';
import type { WorkloadKind } from './autoscale/target-kinds.ts';
import { WORKLOAD_KINDS, targetKey } from './autoscale/target-kinds.ts';
import type { Workload } from './autoscale/workload-config.ts';
import { isOptedIn } from './autoscale/workload-config.ts';
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
  workloadSource,
} from '../kube/index.ts';
import type { SlimWorkload } from '../kube/index.ts';
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
  // every Service in scope: an annotated workload's client Service is the user's own
  const services = new Informer<V1Service>({
    ...common,
    name: 'services',
    source: serviceSource(kc, scope),
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
  // annotated StatefulSets and Deployments (slim: no pod specs), and their opted-in pods (the
  // Buildkits' pods carry the instance label and are in the managed cache already)
  const workloadInformers: Record<WorkloadKind, Informer<SlimWorkload & KubernetesObject>> = {
    StatefulSet: new Informer({
      ...common,
      name: 'statefulsets',
      source: workloadSource(kc, 'statefulsets', scope),
    }),
    Deployment: new Informer({
      ...common,
      name: 'deployments',
      source: workloadSource(kc, 'deployments', scope),
    }),
  };
  const workloadPods = new Informer<V1Pod>({
    ...common,
    name: 'workload-pods',
    source: podSource(kc, {
      ...scope,
      labelSelector: `${AUTOSCALE_LABEL}=${AUTOSCALE_ENABLED},!${INSTANCE_LABEL}`,
    }),
  });
  const informers = [
    buildkits,
    templates,
    pods,
    services,
    configMaps,
    pvcs,
    ...Object.values(workloadInformers),
    workloadPods,
  ] as Informer<KubernetesObject>[];

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
  let queues:
    { buildkits: WorkQueue<string>; templates: WorkQueue<string>; workloads: WorkQueue<string> } | undefined;
  const enqueueBuildkit = (key: string) => queues?.buildkits.add(key);
  const enqueueWorkload = (key: string) => queues?.workloads.add(key);
  const podsOfWorkload = (w: Workload) =>
    workloadPods
      .list(w.metadata?.namespace)
      .filter((p) => selectorMatches(w.spec?.selector, p.metadata?.labels));
  const workloadKey = (kind: WorkloadKind, w: Workload) =>
    targetKey({ kind, namespace: w.metadata?.namespace ?? '', name: w.metadata?.name ?? '' });
  /** the opted-in workloads of a namespace whose pods carry these labels */
  const workloadsSelecting = (namespace: string | undefined, labels: Record<string, string> | undefined) =>
    WORKLOAD_KINDS.flatMap((kind) =>
      workloadInformers[kind]
        .list(namespace)
        .filter((w) => isOptedIn(w) && selectorMatches(w.spec?.selector, labels))
        .map((w) => workloadKey(kind, w)),
    );
  const settings = activatorSettings(options['activator-address'], options['activator-ports']);
  const identity = `${hostname()}_${randomBytes(4).toString('hex')}`;
  const electionNamespace =
    options['leader-election-namespace'] ?? process.env['POD_NAMESPACE'] ?? namespace ?? 'default';
  const autoscaling = startAutoscaling({
    kc,
    logger,
    registry,
    events,
    settings: {
      activator: settings,
      listenHost: options['activator-listen-host'],
      maxHeld: options['activator-max-held'],
      holdTimeoutMs: millisecondsOf(options['activator-hold-timeout']),
      drainTimeoutMs: millisecondsOf(options['activator-drain-timeout']),
      scaleIntervalMs: options['scale-interval'] * 1000,
      fenceSettleMs: options['fence-settle'] * 1000,
      minIdleTimeoutMs: parseMinIdleTimeout(options['min-idle-timeout']),
      registry: {
        namespace: electionNamespace,
        identity,
        leaseDurationMs: options['leader-election-lease-duration'] * 1000,
      },
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
      workloads: () =>
        WORKLOAD_KINDS.flatMap((kind) =>
          workloadInformers[kind].list().map((workload) => ({ kind, workload })),
        ),
      workload: (kind, ns, name) => workloadInformers[kind].get(ns, name),
      workloadPods: podsOfWorkload,
      servicesIn: (ns) => services.list(ns),
    },
    enqueueBuildkit,
    enqueueWorkload,
    enqueueAll: () => {
      for (const b of buildkits.list()) enqueueBuildkit(keyOf(b));
      for (const kind of WORKLOAD_KINDS) {
        for (const w of workloadInformers[kind].list())
          if (isOptedIn(w)) enqueueWorkload(workloadKey(kind, w));
      }
    },
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
    const owner = o.kind === BUILDKIT.kind ? o.metadata : controllerOwner(o, BUILDKIT.kind);
    autoscaling.changed(owner ? `${o.metadata?.namespace}/${owner.name}` : undefined);
  };
  for (const informer of [buildkits, pods, services] as Informer<KubernetesObject>[]) {
    informer.addEventHandler({
      onAdd: activatorFollows,
      onUpdate: activatorFollows,
      onDelete: activatorFollows,
    });
  }
  templates.addEventHandler({ onAdd: onTemplate, onUpdate: onTemplate, onDelete: onTemplate });
  // Annotated workloads: a workload, one of its pods, or a Service of its namespace changed.
  for (const kind of WORKLOAD_KINDS) {
    const onWorkload = (w: SlimWorkload & KubernetesObject) => {
      const key = workloadKey(kind, w);
      // opted in, or opting out with state to clean up; every other workload is none of ours
      if (!isOptedIn(w) && !w.metadata?.annotations?.[AUTOSCALING_STATE_ANNOTATION]) return;
      enqueueWorkload(key);
      autoscaling.changed(key);
    };
    workloadInformers[kind].addEventHandler({
      onAdd: onWorkload,
      onUpdate: onWorkload,
      onDelete: onWorkload,
    });
  }
  const onWorkloadPod = (p: V1Pod) => {
    for (const key of workloadsSelecting(p.metadata?.namespace, p.metadata?.labels)) {
      enqueueWorkload(key);
      autoscaling.changed(key);
    }
  };
  workloadPods.addEventHandler({ onAdd: onWorkloadPod, onUpdate: onWorkloadPod, onDelete: onWorkloadPod });
  const onNamespaceService = (s: V1Service) => {
    if (controllerOwner(s, BUILDKIT.kind)) return;
    for (const kind of WORKLOAD_KINDS) {
      for (const w of workloadInformers[kind].list(s.metadata?.namespace)) {
        if (isOptedIn(w)) enqueueWorkload(workloadKey(kind, w));
      }
    }
  };
  services.addEventHandler({
    onAdd: onNamespaceService,
    onUpdate: onNamespaceService,
    onDelete: onNamespaceService,
  });
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
  await autoscaling.announce();

  const lead = async (signal: AbortSignal) => {
    const term = {
      buildkits: new WorkQueue<string>({ name: 'buildkits', logger, registry }),
      templates: new WorkQueue<string>({ name: 'buildkittemplates', logger, registry }),
      workloads: new WorkQueue<string>({ name: 'workloads', logger, registry }),
    };
    queues = term;
    for (const t of templates.list()) term.templates.add(keyOf(t));
    for (const b of buildkits.list()) term.buildkits.add(keyOf(b));
    for (const kind of WORKLOAD_KINDS) {
      for (const w of workloadInformers[kind].list()) {
        if (isOptedIn(w) || w.metadata?.annotations?.[AUTOSCALING_STATE_ANNOTATION]) {
          term.workloads.add(workloadKey(kind, w));
        }
      }
    }
    const running = [
      term.buildkits.run((key) => reconcileBuildkit(...splitKey(key)), options.workers),
      term.templates.run((key) => reconcileTemplate(...splitKey(key)), options.workers),
      term.workloads.run((key) => autoscaling.reconcileWorkload(key), options.workers),
      autoscaling.lead(signal),
    ];
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      signal.addEventListener('abort', () => resolve(), { once: true });
    });
    queues = undefined;
    await Promise.all([term.buildkits.shutdown(), term.templates.shutdown(), term.workloads.shutdown()]);
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
      namespace: electionNamespace,
      name: options['leader-election-name'],
      identity,
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
  logger.info({ metricsUrl: metrics.url }, 'serving metrics');
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
