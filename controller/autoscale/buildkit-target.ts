// A Buildkit as a scale-to-zero target: its record lives in status.autoscaling, the scale-down
// records zero with the phase and the Ready and Active conditions in one status write
// (preconditioned on the resourceVersion the decision was made on), and then deletes the pod.
import type { CustomObjectsApi, V1ObjectReference, V1Pod, V1Service } from '@kubernetes/client-node';

import { BUILDKIT, GROUP, VERSION } from '../../api/group.ts';
import { WAKE_REQUESTED_ANNOTATION } from '../../api/labels.ts';
import type { Buildkit } from '../../api/types.generated.ts';
import { mergeConditions } from '../conditions.ts';
import { mergePatch } from '../reconcile-template.ts';
import { zeroConditions } from './plan.ts';
import type { AutoscaleContext } from './reconcile-autoscale.ts';
import { clearWakeRequest } from './wake-request.ts';

export function buildkitAutoscaleContext(o: {
  custom: CustomObjectsApi;
  buildkit: Buildkit;
  pods: V1Pod[];
  service: V1Service | undefined;
  ref: V1ObjectReference;
  now(): Date;
}): AutoscaleContext {
  const { buildkit } = o;
  const namespace = buildkit.metadata!.namespace!;
  const name = buildkit.metadata!.name!;
  const at = { kind: BUILDKIT.kind, namespace, name };
  return {
    target: {
      ...at,
      apiVersion: `${GROUP}/${VERSION}`,
      uid: buildkit.metadata!.uid!,
      record: buildkit.status?.autoscaling,
      phase: buildkit.status?.phase,
      wakeRequested: Boolean(buildkit.metadata?.annotations?.[WAKE_REQUESTED_ANNOTATION]),
    },
    pods: o.pods,
    service: o.service,
    ref: o.ref,
    writes: {
      deletesPods: true,
      clearWakeRequest: () => clearWakeRequest(o.custom, at),
      async recordZero(record, zeroAt) {
        await o.custom.patchNamespacedCustomObjectStatus(
          {
            group: GROUP,
            version: VERSION,
            namespace,
            plural: BUILDKIT.plural,
            name,
            body: {
              metadata: { resourceVersion: buildkit.metadata?.resourceVersion },
              status: {
                phase: 'ScaledToZero',
                autoscaling: record,
                conditions: mergeConditions(
                  buildkit.status?.conditions,
                  zeroConditions(buildkit.status?.conditions, zeroAt),
                  buildkit.metadata?.generation,
                  o.now(),
                ),
              },
            },
          },
          mergePatch,
        );
      },
    },
  };
}
