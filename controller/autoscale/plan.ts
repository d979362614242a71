// What scale to zero adds to a Buildkit's reconcile (pure): whether the instance is at zero,
// waking or awake, whether it may have a pod, where its Service routes, the Active condition and
// the status.autoscaling record. The Buildkit plan (buildkit-plan.ts) decides the pod itself; this
// overrides it where autoscaling has the say.
//
// States, all read from the object so that any leader reaches the same answer:
// - at zero: status.autoscaling.scaledToZeroTime is set and no wake started after it;
// - waking: a wake started after the last scale-down and no pod is ready yet;
// - awake: otherwise.
// A wake starts when the wake-requested annotation appears on an instance at zero (an activator
// holding a client sets it, or a CI job); the annotation is removed once the instance runs.
import type { V1Pod, V1Service } from '@kubernetes/client-node';

import type { ConditionReason, ConditionType } from '../../api/conditions.ts';
import { CONDITION, REASON } from '../../api/conditions.ts';
import type { Phase } from '../../api/group.ts';
import type { BuildkitAutoscalingStatus, Condition } from '../../api/types.generated.ts';
import type { BuildkitPlan } from '../buildkit-plan.ts';
import { serviceEndpoint } from '../buildkit-plan.ts';
import type { DesiredCondition } from '../conditions.ts';
import type { IdleDecision } from './idle-decision.ts';

export interface AutoscaleObservation {
  nowMs: number;
  record: BuildkitAutoscalingStatus | undefined;
  phase: Phase | undefined;
  wakeRequested: boolean;
  /** pods that run (not terminating) */
  pods: V1Pod[];
  /** one of them is Ready */
  ready: boolean;
  /** the idle scaler's latest decision for this instance, if it has one */
  decision: IdleDecision | undefined;
  /** the activator port for this instance (existing or newly allocated); undefined: range full */
  activatorPort: number | undefined;
}

export interface AutoscalePlan {
  state: 'zero' | 'waking' | 'awake';
  /** overrides the Buildkit plan's phase */
  phase?: Phase;
  /** false: the instance must have no pod now */
  mayHavePod: boolean;
  /** route the Service to the activators (true) or to the pod alone (false) */
  routeToActivator: boolean;
  /** fence and remove the pods now */
  scaleDown: boolean;
  /** a wake starts with this reconcile */
  wakeStarts: boolean;
  /** remove the wake-requested annotation (the instance runs, or was never at zero) */
  clearWakeRequest: boolean;
  condition: DesiredCondition;
  record: BuildkitAutoscalingStatus;
  /** latest client activity a sidecar reported */
  lastActivityTime?: string;
}

const active = (status: 'True' | 'False', reason: ConditionReason, message: string): DesiredCondition => ({
  type: CONDITION.Active,
  status,
  reason,
  message,
});

function decidedOn(d: IdleDecision, pods: V1Pod[]): boolean {
  const names = new Set(pods.map((p) => p.metadata?.name));
  const evidence = d.record.idleEvidence ?? [];
  return evidence.length === names.size && evidence.every((e) => names.has(e.pod));
}

const zeroMessage = (at: string | undefined) =>
  `scaled to zero at ${at}; a client connecting to the endpoint wakes it`;

/**
 * The conditions as the scale-down records them together with the phase (pure): Ready and
 * Active say "scaled to zero" at once, the others stay as they are, in their order.
 */
export function zeroConditions(previous: Condition[] | undefined, zeroAt: string): DesiredCondition[] {
  const message = zeroMessage(zeroAt);
  const replaced = (type: ConditionType): DesiredCondition => ({
    type,
    status: 'False',
    reason: REASON.ScaledToZero,
    message,
  });
  const kept = (previous ?? []).map((c) =>
    c.type === CONDITION.Ready || c.type === CONDITION.Active
      ? replaced(c.type)
      : ({ type: c.type, status: c.status, reason: c.reason, message: c.message } as DesiredCondition),
  );
  return kept.some((c) => c.type === CONDITION.Active) ? kept : [...kept, replaced(CONDITION.Active)];
}

export function isAtZero(record: BuildkitAutoscalingStatus | undefined): boolean {
  const zero = record?.scaledToZeroTime ? Date.parse(record.scaledToZeroTime) : undefined;
  if (zero === undefined) return false;
  const wake = record?.wakeStartTime ? Date.parse(record.wakeStartTime) : undefined;
  return wake === undefined || wake < zero;
}

export function planAutoscale(o: AutoscaleObservation): AutoscalePlan {
  const now = new Date(o.nowMs).toISOString();
  const base: BuildkitAutoscalingStatus = { ...o.record };
  if (o.activatorPort !== undefined) base.activatorPort = o.activatorPort;
  const atZero = isAtZero(o.record);

  if (atZero && !o.wakeRequested && o.pods.length === 0) {
    return {
      state: 'zero',
      phase: 'ScaledToZero',
      mayHavePod: false,
      routeToActivator: true,
      scaleDown: false,
      wakeStarts: false,
      clearWakeRequest: false,
      condition: active('False', REASON.ScaledToZero, zeroMessage(o.record?.scaledToZeroTime)),
      record: base,
    };
  }
  if (atZero) {
    // A wake request, or a pod that outlived an interrupted scale-down: the instance is awake again.
    const why = o.wakeRequested ? 'wake requested' : 'a pod still runs after an interrupted scale-down';
    return {
      state: 'waking',
      phase: o.ready ? 'Running' : 'Waking',
      mayHavePod: true,
      routeToActivator: !o.ready,
      scaleDown: false,
      wakeStarts: true,
      clearWakeRequest: false,
      condition: active('True', REASON.Waking, `waking: ${why}`),
      record: { ...base, wakeStartTime: now, idleSince: undefined, idleEvidence: undefined },
    };
  }
  const wakingSince = o.record?.wakeStartTime;
  // The status says Waking, or still ScaledToZero because the cache has not caught up with the
  // wake this leader wrote (its record is merged in): either way a wake is under way, and calling
  // it Pending would lose the Waking phase and the Woke event that ends it.
  const waking =
    !o.ready &&
    wakingSince !== undefined &&
    o.record?.scaledToZeroTime !== undefined &&
    (o.phase === 'Waking' || o.phase === 'ScaledToZero');
  if (waking) {
    return {
      state: 'waking',
      phase: 'Waking',
      mayHavePod: true,
      routeToActivator: true,
      scaleDown: false,
      wakeStarts: false,
      clearWakeRequest: false,
      condition: active(
        'True',
        REASON.Waking,
        `waking since ${wakingSince}: waiting for buildkitd to be ready`,
      ),
      record: base,
    };
  }
  const d = o.decision;
  const condition = d
    ? active('True', d.reason, d.message)
    : active('True', REASON.AwaitingFreshStats, 'waiting for the first reading of the sidecars');
  return {
    state: 'awake',
    mayHavePod: true,
    // Hold clients while no pod is ready (first start, a restart) rather than refuse them.
    routeToActivator: !o.ready,
    // only a decision about these very pods (one made before a wake speaks of pods long gone)
    scaleDown: Boolean(d?.scaleDown && o.ready && o.pods.length > 0 && decidedOn(d, o.pods)),
    wakeStarts: false,
    clearWakeRequest: o.wakeRequested && o.ready,
    condition,
    record: d ? { ...base, idleSince: d.record.idleSince, idleEvidence: d.record.idleEvidence } : base,
    ...(d?.lastActivity ? { lastActivityTime: d.lastActivity } : {}),
  };
}

/**
 * The Buildkit plan with autoscaling's say in it (pure): no pod (and no claim created) at zero,
 * the phase, the Active condition, Ready explaining a scale-down, and the endpoint published
 * whenever the Service routes somewhere (to the pod, or to the activators that wake it).
 */
export function withAutoscaling(
  plan: BuildkitPlan,
  auto: AutoscalePlan,
  service: V1Service | undefined,
  activatorsRoute: boolean,
): BuildkitPlan {
  const next: BuildkitPlan = { ...plan, conditions: [...plan.conditions, auto.condition] };
  if (auto.phase) next.phase = auto.phase;
  if (!auto.mayHavePod) {
    next.createPod = false;
    if (next.claim) next.claim = { ...next.claim, create: false };
    next.conditions = next.conditions.map((c) =>
      c.type === CONDITION.Ready
        ? {
            type: CONDITION.Ready,
            status: 'False',
            reason: REASON.ScaledToZero,
            message: auto.condition.message,
          }
        : c,
    );
  }
  if (activatorsRoute || next.phase === 'Running') next.endpoint = serviceEndpoint(service);
  next.summary = `${plan.summary} [autoscaling: ${auto.state}, ${auto.condition.reason}]`;
  return next;
}
