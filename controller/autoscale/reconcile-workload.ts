// An annotated StatefulSet or Deployment -> scale to zero and back (the "buildkitd stack" shape).
// The same planning, fence and activator as a Buildkit's (reconcile-autoscale.ts); what differs:
// - the record lives in one annotation on the workload (a workload's status is its own
//   controller's), written with the replicas in one preconditioned patch when they change;
// - scaling down sets spec.replicas to 0 (the workload's controller removes the pods, and a
//   StatefulSet keeps the claims of its volumeClaimTemplates); a wake restores the replicas;
// - the Service is the user's own: the route is an extra EndpointSlice, no Service field changes.
// Someone else setting the replicas (`kubectl scale`, `kubectl apply`, `helm upgrade`) is taken
// as it is, never fought: replicas set above 0 at zero is a wake, set to 0 while awake is a
// scale to zero that a client's connection undoes.
import { CustomObjectsApi } from '@kubernetes/client-node';
import type { KubeConfig, V1ObjectReference, V1Pod, V1Service } from '@kubernetes/client-node';
import type { Logger } from 'pino';

import { EVENT_REASON, REASON } from '../../api/conditions.ts';
import { AUTOSCALING_STATE_ANNOTATION, WAKE_REQUESTED_ANNOTATION } from '../../api/labels.ts';
import { isConflict, isNotFound } from '../../kube/errors.ts';
import { isPodReady } from '../../kube/pod-status.ts';
import type { EventRecorder } from '../events.ts';
import { mergePatch } from '../reconcile-template.ts';
import { isAtZero } from './plan.ts';
import type { AutoscaleContext, AutoscaleStep } from './reconcile-autoscale.ts';
import { ROUTE_RECHECK_MS } from './reconcile-autoscale.ts';
import type { RouteWriter } from './route-writer.ts';
import type { TargetName, WorkloadKind } from './target-kinds.ts';
import { TARGET_RESOURCES, parseTargetKey } from './target-kinds.ts';
import { clearWakeRequest } from './wake-request.ts';
import type { Workload, WorkloadSettings, WorkloadState } from './workload-config.ts';
import {
  isOptedIn,
  readWorkloadState,
  replicasOnWake,
  workloadSettings,
  writeWorkloadState,
} from './workload-config.ts';

export type WorkloadResult = 'done' | 'retry' | { requeueAfter: number };

export interface WorkloadReconcilerDeps {
  kc: KubeConfig;
  logger: Logger;
  events: EventRecorder;
  autoscale: AutoscaleStep;
  routes: RouteWriter;
  getWorkload(kind: WorkloadKind, namespace: string, name: string): Workload | undefined;
  /** the workload's pods (opted in, matching its selector), terminating ones included */
  podsOf(workload: Workload): V1Pod[];
  servicesIn(namespace: string): readonly V1Service[];
  minIdleTimeoutMs: number;
  /** the target is gone or opted out: drop what the autoscale step remembers of it */
  forget(key: string): void;
  now(): Date;
}

const live = (pods: V1Pod[]) => pods.filter((p) => !p.metadata?.deletionTimestamp);

function refOf(w: Workload, t: TargetName): V1ObjectReference {
  return {
    apiVersion: 'apps/v1',
    kind: t.kind,
    namespace: t.namespace,
    name: t.name,
    uid: w.metadata?.uid,
    resourceVersion: w.metadata?.resourceVersion,
  };
}

/** The annotations and replicas to write (pure): undefined fields are left as they are. */
export interface WorkloadWrite {
  state?: WorkloadState;
  replicas?: number;
}

export function workloadReconciler(deps: WorkloadReconcilerDeps) {
  const custom = deps.kc.makeApiClient(CustomObjectsApi);
  // the last configuration error reported per target: one Warning per distinct problem
  const reported = new Map<string, string>();

  async function write(t: TargetName, w: Workload, change: WorkloadWrite): Promise<void> {
    const body: Record<string, unknown> = {
      metadata: {
        // written only on what this reconcile saw: a concurrent change (or a cache that has not
        // caught up with this controller's own last write) wins, and the next reconcile looks again
        resourceVersion: w.metadata?.resourceVersion,
        ...(change.state
          ? { annotations: { [AUTOSCALING_STATE_ANNOTATION]: writeWorkloadState(change.state) } }
          : {}),
      },
      ...(change.replicas !== undefined ? { spec: { replicas: change.replicas } } : {}),
    };
    await custom.patchNamespacedCustomObject(
      { ...TARGET_RESOURCES[t.kind], namespace: t.namespace, name: t.name, body },
      mergePatch,
    );
  }

  const writeOrRetry = (t: TargetName, w: Workload, change: WorkloadWrite): Promise<'written' | 'retry'> =>
    write(t, w, change).then(
      () => 'written' as const,
      (error: unknown) => {
        if (isConflict(error)) return 'retry' as const;
        throw error;
      },
    );

  async function optOut(key: string, t: TargetName, w: Workload, state: WorkloadState, why: string) {
    deps.forget(key);
    const stranded = isAtZero(state) && (w.spec?.replicas ?? 1) === 0;
    if (state.service) await deps.routes.remove(t.namespace, state.service);
    const body = {
      metadata: {
        resourceVersion: w.metadata?.resourceVersion,
        annotations: { [AUTOSCALING_STATE_ANNOTATION]: null, [WAKE_REQUESTED_ANNOTATION]: null },
      },
      ...(stranded ? { spec: { replicas: replicasOnWake(undefined, state) } } : {}),
    };
    await custom.patchNamespacedCustomObject(
      { ...TARGET_RESOURCES[t.kind], namespace: t.namespace, name: t.name, body },
      mergePatch,
    );
    deps.logger.info(
      {
        kind: t.kind,
        namespace: t.namespace,
        name: t.name,
        decision: 'stop autoscaling',
        reason: why,
        restoredReplicas: stranded,
      },
      'autoscale',
    );
  }

  function contextFor(
    t: TargetName,
    w: Workload,
    state: WorkloadState,
    pods: V1Pod[],
    service: V1Service | undefined,
    wakeRequested: boolean,
  ): AutoscaleContext {
    return {
      target: {
        ...t,
        apiVersion: 'apps/v1',
        uid: w.metadata?.uid ?? '',
        record: state,
        phase: state.phase,
        wakeRequested,
      },
      pods,
      service,
      ref: refOf(w, t),
      writes: {
        deletesPods: false,
        clearWakeRequest: () => clearWakeRequest(custom, t),
        async recordZero(record, zeroAt) {
          // read again: the replicas to restore are those of now, and a wake request or a
          // replica change since the decision aborts (the patch is preconditioned on this read)
          const fresh = (await custom.getNamespacedCustomObject({
            ...TARGET_RESOURCES[t.kind],
            namespace: t.namespace,
            name: t.name,
          })) as Workload;
          if (fresh.metadata?.annotations?.[WAKE_REQUESTED_ANNOTATION])
            throw new Error('a wake was requested meanwhile');
          const replicas = fresh.spec?.replicas ?? 1;
          if (replicas !== (w.spec?.replicas ?? 1))
            throw new Error(`its replicas changed to ${replicas} meanwhile`);
          // a rollout started since the fence would have pods nobody fenced
          if (fresh.metadata?.generation !== w.metadata?.generation)
            throw new Error('its spec changed meanwhile');
          const zero: WorkloadState = {
            ...state,
            ...record,
            phase: 'ScaledToZero',
            reason: REASON.ScaledToZero,
            message: `scaled to zero at ${zeroAt}; a client connecting to the Service wakes it`,
            replicas,
            scaledToZeroTime: zeroAt,
          };
          await write(t, fresh, { state: zero, replicas: 0 });
        },
      },
    };
  }

  return async function reconcileWorkload(key: string): Promise<WorkloadResult> {
    const t = parseTargetKey(key);
    if (t.kind === 'Buildkit') throw new Error(`not a workload key: ${key}`);
    const cached = deps.getWorkload(t.kind, t.namespace, t.name);
    // list items of built-in kinds come without their kind; messages name it
    const w = cached && { ...cached, kind: t.kind };
    const log = deps.logger.child({ kind: t.kind, namespace: t.namespace, name: t.name });
    if (!w || w.metadata?.deletionTimestamp) {
      deps.forget(key);
      reported.delete(key);
      return 'done';
    }
    const { state, error: stateError } = readWorkloadState(w);
    if (stateError) log.warn({ reason: stateError }, 'autoscaling state');
    const hasState = w.metadata?.annotations?.[AUTOSCALING_STATE_ANNOTATION] !== undefined;
    if (!isOptedIn(w)) {
      reported.delete(key);
      if (hasState) await optOut(key, t, w, state, 'the pod template no longer carries the autoscale label');
      return 'done';
    }
    const ref = refOf(w, t);
    const found = workloadSettings(w, deps.servicesIn(t.namespace), deps.minIdleTimeoutMs);
    if (!found.ok) {
      if (reported.get(key) !== found.error) {
        reported.set(key, found.error);
        deps.events.record(
          ref,
          'Warning',
          EVENT_REASON.AutoscalingMisconfigured,
          `stays awake: ${found.error}`,
        );
      }
      log.warn({ decision: 'stay awake', reason: found.error }, 'autoscale');
      if (hasState) await optOut(key, t, w, state, found.error);
      return 'done';
    }
    reported.delete(key);
    return reconcileConfigured(key, t, w, state, found.settings, log);
  };

  async function reconcileConfigured(
    key: string,
    t: TargetName,
    w: Workload,
    state: WorkloadState,
    settings: WorkloadSettings,
    log: Logger,
  ): Promise<WorkloadResult> {
    const replicas = w.spec?.replicas ?? 1;
    const atZero = isAtZero(state);
    const { service } = settings;
    if (state.service && state.service !== settings.serviceName)
      await deps.routes.remove(t.namespace, state.service);

    if (replicas === 0 && !atZero) {
      // scaled to 0 by someone else: at zero from now on, and a client's connection wakes it
      const zeroAt = deps.now().toISOString();
      const outcome = await writeOrRetry(t, w, {
        state: {
          ...state,
          phase: 'ScaledToZero',
          reason: REASON.ScaledToZero,
          message: `scaled to 0 replicas by someone else at ${zeroAt}; a client connecting to the Service wakes it`,
          service: settings.serviceName,
          scaledToZeroTime: zeroAt,
          idleSince: undefined,
          idleEvidence: undefined,
        },
      });
      if (outcome === 'retry') return 'retry';
      log.info({ decision: 'at zero', reason: 'its replicas were set to 0 by someone else' }, 'autoscale');
      return 'done';
    }
    // replicas above 0 at zero: someone scaled it up, which is a wake like a client's
    const wakeRequested =
      Boolean(w.metadata?.annotations?.[WAKE_REQUESTED_ANNOTATION]) || (atZero && replicas > 0);
    const pods = replicas === 0 ? [] : deps.podsOf(w);
    const ctx = contextFor(t, w, state, pods, service, wakeRequested);
    const plan = await deps.autoscale.prepare(ctx);
    if (plan.scaleDown && (await deps.autoscale.scaleDown(ctx, plan))) return 'done';

    const ready = live(pods).some(isPodReady);
    const result: WorkloadResult = plan.routeError
      ? 'retry'
      : plan.routeWaiting
        ? { requeueAfter: ROUTE_RECHECK_MS }
        : 'done';
    const next: WorkloadState = {
      ...state,
      ...plan.record,
      phase: plan.phase ?? (ready ? 'Running' : 'Pending'),
      reason: plan.condition.reason,
      message: plan.condition.message,
      service: settings.serviceName,
      ...(plan.lastActivityTime ? { lastActivityTime: plan.lastActivityTime } : {}),
    };
    const change: WorkloadWrite = {};
    if (plan.wakeStarts && replicas === 0) change.replicas = replicasOnWake(settings, state);
    const text = w.metadata?.annotations?.[AUTOSCALING_STATE_ANNOTATION];
    if (text !== writeWorkloadState(next)) change.state = next;
    if (change.state || change.replicas !== undefined) {
      try {
        await write(t, w, change);
      } catch (error) {
        // a wake that did not land is not one: the next reconcile starts it again
        if (plan.wakeStarts) deps.autoscale.unwrite(key);
        if (isConflict(error)) return 'retry';
        if (isNotFound(error)) return 'done';
        throw error;
      }
      if (change.replicas !== undefined) {
        log.info(
          { decision: 'scale up', replicas: change.replicas, reason: plan.condition.message },
          'autoscale',
        );
      }
    }
    return result;
  }
}

export type WorkloadReconcile = ReturnType<typeof workloadReconciler>;
