// Asking for a wake, exactly once per target across every activator replica: the annotation is
// added with the object's resourceVersion as a precondition, so of two replicas that saw the
// same object only one write succeeds; the other re-reads, finds the request and stops.
import type { CustomObjectsApi } from '@kubernetes/client-node';

import { BUILDKIT, GROUP, VERSION } from '../../api/group.ts';
import { WAKE_REQUESTED_ANNOTATION } from '../../api/labels.ts';
import type { Buildkit } from '../../api/types.generated.ts';
import { isConflict, isNotFound } from '../../kube/errors.ts';
import { mergePatch } from '../reconcile-template.ts';

export type WakeOutcome = 'requested' | 'already requested' | 'gone';

export async function requestWake(
  custom: CustomObjectsApi,
  namespace: string,
  name: string,
  nowIso: string,
): Promise<WakeOutcome> {
  const target = { group: GROUP, version: VERSION, namespace, plural: BUILDKIT.plural, name };
  for (let attempt = 0; attempt < 5; attempt++) {
    let current: Buildkit;
    try {
      current = (await custom.getNamespacedCustomObject(target)) as Buildkit;
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
  throw new Error(`could not request a wake of ${namespace}/${name}: the object kept changing`);
}

/** Removes the request once the target runs (no precondition: removing twice is harmless). */
export async function clearWakeRequest(
  custom: CustomObjectsApi,
  namespace: string,
  name: string,
): Promise<void> {
  try {
    await custom.patchNamespacedCustomObject(
      {
        group: GROUP,
        version: VERSION,
        namespace,
        plural: BUILDKIT.plural,
        name,
        body: { metadata: { annotations: { [WAKE_REQUESTED_ANNOTATION]: null } } },
      },
      mergePatch,
    );
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
}
