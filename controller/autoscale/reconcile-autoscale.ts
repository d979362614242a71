// The autoscaling part of a target's reconcile (a Buildkit's, or an annotated workload's): decides
// with planAutoscale(), then makes sure of what the plan needs before the reconciler acts on the
// pods (the fence token Secret before a pod is created, the Service's route), and runs the fenced
// scale-down when the plan says so. Runs inside the target's reconcile, so nothing else touches
// the same object meanwhile. What differs by kind (where the record is written, how the pods go)
// comes in the context's writes.
import { CoreV1Api } from '@kubernetes/client-node';
import type {
  KubeConfig,
  V1ObjectReference,
  V1OwnerReference,
  V1Pod,
  V1Service,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Counter, Histogram, type Registry } from 'prom-client';

import { EVENT_REASON, REASON } from '../../api/conditions.ts';
import { parseDuration } from '../../api/duration.ts';
import type { Phase } from '../../api/group.ts';
import type { Buildkit, BuildkitAutoscalingStatus, BuildkitTemplate } from '../../api/types.generated.ts';
import { isNotFound } from '../../kube/errors.ts';
import type { EventRecorder } from '../events.ts';
import { allocateActivatorPort, decideRouteHandback } from './activator-route.ts';
import type { FenceTokens } from './fence-token.ts';
import type { IdleDecision } from './idle-decision.ts';
import type { IdleScaler, IdleTarget } from './idle-scaler.ts';
import type { AutoscalePlan } from './plan.ts';
import { planAutoscale } from './plan.ts';
import type { RouteWriter } from './route-writer.ts';
import { runScaleDown } from './scale-down.ts';
import type { TargetKind } from './target-kinds.ts';
import { targetKey } from './target-kinds.ts';
import { isPodReady } from '../../kube/pod-status.ts';

export interface ActivatorSettings {
  /** the addresses Services route to while their targets are at zero; empty: scale to zero is off */
  addresses: string[];
  ports: { first: number; last: number };
}

export interface AutoscaleDeps {
  kc: KubeConfig;
  logger: Logger;
  events: EventRecorder;
  registry: Registry;
  tokens: FenceTokens;
  routes: RouteWriter;
  activator: ActivatorSettings;
  /** every live replica's activator addresses (this one's included): where routes point */
  routeAddresses(): string[];
  /** the leader's idle scaler */
  scaler(): IdleScaler | undefined;
  /** the activator ports every target (of any kind) holds */
  takenPorts(): number[];
  settleMs: number;
  requestTimeoutMs: number;
  now(): Date;
}

/** The target as its object says it, whatever its kind. */
export interface AutoscaleTarget {
  kind: TargetKind;
  apiVersion: string;
  namespace: string;
  name: string;
  uid: string;
  record: BuildkitAutoscalingStatus | undefined;
  phase: Phase | undefined;
  wakeRequested: boolean;
}

/** The writes that differ by kind. */
export interface TargetWrites {
  /** records the target at zero before its pods go (a workload's write also sets replicas to 0) */
  recordZero(record: BuildkitAutoscalingStatus, zeroAt: string): Promise<void>;
  clearWakeRequest(): Promise<void>;
  /** whether the scale-down deletes the pods (false: recordZero made their controller do it) */
  deletesPods: boolean;
}

/**
 * The plan as prepare() carried it out. routeError: the route could not be written (retry);
 * routeWaiting: the route stays until the Service's endpoints list the ready pod (look again soon).
 */
export type PreparedPlan = AutoscalePlan & { routeError?: string; routeWaiting?: string };

/** How often a reconcile looks again while the route waits for the Service's endpoints. */
export const ROUTE_RECHECK_MS = 200;
/** The longest the route waits for them. */
export const ROUTE_HANDBACK_MAX_MS = 30_000;

export interface AutoscaleContext {
  target: AutoscaleTarget;
  /** the target's pods, terminating ones included */
  pods: V1Pod[];
  service: V1Service | undefined;
  ref: V1ObjectReference;
  writes: TargetWrites;
}

export const isAutoscaled = (template: BuildkitTemplate | undefined): boolean =>
  template?.spec?.autoscaling?.enabled === true;

const live = (pods: V1Pod[]) => pods.filter((p) => !p.metadata?.deletionTimestamp);

const later = (a: string | undefined, b: string | undefined) =>
  a === undefined ? b : b === undefined ? a : Date.parse(a) >= Date.parse(b) ? a : b;

/** The idle timeout of a template, in ms (the schema and the webhook guarantee the syntax). */
export function idleTimeoutMs(template: BuildkitTemplate): number {
  return parseDuration(template.spec?.autoscaling?.idleTimeout ?? '5m') ?? 300_000;
}

/** The awake autoscaled Buildkits the idle scaler should watch. */
export function idleTargets(
  buildkits: Buildkit[],
  templateOf: (bk: Buildkit) => BuildkitTemplate | undefined,
  podsOf: (bk: Buildkit) => V1Pod[],
): IdleTarget[] {
  const targets: IdleTarget[] = [];
  for (const bk of buildkits) {
    const template = templateOf(bk);
    if (!isAutoscaled(template) || bk.metadata?.deletionTimestamp) continue;
    const pods = live(podsOf(bk));
    if (pods.length === 0) continue;
    targets.push({
      key: `${bk.metadata?.namespace}/${bk.metadata?.name}`,
      idleTimeoutMs: idleTimeoutMs(template!),
      pods,
      record: bk.status?.autoscaling,
    });
  }
  return targets;
}

export function autoscaleReconciler(deps: AutoscaleDeps) {
  const core = deps.kc.makeApiClient(CoreV1Api);
  const metrics = autoscaleMetrics(deps.registry);
  // Records this leader wrote that the cache may not show yet (the later time of each wins).
  const written = new Map<string, BuildkitAutoscalingStatus>();
  const reservedPorts = new Map<string, number>();
  // Pods this leader removed that the cache may still show as running (uids, by target).
  const removed = new Map<string, Set<string>>();
  const runningPods = (key: string, pods: V1Pod[]) => {
    const gone = removed.get(key);
    const running = live(pods);
    if (!gone) return running;
    const still = running.filter((p) => gone.has(p.metadata?.uid ?? ''));
    if (still.length === 0) removed.delete(key); // the cache caught up
    return running.filter((p) => !gone.has(p.metadata?.uid ?? ''));
  };
  const routedToPod = new Set<string>();
  // When each target's route first waited for the Service's endpoints (ms).
  const handbackSince = new Map<string, number>();
  // A decision a fence already aborted on: the reconciles the abort's own writes set off must not
  // fence again on it; the idle scaler's next reading makes a new one.
  const decided = new Map<string, IdleDecision>();
  const aborted = new WeakSet<IdleDecision>();
  const currentDecision = (key: string): IdleDecision | undefined => {
    const d = deps.scaler()?.decision(key);
    if (d) decided.set(key, d);
    else decided.delete(key);
    if (!d || !aborted.has(d)) return d;
    return {
      ...d,
      scaleDown: false,
      reason: REASON.AwaitingFreshStats,
      message: 'the last scale-down was aborted: waiting for fresh sidecar readings',
    };
  };

  const effectiveRecord = (key: string, fromCache: BuildkitAutoscalingStatus | undefined) => {
    const mine = written.get(key);
    if (!mine) return fromCache;
    const merged = {
      ...fromCache,
      scaledToZeroTime: later(fromCache?.scaledToZeroTime, mine.scaledToZeroTime),
      wakeStartTime: later(fromCache?.wakeStartTime, mine.wakeStartTime),
    };
    if (
      merged.scaledToZeroTime === fromCache?.scaledToZeroTime &&
      merged.wakeStartTime === fromCache?.wakeStartTime
    ) {
      written.delete(key); // the cache caught up
    }
    return merged;
  };

  const portFor = (key: string, record: BuildkitAutoscalingStatus | undefined): number | undefined => {
    if (record?.activatorPort) return record.activatorPort;
    const reserved = reservedPorts.get(key);
    if (reserved) return reserved;
    const taken = new Set<number>([...reservedPorts.values(), ...deps.takenPorts()]);
    const port = allocateActivatorPort(deps.activator.ports, taken);
    if (port) reservedPorts.set(key, port);
    return port;
  };

  return {
    /** Plans autoscaling for this reconcile and puts in place what the pod and the Service need. */
    async prepare(ctx: AutoscaleContext): Promise<PreparedPlan> {
      const { target, service } = ctx;
      const { namespace, name, kind } = target;
      const key = targetKey(target);
      const pods = runningPods(key, ctx.pods);
      const record = effectiveRecord(key, target.record);
      const plan = planAutoscale({
        nowMs: deps.now().getTime(),
        record,
        phase: target.phase,
        wakeRequested: target.wakeRequested,
        pods,
        ready: pods.some(isPodReady),
        decision: currentDecision(key),
        // no activator to route to: no port either (and no listener in any replica)
        activatorPort: deps.activator.addresses.length > 0 ? portFor(key, record) : record?.activatorPort,
      });
      const log = deps.logger.child({ kind, namespace, name });
      if (plan.mayHavePod) await deps.tokens.ensure(namespace);
      if (plan.wakeStarts) {
        written.set(key, plan.record);
        metrics.wakes.inc({ kind });
        deps.events.record(ctx.ref, 'Normal', EVENT_REASON.WakeRequested, plan.condition.message);
        log.info({ decision: 'wake', reason: plan.condition.message }, 'autoscale');
      }
      if (target.phase === 'Waking' && plan.state === 'awake' && record?.wakeStartTime !== undefined) {
        const seconds = (deps.now().getTime() - Date.parse(record.wakeStartTime)) / 1000;
        metrics.wakeDuration.observe({ kind }, seconds);
        deps.events.record(ctx.ref, 'Normal', EVENT_REASON.Woke, `awake after ${seconds.toFixed(1)}s`);
        log.info({ decision: 'awake', wakeSeconds: seconds }, 'autoscale');
      }
      if (plan.clearWakeRequest) await ctx.writes.clearWakeRequest();

      const serviceName = service?.metadata?.name;
      const port = plan.record.activatorPort;
      // A route that cannot be written must not hold up the rest (a wake's pod, above all): the
      // reconcile goes on, and the caller retries for the route.
      let routeError: string | undefined;
      let routeWaiting: string | undefined;
      try {
        if (serviceName && plan.routeToActivator && port && deps.activator.addresses.length > 0) {
          const changed = await deps.routes.ensure({
            namespace,
            serviceName,
            portName: service.spec?.ports?.[0]?.name ?? '',
            activatorPort: port,
            addresses: deps.routeAddresses(),
            owner: ownerOf(target),
          });
          routedToPod.delete(key);
          handbackSince.delete(key);
          if (changed)
            log.info({ decision: 'route to the activators', reason: plan.condition.message }, 'autoscale');
        } else if (serviceName && !plan.routeToActivator && !routedToPod.has(key)) {
          const podIPs = pods.filter(isPodReady).flatMap((p) => (p.status?.podIP ? [p.status.podIP] : []));
          const nowMs = deps.now().getTime();
          const since = handbackSince.get(key) ?? nowMs;
          const step = decideRouteHandback({
            state: await deps.routes.state(namespace, serviceName, podIPs),
            hasSelector: Object.keys(service.spec?.selector ?? {}).length > 0,
            waitedMs: nowMs - since,
            maxWaitMs: ROUTE_HANDBACK_MAX_MS,
          });
          if (step.action === 'wait') {
            if (!handbackSince.has(key))
              log.info({ decision: 'keep the route', reason: step.reason }, 'autoscale');
            handbackSince.set(key, since);
            routeWaiting = step.reason;
          } else {
            if (step.action === 'remove' && (await deps.routes.remove(namespace, serviceName))) {
              log[step.gaveUp ? 'warn' : 'info'](
                { decision: 'route to the pod', reason: step.reason },
                'autoscale',
              );
            }
            handbackSince.delete(key);
            routedToPod.add(key);
          }
        }
      } catch (error) {
        routeError = (error as Error).message;
        log.warn({ decision: 'route', err: routeError }, 'the route could not be written: retrying');
      }
      if (routeError) return { ...plan, routeError };
      return routeWaiting ? { ...plan, routeWaiting } : plan;
    },

    /** The fenced scale-down; resolves with true when the pods are gone. */
    async scaleDown(ctx: AutoscaleContext, plan: AutoscalePlan): Promise<boolean> {
      const { target, service } = ctx;
      const { namespace, name, kind } = target;
      const key = targetKey(target);
      const log = deps.logger.child({ kind, namespace, name });
      const port = plan.record.activatorPort;
      const [firstActivator] = deps.activator.addresses;
      if (!service?.metadata?.name || !port || firstActivator === undefined) {
        log.info(
          { decision: 'stay awake', reason: 'scale to zero is off: the controller has no activator address' },
          'autoscale',
        );
        return false;
      }
      const pods = live(ctx.pods);
      const token = await deps.tokens.ensure(namespace);
      const zeroAt = deps.now().toISOString();
      const started = Date.now();
      const outcome = await runScaleDown({
        pods,
        evidence: plan.record.idleEvidence ?? [],
        token,
        handoff: { host: firstActivator, port },
        requestTimeoutMs: deps.requestTimeoutMs,
        settleMs: deps.settleMs,
        routeToActivator: async () => {
          routedToPod.delete(key);
          await deps.routes.ensure({
            namespace,
            serviceName: service.metadata!.name!,
            portName: service.spec?.ports?.[0]?.name ?? '',
            activatorPort: port,
            addresses: deps.routeAddresses(),
            owner: ownerOf(target),
          });
        },
        recordZero: async () => {
          const record = { ...plan.record, scaledToZeroTime: zeroAt };
          await ctx.writes.recordZero(record, zeroAt);
          written.set(key, record);
        },
        deletePod: !ctx.writes.deletesPods
          ? undefined
          : async (pod) => {
              try {
                await core.deleteNamespacedPod({
                  namespace,
                  name: pod.metadata!.name!,
                  body: { preconditions: { uid: pod.metadata!.uid! } },
                });
              } catch (error) {
                if (!isNotFound(error)) throw error;
              }
            },
      });
      metrics.fenceSeconds.observe((Date.now() - started) / 1000);
      const removal = ctx.writes.deletesPods ? 'removed pod(s)' : 'scaled to 0 replicas, removing';
      if (outcome.scaled) {
        removed.set(key, new Set(pods.map((p) => p.metadata?.uid ?? '')));
        metrics.scaleDowns.inc({ kind, outcome: 'scaled' });
        const message = `scaled to zero: ${plan.condition.message}; ${removal} ${outcome.pods.join(', ')}, the claim and endpoint stay`;
        deps.events.record(ctx.ref, 'Normal', EVENT_REASON.ScaledToZero, message);
        log.info(
          { decision: 'scaled to zero', reason: plan.condition.message, pods: outcome.pods },
          'autoscale',
        );
        return true;
      }
      metrics.scaleDowns.inc({ kind, outcome: 'aborted' });
      deps.events.record(
        ctx.ref,
        'Normal',
        EVENT_REASON.ScaleDownAborted,
        `scale-down aborted: ${outcome.reason}`,
      );
      log.info({ decision: 'scale-down aborted', reason: outcome.reason }, 'autoscale');
      const on = decided.get(key);
      if (on) aborted.add(on);
      return false;
    },

    /** A wake this reconcile started did not land (its write conflicted): forget its record. */
    unwrite(key: string) {
      written.delete(key);
    },

    forget(key: string) {
      written.delete(key);
      reservedPorts.delete(key);
      routedToPod.delete(key);
      handbackSince.delete(key);
      removed.delete(key);
      decided.delete(key);
    },
  };
}

/** The route goes with its target: owned by it, so deleting the target removes the route. */
function ownerOf(t: AutoscaleTarget): V1OwnerReference {
  // blockOwnerDeletion needs update on the owner's finalizers where OwnerReferencesPermission-
  // Enforcement runs; the controller has that for Buildkits, not for the user's workloads
  return {
    apiVersion: t.apiVersion,
    kind: t.kind,
    name: t.name,
    uid: t.uid,
    controller: true,
    blockOwnerDeletion: t.kind === 'Buildkit',
  };
}

function autoscaleMetrics(registry: Registry) {
  const get = <T>(name: string, make: () => T): T =>
    (registry.getSingleMetric(name) as T | undefined) ?? make();
  return {
    wakes: get(
      'buildkit_fleet_wakes_total',
      () =>
        new Counter({
          name: 'buildkit_fleet_wakes_total',
          help: 'Wakes started, by target kind.',
          labelNames: ['kind'],
          registers: [registry],
        }),
    ),
    wakeDuration: get(
      'buildkit_fleet_wake_duration_seconds',
      () =>
        new Histogram({
          name: 'buildkit_fleet_wake_duration_seconds',
          help: 'From the wake request to a ready pod, by target kind.',
          labelNames: ['kind'],
          buckets: [0.5, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120],
          registers: [registry],
        }),
    ),
    scaleDowns: get(
      'buildkit_fleet_scale_downs_total',
      () =>
        new Counter({
          name: 'buildkit_fleet_scale_downs_total',
          help: 'Fenced scale-downs by outcome (scaled, or aborted because a connection or an unknown blocked it).',
          labelNames: ['kind', 'outcome'],
          registers: [registry],
        }),
    ),
    fenceSeconds: get(
      'buildkit_fleet_fence_duration_seconds',
      () =>
        new Histogram({
          name: 'buildkit_fleet_fence_duration_seconds',
          help: 'Time a fenced scale-down took, from the fence to the pods removed or the abort.',
          buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10],
          registers: [registry],
        }),
    ),
  };
}

/** What the Buildkit reconciler calls. */
export type AutoscaleStep = Pick<ReturnType<typeof autoscaleReconciler>, 'prepare' | 'scaleDown' | 'unwrite'>;
