// Asking for a wake, exactly once per target across every activator replica: the annotation is
// added with the object's resourceVersion as a precondition, so of two replicas that saw the
// same object only one write succeeds; the other re-reads, finds the request and stops. The
// same for every kind of target (through the generic object API: Buildkits, StatefulSets and
// Deployments alike).
import type { CustomObjectsApi, KubernetesObject } from '@kubernetes/client-node';

import { WAKE_REQUESTED_ANNOTATION } from '../../api/labels.ts';
import { isConflict, isNotFound } from '../../kube/errors.ts';
import { mergePatch } from '../reconcile-template.ts';
import type { TargetName } from './target-kinds.ts';
import { TARGET_RESOURCES } from './target-kinds.ts';

export type WakeOutcome = 'requested' | 'already requested' | 'gone';

const objectOf = (t: TargetName) => ({ ...TARGET_RESOURCES[t.kind], namespace: t.namespace, name: t.name });

export async function requestWake(
  custom: CustomObjectsApi,
  t: TargetName,
  nowIso: string,
): Promise<WakeOutcome> {
  const target = objectOf(t);
  for (let attempt = 0; attempt < 5; attempt++) {
    let current: KubernetesObject;
    try {
      current = (await custom.getNamespacedCustomObject(target)) as KubernetesObject;
    } catch (error) {
      if (isNotFound(error)) return 'gone';
      throw error;
    }
    if (current.metadata?.annotations?.[WAKE_REQUESTED_ANNOTATION]) return 'already requested';
    try {
      await custom.patchNamespacedCustomObject(
        {
          ...target,
          body: {
            metadata: {
              resourceVersion: current.metadata?.resourceVersion,
              annotations: { [WAKE_REQUESTED_ANNOTATION]: nowIso },
            },
          },
        },
        mergePatch,
      );
      return 'requested';
    } catch (error) {
      if (isNotFound(error)) return 'gone';
      if (!isConflict(error)) throw error;
    }
  }
  throw new Error(`could not request a wake of ${t.kind} ${t.namespace}/${t.name}: the object kept changing`);
}

/** Removes the request once the target runs (no precondition: removing twice is harmless). */
export async function clearWakeRequest(custom: CustomObjectsApi, t: TargetName): Promise<void> {
  try {
    await custom.patchNamespacedCustomObject(
      { ...objectOf(t), body: { metadata: { annotations: { [WAKE_REQUESTED_ANNOTATION]: null } } } },
      mergePatch,
    );
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
}
