// What a pod's status says, read the same way everywhere.
import type { V1Pod } from '@kubernetes/client-node';

/** The kubelet reports the pod's Ready condition True (its readiness probes pass). */
export const hasReadyCondition = (pod: V1Pod): boolean =>
  (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

/** Running and Ready. */
export const isPodReady = (pod: V1Pod): boolean => pod.status?.phase === 'Running' && hasReadyCondition(pod);
