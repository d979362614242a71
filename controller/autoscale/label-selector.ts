// Whether labels match a workload's label selector (pure), as the API server and kubectl read
// one: every matchLabels pair and every matchExpressions requirement must hold; an empty
// selector matches nothing here (a workload always has a non-empty one, and matching every pod
// of a namespace would be the wrong guess).
import type { V1LabelSelector } from '@kubernetes/client-node';

export function selectorMatches(
  selector: V1LabelSelector | undefined,
  labels: Record<string, string> | undefined,
): boolean {
  const have = labels ?? {};
  const pairs = Object.entries(selector?.matchLabels ?? {});
  const expressions = selector?.matchExpressions ?? [];
  if (pairs.length === 0 && expressions.length === 0) return false;
  if (!pairs.every(([k, v]) => have[k] === v)) return false;
  return expressions.every((e) => {
    const present = Object.hasOwn(have, e.key);
    const values = e.values ?? [];
    switch (e.operator) {
      case 'In':
        return present && values.includes(have[e.key]!);
      case 'NotIn':
        return !present || !values.includes(have[e.key]!);
      case 'Exists':
        return present;
      case 'DoesNotExist':
        return !present;
      default:
        return false; // an operator the API server would have refused
    }
  });
}
