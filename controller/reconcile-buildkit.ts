// Buildkit -> one buildkitd Pod + one Service (+ with spec.persistence one PersistentVolumeClaim,
// created before the pod and never deleted here) + status. Reads come from the informer caches;
// decisions from planBuildkit (pure); this module only carries them out and writes the status.
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import type {
  KubeConfig,
  V1ObjectReference,
  V1PersistentVolumeClaim,
  V1Pod,
  V1Service,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';

import type { ConditionReason } from '../api/conditions.ts';
import { CONDITION, EVENT_REASON, POD_DELETION_REASON, REASON } from '../api/conditions.ts';
import { BUILDKIT, GROUP, VERSION } from '../api/group.ts';
import type {
  Buildkit,
  BuildkitAutoscalingStatus,
  BuildkitStatus,
  BuildkitTemplate,
} from '../api/types.generated.ts';
import type { AutoscalePlan } from './autoscale/plan.ts';
import { withAutoscaling } from './autoscale/plan.ts';
import type { AutoscaleStep, PreparedPlan } from './autoscale/reconcile-autoscale.ts';
import { ROUTE_RECHECK_MS, isAutoscaled } from './autoscale/reconcile-autoscale.ts';
import { buildkitAutoscaleContext } from './autoscale/buildkit-target.ts';
import { SPEC_HASH_ANNOTATION } from '../api/labels.ts';
import type { BuildkitObservation, ClaimObservation } from './buildkit-plan.ts';
import { planBuildkit } from './buildkit-plan.ts';
import { mergeConditions, sameConditions } from './conditions.ts';
import type { EventRecorder } from './events.ts';
import { BuildError, serviceNameFor } from './meta.ts';
import { buildService, renderPod } from './pod-builder.ts';
import { buildPvc } from './pvc-builder.ts';
import { mergePatch } from './reconcile-template.ts';
import { apiErrorText, errorStatus, isConflict, isForbidden, isNotFound } from '../kube/errors.ts';
import type { ServerFeatures } from '../kube/server-features.ts';

export type ReconcileResult = 'done' | 'retry' | { requeueAfter: number };

export interface BuildkitReconcilerDeps {
  kc: KubeConfig;
  logger: Logger;
  events: EventRecorder;
  features: ServerFeatures;
  getBuildkit(namespace: string, name: string): Buildkit | undefined;
  getTemplate(namespace: string, name: string): BuildkitTemplate | undefined;
  /** pods in the namespace carrying the Buildkit's instance label (ownership is checked here) */
  listPods(namespace: string, buildkitName: string): V1Pod[];
  getService(namespace: string, name: string): V1Service | undefined;
  /** PersistentVolumeClaims labelled managed-by buildkit-fleet (spec.persistence) */
  getPvc(namespace: string, name: string): V1PersistentVolumeClaim | undefined;
  /** scale to zero (controller/autoscale/); without it autoscaled templates only get the sidecar */
  autoscale?: AutoscaleStep;
  /** whether Services can be routed to activators (scale to zero is on) */
  activatorsRoute?: boolean;
  now?: () => Date;
}

/** Replacing pods that keep failing (evicted again and again) slows down: 10 s, 20 s, ... 5 min. */
const REPLACE_BACKOFF_MS = 10_000;
const REPLACE_BACKOFF_MAX_MS = 300_000;
/** How soon a claim that could not be created (name taken outside the cache, 403, 422) is tried again. */
const CLAIM_RECHECK_MS = 30_000;

export function buildkitReconciler(deps: BuildkitReconcilerDeps) {
  const core = deps.kc.makeApiClient(CoreV1Api);
  const custom = deps.kc.makeApiClient(CustomObjectsApi);
  const now = deps.now ?? (() => new Date());
  const replacements = new Map<string, { count: number; last: number }>();

  return async (namespace: string, name: string): Promise<ReconcileResult> => {
    const buildkit = deps.getBuildkit(namespace, name);
    if (!buildkit || buildkit.metadata?.deletionTimestamp) return 'done'; // GC removes pod and Service
    const key = `${namespace}/${name}`;
    const log = deps.logger.child({ kind: BUILDKIT.kind, namespace, name });
    const ref: V1ObjectReference = {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: BUILDKIT.kind,
      name,
      namespace,
      uid: buildkit.metadata!.uid!,
    };
    const template = deps.getTemplate(namespace, buildkit.spec.template);
    const uid = buildkit.metadata?.uid;
    const pods = deps
      .listPods(namespace, name)
      .filter((p) => p.metadata?.ownerReferences?.some((r) => r.controller && r.uid === uid));
    const serviceName = serviceNameFor(name);
    const existingService = deps.getService(namespace, serviceName);
    const serviceOwned = existingService?.metadata?.ownerReferences?.some(
      (r) => r.controller && r.uid === uid,
    );

    let rendered: ReturnType<typeof renderPod> | undefined;
    let claimBody: V1PersistentVolumeClaim | undefined;
    let buildError: { reason: ConditionReason; message: string } | undefined;
    if (template) {
      try {
        rendered = renderPod(template, buildkit, deps.features);
        claimBody = buildPvc(template, buildkit);
      } catch (error) {
        if (!(error instanceof BuildError)) throw error;
        buildError = { reason: error.reason, message: error.message };
      }
    }
    const claimName = claimBody?.metadata?.name;
    const observation: BuildkitObservation = {
      buildkit,
      template,
      pods,
      service: serviceOwned ? existingService : undefined,
      serviceConflict: Boolean(existingService && !serviceOwned),
      desiredSpecHash: rendered?.pod.metadata?.annotations?.[SPEC_HASH_ANNOTATION],
      ...(buildError ? { buildError } : {}),
      ...(claimName ? { claim: { name: claimName, found: deps.getPvc(namespace, claimName) } } : {}),
    };
    let plan = planBuildkit(observation);

    // Scale to zero: the autoscale step plans, routes the Service, and may fence the pod away.
    let autoPlan: PreparedPlan | undefined;
    const service = serviceOwned ? existingService : undefined;
    if (deps.autoscale && template && isAutoscaled(template) && !buildError) {
      const ctx = buildkitAutoscaleContext({ custom, buildkit, pods, service, ref, now });
      autoPlan = await deps.autoscale.prepare(ctx);
      if (autoPlan.scaleDown && (await deps.autoscale.scaleDown(ctx, autoPlan))) return 'done';
      plan = withAutoscaling(plan, autoPlan, service, Boolean(deps.activatorsRoute));
    }

    // spec.persistence: the claim before the pod. A create that fails is observed, then re-planned.
    let createdClaim: string | undefined;
    let result: ReconcileResult = 'done';
    if (plan.claim?.create && claimBody) {
      const outcome = await createClaim(core, namespace, claimBody);
      if (outcome === 'created') {
        createdClaim = `PersistentVolumeClaim ${plan.claim.name} (the build cache)`;
      } else {
        plan = planBuildkit({ ...observation, claim: { ...observation.claim!, ...outcome } });
        if (autoPlan) plan = withAutoscaling(plan, autoPlan, service, Boolean(deps.activatorsRoute));
        // a claim without our label never reaches the cache, and RBAC or a template fix may come
        // without an event on this Buildkit: look again later
        if (!plan.claim) result = { requeueAfter: CLAIM_RECHECK_MS };
      }
    }

    for (const victim of plan.deletePods) {
      try {
        await core.deleteNamespacedPod({ namespace, name: victim.name });
        deps.events.record(
          ref,
          'Normal',
          EVENT_REASON.DeletedPod,
          `deleted pod ${victim.name}: ${victim.reason}`,
        );
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
    }
    // A new Buildkit gets its Service and pod in one reconcile; one event says both, because on a
    // busy API server every event is a write competing with the pods' own status updates.
    let createdService: string | undefined;
    if (plan.createService && template) {
      try {
        await core.createNamespacedService({ namespace, body: buildService(template, buildkit) });
        createdService = `Service ${serviceName} (the stable endpoint)`;
      } catch (error) {
        if (!isConflict(error)) throw error;
      }
    }
    const createdPods: string[] = [];
    if (plan.createPod && rendered) {
      const history = replacements.get(key);
      const replacing = plan.deletePods.some((d) => d.reason === POD_DELETION_REASON.ReplacedEndedPod);
      const wait =
        history && replacing
          ? Math.min(REPLACE_BACKOFF_MS * 2 ** (history.count - 1), REPLACE_BACKOFF_MAX_MS) -
            (now().getTime() - history.last)
          : 0;
      if (wait > 0) {
        log.info(
          {
            decision: 'delay pod creation',
            reason: `replaced ${history!.count} ended pod(s) recently`,
            waitMs: wait,
          },
          'buildkit reconcile',
        );
        result = { requeueAfter: wait };
      } else {
        if (replacing) replacements.set(key, { count: (history?.count ?? 0) + 1, last: now().getTime() });
        const created = await core.createNamespacedPod({ namespace, body: rendered.pod });
        createdPods.push(created.metadata!.name!);
        const what = [`pod ${created.metadata?.name}`, ...(createdService ? [createdService] : [])];
        if (createdClaim) what.push(createdClaim);
        const listed =
          what.length > 2 ? `${what.slice(0, -1).join(', ')} and ${what.at(-1)}` : what.join(' and ');
        deps.events.record(ref, 'Normal', EVENT_REASON.CreatedPod, `created ${listed}`);
        createdService = undefined;
        createdClaim = undefined;
        for (const c of rendered.resources.clamped) {
          deps.events.record(
            ref,
            'Warning',
            EVENT_REASON.ResourcesClamped,
            `${c.field}: requested ${c.requested}, granted ${c.granted} (${c.reason})`,
          );
        }
      }
    }
    if (createdService)
      deps.events.record(ref, 'Normal', EVENT_REASON.CreatedService, `created ${createdService}`);
    if (createdClaim) deps.events.record(ref, 'Normal', EVENT_REASON.CreatedClaim, `created ${createdClaim}`);
    if (plan.phase === 'Running') replacements.delete(key);

    // List what was just created too: the caches see it a moment later, and waiting for them
    // would cost two more status writes per new Buildkit.
    const status = nextStatus(
      buildkit,
      plan,
      pods.filter((p) => !plan.deletePods.some((d) => d.name === p.metadata?.name)),
      createdPods,
      serviceOwned || plan.createService ? serviceName : undefined,
      plan.claim?.name,
      now(),
      autoPlan,
    );
    const changed = statusChanged(buildkit.status, status);
    if (changed) {
      try {
        await custom.patchNamespacedCustomObjectStatus(
          { group: GROUP, version: VERSION, namespace, plural: BUILDKIT.plural, name, body: { status } },
          mergePatch,
        );
      } catch (error) {
        if (isNotFound(error)) return 'done';
        throw error;
      }
      const readyNow = plan.conditions.find((c) => c.type === CONDITION.Ready);
      const readyBefore = buildkit.status?.conditions?.find((c) => c.type === CONDITION.Ready);
      if (readyNow?.reason === REASON.ClaimConflict && readyBefore?.reason !== REASON.ClaimConflict) {
        deps.events.record(ref, 'Warning', EVENT_REASON.ClaimConflict, readyNow.message);
      }
      // the first Pending is not news; reaching Running or Failed, or falling back, is
      const previous = buildkit.status?.phase;
      if (previous !== plan.phase && (plan.phase !== 'Pending' || previous === 'Running')) {
        deps.events.record(
          ref,
          plan.phase === 'Failed' ? 'Warning' : 'Normal',
          `Phase${plan.phase}`,
          plan.conditions.find((c) => c.type === CONDITION.Ready)?.message ?? plan.phase,
        );
      }
    }
    if (changed || plan.createPod || plan.deletePods.length || plan.createService || createdClaim) {
      log.info(
        { decision: plan.summary, phase: plan.phase, endpoint: plan.endpoint ?? null },
        'buildkit reconcile',
      );
    }
    // the route could not be written: everything else is done, look again for the route
    if (autoPlan?.routeError && result === 'done') return 'retry';
    if (autoPlan?.routeWaiting && result === 'done') return { requeueAfter: ROUTE_RECHECK_MS };
    return result;
  };
}

type Nullable<T> = { [K in keyof T]: T[K] | null };
type StatusPatch = Omit<BuildkitStatus, 'endpoint' | 'autoscaling'> & {
  endpoint: string | null;
  autoscaling?: Nullable<BuildkitAutoscalingStatus>;
};

/** status.autoscaling as a merge patch: a field the plan dropped is sent as null, which clears it. */
function autoscalingStatus(
  current: BuildkitStatus | undefined,
  auto: AutoscalePlan,
): Pick<StatusPatch, 'autoscaling' | 'lastActivityTime'> {
  const r = auto.record;
  return {
    autoscaling: {
      activatorPort: r.activatorPort ?? null,
      idleSince: r.idleSince ?? null,
      idleEvidence: r.idleEvidence ?? null,
      scaledToZeroTime: r.scaledToZeroTime ?? null,
      wakeStartTime: r.wakeStartTime ?? null,
    },
    ...(auto.lastActivityTime && auto.lastActivityTime !== current?.lastActivityTime
      ? { lastActivityTime: auto.lastActivityTime }
      : {}),
  };
}

function nextStatus(
  buildkit: Buildkit,
  plan: ReturnType<typeof planBuildkit>,
  pods: V1Pod[],
  createdPods: string[],
  serviceName: string | undefined,
  claimName: string | undefined,
  now: Date,
  auto: AutoscalePlan | undefined,
): StatusPatch {
  const generation = buildkit.metadata?.generation;
  const namespace = buildkit.metadata?.namespace ?? '';
  const refs = [
    ...pods
      .filter((p) => !p.metadata?.deletionTimestamp)
      .map((p) => ({ version: 'v1', kind: 'Pod', name: p.metadata!.name!, namespace })),
    ...createdPods.map((name) => ({ version: 'v1', kind: 'Pod', name, namespace })),
    ...(serviceName ? [{ version: 'v1', kind: 'Service', name: serviceName, namespace }] : []),
    ...(claimName ? [{ version: 'v1', kind: 'PersistentVolumeClaim', name: claimName, namespace }] : []),
  ];
  return {
    phase: plan.phase,
    // null clears it in a merge patch: no endpoint unless buildkitd is ready
    endpoint: plan.endpoint ?? null,
    observedGeneration: generation,
    conditions: mergeConditions(buildkit.status?.conditions, plan.conditions, generation, now),
    resourceRefs: refs,
    ...(auto ? autoscalingStatus(buildkit.status, auto) : {}),
  };
}

function sameAutoscaling(
  current: BuildkitAutoscalingStatus | undefined,
  next: StatusPatch['autoscaling'],
): boolean {
  if (!next) return true;
  const c = current ?? {};
  return (Object.keys(next) as (keyof BuildkitAutoscalingStatus)[]).every(
    (k) => JSON.stringify(c[k] ?? null) === JSON.stringify(next[k] ?? null),
  );
}

function statusChanged(current: BuildkitStatus | undefined, next: StatusPatch): boolean {
  return (
    !sameAutoscaling(current?.autoscaling, next.autoscaling) ||
    (next.lastActivityTime !== undefined && next.lastActivityTime !== current?.lastActivityTime) ||
    current?.phase !== next.phase ||
    (current?.endpoint ?? null) !== next.endpoint ||
    current?.observedGeneration !== next.observedGeneration ||
    !sameConditions(current?.conditions, next.conditions) ||
    JSON.stringify(current?.resourceRefs ?? []) !== JSON.stringify(next.resourceRefs)
  );
}

/**
 * Creates the claim. On 409 the name is taken: read it live (the cache may not have seen our own
 * claim yet, or it is somebody else's, which the cache never holds) for the plan to judge. A 403 or
 * 422 is a fact for the status, not a crash; anything else is retried with backoff.
 */
async function createClaim(
  core: CoreV1Api,
  namespace: string,
  body: V1PersistentVolumeClaim,
): Promise<'created' | Pick<ClaimObservation, 'found' | 'createError'>> {
  try {
    await core.createNamespacedPersistentVolumeClaim({ namespace, body });
    return 'created';
  } catch (error) {
    if (isConflict(error)) {
      return {
        found: await core.readNamespacedPersistentVolumeClaim({ namespace, name: body.metadata!.name! }),
      };
    }
    if (isForbidden(error) || errorStatus(error) === 422) {
      return { found: undefined, createError: apiErrorText(error) };
    }
    throw error;
  }
}
