// The admission response's JSON patch: what the injection changed, as whole-value ops on the few
// fields it touches, so the patch reads like the summary in the decision's reason.
import type { V1Pod } from '@kubernetes/client-node';
import type { Operation } from 'fast-json-patch';

/** The JSON patch from `before` to `after`, one whole-value op per changed field. */
export function patchOf(before: V1Pod, after: V1Pod): Operation[] {
  const ops: Operation[] = [];
  if (!before.metadata) ops.push({ op: 'add', path: '/metadata', value: after.metadata });
  const fields = [
    ...(before.metadata ? [['metadata', 'annotations'] as const] : []),
    ['spec', 'initContainers'] as const,
    ['spec', 'containers'] as const,
    ['spec', 'volumes'] as const,
  ];
  for (const [parent, key] of fields) {
    const was = (before[parent] as Record<string, unknown> | undefined)?.[key];
    const now = (after[parent] as Record<string, unknown> | undefined)?.[key];
    if (JSON.stringify(was) === JSON.stringify(now)) continue;
    ops.push({ op: was === undefined ? 'add' : 'replace', path: `/${parent}/${key}`, value: now });
  }
  return ops;
}
