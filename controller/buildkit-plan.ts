// What the Buildkit reconciler should do, decided from what it observed (pure): which pods to
// create or delete, whether the Service is missing, and the status to report. The reconciler
// (controller/reconcile-buildkit.ts) only carries the plan out.
//
// Failed-pod policy (documented in the README):
// - A pod that ended because activeDeadlineSeconds ran out is the instance's hard TTL: it is not
//   replaced and the Buildkit stays Failed (reason DeadlineExceeded).
// - With lifecycle.restartPolicy Never or OnFailure the admin chose one-shot builders: a pod that
//   ended (Failed or Succeeded) is not replaced; the Buildkit reports Failed.
// - Otherwise (restartPolicy Always, the default) a pod can only end by eviction, node loss or a
//   similar outside cause: it is deleted and replaced, with the controller's per-key backoff.
import type { V1PersistentVolumeClaim, V1Pod, V1Service } from '@kubernetes/client-node';

import type { ConditionReason } from '../api/conditions.ts';
import { CONDITION, POD_DELETION_REASON, REASON } from '../api/conditions.ts';
import { BUILDKIT } from '../api/group.ts';
import type { Phase } from '../api/group.ts';
import type { Buildkit, BuildkitTemplate } from '../api/types.generated.ts';
import type { DesiredCondition } from './conditions.ts';
import { INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SPEC_HASH_ANNOTATION } from '../api/labels.ts';
import { labelValueForName } from './meta.ts';
import { isPodReady } from '../kube/pod-status.ts';

export interface BuildkitObservation {
  buildkit: Buildkit;
  /** undefined: no such template in the namespace */
  template: BuildkitTemplate | undefined;
  /** pods whose controller owner reference is this Buildkit (found by label, checked by uid) */
  pods: V1Pod[];
  /** the Service owned by this Buildkit, if it exists */
  service: V1Service | undefined;
  /** a Service of that name exists but belongs to something else */
  serviceConflict?: boolean;
  /** spec-hash of the pod a fresh build would produce; undefined when it cannot be built */
  desiredSpecHash: string | undefined;
  /** why the pod cannot be built (BuildError), when it cannot */
  buildError?: { reason: ConditionReason; message: string };
  /** spec.persistence: the claim the pod mounts; absent when the template has no persistence */
  claim?: ClaimObservation;
}

export interface ClaimObservation {
  /** the claim's name (claimNameFor) */
  name: string;
  /** the claim of that name (from the cache, or read after a create conflict); undefined: none */
  found: V1PersistentVolumeClaim | undefined;
  /** the API server refused to create it (e.g. 403, 422): its message */
  createError?: string;
}

export interface BuildkitPlan {
  createPod: boolean;
  deletePods: { name: string; reason: string }[];
  createService: boolean;
  /** spec.persistence: the claim to create first, or to list in resourceRefs (create: false) */
  claim: { name: string; create: boolean } | undefined;
  phase: Phase;
  endpoint: string | undefined;
  conditions: DesiredCondition[];
  /** one line for the log: what was decided and why */
  summary: string;
}

const isTerminating = (pod: V1Pod) => Boolean(pod.metadata?.deletionTimestamp);
const hasEnded = (pod: V1Pod) => pod.status?.phase === 'Failed' || pod.status?.phase === 'Succeeded';
const isReady = isPodReady;
const created = (pod: V1Pod) => new Date(pod.metadata?.creationTimestamp ?? 0).getTime();

function podWaitReason(pod: V1Pod): { reason: ConditionReason; message: string } {
  const name = pod.metadata?.name ?? '(new pod)';
  if (pod.status?.phase !== 'Running') {
    const scheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled');
    if (scheduled?.status === 'False') {
      return {
        reason: REASON.PodUnschedulable,
        message: `pod ${name} cannot be scheduled: ${scheduled.message ?? scheduled.reason ?? 'no reason given'}`,
      };
    }
    const waiting = pod.status?.containerStatuses?.find((c) => c.state?.waiting)?.state?.waiting;
    const detail = waiting ? `: ${waiting.reason}${waiting.message ? ` (${waiting.message})` : ''}` : '';
    return {
      reason: REASON.PodPending,
      message: `pod ${name} is ${pod.status?.phase ?? 'Pending'}${detail}`,
    };
  }
  const notReady = pod.status?.containerStatuses?.filter((c) => !c.ready).map((c) => c.name) ?? [];
  return {
    reason: REASON.ContainerNotReady,
    message: `pod ${name} is running but ${notReady.length ? `container(s) ${notReady.join(', ')} not ready` : 'not ready'}`,
  };
}

function endedMessage(pod: V1Pod): string {
  const why = pod.status?.message || pod.status?.reason || 'unknown failure';
  return `pod ${pod.metadata?.name} ${pod.status?.phase === 'Succeeded' ? 'completed' : 'failed'}: ${why}`;
}

/** `tcp://<clusterIP>:<port>` of the Service, or undefined while it has no cluster IP. */
export function serviceEndpoint(service: V1Service | undefined): string | undefined {
  const port = service?.spec?.ports?.[0]?.port;
  const clusterIP = service?.spec?.clusterIP;
  if (!port || !clusterIP || clusterIP === 'None') return undefined;
  return `tcp://${clusterIP.includes(':') ? `[${clusterIP}]` : clusterIP}:${port}`;
}

export function planBuildkit(o: BuildkitObservation): BuildkitPlan {
  const name = o.buildkit.spec?.template ?? '';
  const conditions: DesiredCondition[] = [];
  const deletePods: BuildkitPlan['deletePods'] = [];
  const live = o.pods.filter((p) => !isTerminating(p));
  const ended = live.filter(hasEnded);
  const active = live
    .filter((p) => !hasEnded(p))
    .sort((a, b) => {
      // keep the ready pod, then the oldest: never kill the one serving builds
      if (isReady(a) !== isReady(b)) return isReady(a) ? -1 : 1;
      return created(a) - created(b) || (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? '');
    });
  const [current, ...extra] = active;
  for (const pod of extra)
    deletePods.push({ name: pod.metadata!.name!, reason: POD_DELETION_REASON.ExtraPod });

  const restartPolicy = o.template?.spec?.lifecycle?.restartPolicy ?? 'Always';
  const finalEnd = ended.find((p) => p.status?.reason === 'DeadlineExceeded' || restartPolicy !== 'Always');
  let createPod = false;
  let phase: Phase = 'Pending';
  let ready: DesiredCondition;

  if (!o.template) {
    conditions.push({
      type: CONDITION.TemplateResolved,
      status: 'False',
      reason: REASON.TemplateNotFound,
      message: `BuildkitTemplate "${name}" does not exist in this namespace; waiting for it`,
    });
  } else {
    conditions.push({
      type: CONDITION.TemplateResolved,
      status: 'True',
      reason: REASON.TemplateFound,
      message: `BuildkitTemplate "${name}"`,
    });
  }

  if (current) {
    if (isReady(current)) {
      phase = 'Running';
      ready = {
        type: CONDITION.Ready,
        status: 'True',
        reason: REASON.Running,
        message: `pod ${current.metadata?.name} is ready`,
      };
    } else {
      ready = { type: CONDITION.Ready, status: 'False', ...podWaitReason(current) };
    }
    // pods that ended while another runs are leftovers: clean them up
    for (const pod of ended)
      deletePods.push({ name: pod.metadata!.name!, reason: POD_DELETION_REASON.EndedPod });
  } else if (finalEnd) {
    phase = 'Failed';
    const reason =
      finalEnd.status?.reason === 'DeadlineExceeded' ? REASON.DeadlineExceeded : REASON.PodFailed;
    ready = {
      type: CONDITION.Ready,
      status: 'False',
      reason,
      message: `${endedMessage(finalEnd)}; not replaced (${reason === REASON.DeadlineExceeded ? 'lifecycle.activeDeadlineSeconds is the instance lifetime' : `lifecycle.restartPolicy is ${restartPolicy}`})`,
    };
  } else if (!o.template) {
    ready = {
      type: CONDITION.Ready,
      status: 'False',
      reason: REASON.TemplateNotFound,
      message: `BuildkitTemplate "${name}" not found`,
    };
  } else if (o.buildError) {
    phase = 'Failed';
    ready = {
      type: CONDITION.Ready,
      status: 'False',
      reason: o.buildError.reason,
      message: o.buildError.message,
    };
  } else {
    createPod = true;
    for (const pod of ended)
      deletePods.push({ name: pod.metadata!.name!, reason: POD_DELETION_REASON.ReplacedEndedPod });
    ready = ended.length
      ? {
          type: CONDITION.Ready,
          status: 'False',
          reason: REASON.PodFailed,
          message: `${endedMessage(ended[0]!)}; replacing it`,
        }
      : {
          type: CONDITION.Ready,
          status: 'False',
          reason: REASON.PodCreating,
          message: 'creating the buildkitd pod',
        };
  }

  // spec.persistence: the pod waits for a claim it may mount; a missing claim is created first
  const claim = o.claim ? judgeClaim(o.claim, o.buildkit) : undefined;
  if (createPod && claim?.blocked) {
    createPod = false;
    ready = { type: CONDITION.Ready, status: 'False', ...claim.blocked };
  }
  const claimPlan =
    o.claim && (claim?.usable || (createPod && !claim?.blocked))
      ? { name: o.claim.name, create: !claim?.usable }
      : undefined;

  const createService = !o.service && !o.serviceConflict && Boolean(o.template);
  if (o.serviceConflict) {
    phase = phase === 'Running' ? 'Pending' : phase;
    ready = {
      type: CONDITION.Ready,
      status: 'False',
      reason: REASON.ServiceConflict,
      message: `a Service named like this Buildkit exists and belongs to something else; delete or rename it`,
    };
  }
  conditions.push(ready);

  if (current && o.desiredSpecHash) {
    const running = current.metadata?.annotations?.[SPEC_HASH_ANNOTATION];
    conditions.push(
      running === o.desiredSpecHash
        ? {
            type: CONDITION.TemplateCurrent,
            status: 'True',
            reason: REASON.UpToDate,
            message: 'the pod runs the current template',
          }
        : {
            type: CONDITION.TemplateCurrent,
            status: 'False',
            reason: REASON.TemplateChanged,
            message:
              'the template changed since this pod was created; running pods are not restarted (builds would be killed): delete the pod or recreate the Buildkit to pick it up',
          },
    );
  }

  const endpoint = phase === 'Running' ? serviceEndpoint(o.service) : undefined;

  const actions = [
    claimPlan?.create && `create claim ${claimPlan.name}`,
    createPod && 'create pod',
    ...deletePods.map((d) => `delete pod ${d.name} (${d.reason})`),
    createService && 'create service',
  ].filter(Boolean);
  return {
    createPod,
    deletePods,
    createService,
    claim: claimPlan,
    phase,
    endpoint,
    conditions,
    summary: `${phase}/${ready.reason}${actions.length ? `: ${actions.join(', ')}` : ''}`,
  };
}

/**
 * Whether the Buildkit may mount the claim of its name. It may when the claim's controller owner
 * is this Buildkit, or when it has no controller owner but is labelled for this Buildkit (a claim
 * left by `whenDeleted: Retain`, mounted again by a new Buildkit of the same name). Anything else
 * is somebody else's claim, never adopted; a claim being deleted is waited out.
 */
export function judgeClaim(
  c: ClaimObservation,
  buildkit: Buildkit,
): { usable: boolean; blocked?: { reason: ConditionReason; message: string } } {
  const what = `PersistentVolumeClaim ${c.name}`;
  if (c.createError) {
    return {
      usable: false,
      blocked: { reason: REASON.ClaimFailed, message: `cannot create ${what}: ${c.createError}` },
    };
  }
  if (!c.found) return { usable: false };
  if (c.found.metadata?.deletionTimestamp) {
    return {
      usable: false,
      blocked: {
        reason: REASON.ClaimTerminating,
        message: `${what} is being deleted; a new one is created once it is gone`,
      },
    };
  }
  const owner = c.found.metadata?.ownerReferences?.find((r) => r.controller);
  const labels = c.found.metadata?.labels ?? {};
  const labelled =
    labels[MANAGED_BY_LABEL] === MANAGED_BY_VALUE &&
    labels[INSTANCE_LABEL] === labelValueForName(buildkit.metadata?.name ?? '');
  if (owner ? owner.uid === buildkit.metadata?.uid : labelled) return { usable: true };
  const predecessor = owner?.kind === BUILDKIT.kind && owner.name === buildkit.metadata?.name;
  const message = !owner
    ? `${what} exists and is not labelled for this Buildkit; delete or rename it`
    : predecessor
      ? `${what} belongs to an earlier Buildkit of this name (uid ${owner.uid}); waiting for Kubernetes to delete it with its owner`
      : `${what} is controlled by ${owner.kind} ${owner.name}, not this Buildkit; delete or rename it`;
  return { usable: false, blocked: { reason: REASON.ClaimConflict, message } };
}
