// Status conditions in the Kubernetes convention: lastTransitionTime moves only when the status
// of a condition changes, so `kubectl describe` shows how long something has been true.
import type { ConditionReason, ConditionType } from '../api/conditions.ts';
import type { Condition } from '../api/types.generated.ts';

export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface DesiredCondition {
  type: ConditionType;
  status: ConditionStatus;
  reason: ConditionReason;
  message: string;
}

/** The new condition list: `desired` in order, keeping transition times of unchanged statuses. */
export function mergeConditions(
  previous: Condition[] | undefined,
  desired: DesiredCondition[],
  generation: number | undefined,
  now: Date,
): Condition[] {
  return desired.map((d) => {
    const old = previous?.find((c) => c.type === d.type);
    const since =
      old && old.status === d.status && old.lastTransitionTime ? old.lastTransitionTime : now.toISOString();
    return {
      type: d.type,
      status: d.status,
      reason: d.reason,
      message: d.message,
      lastTransitionTime: since,
      ...(generation !== undefined ? { observedGeneration: generation } : {}),
    };
  });
}

/** Whether two condition lists say the same thing (times aside): skip status writes that change nothing. */
export function sameConditions(a: Condition[] | undefined, b: Condition[] | undefined): boolean {
  const key = (list: Condition[] | undefined) =>
    JSON.stringify((list ?? []).map((c) => [c.type, c.status, c.reason, c.message, c.observedGeneration]));
  return key(a) === key(b);
}
