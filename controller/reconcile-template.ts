// BuildkitTemplate -> its ConfigMaps (buildkitd.toml, preStop script), created, updated and
// deleted as the template changes; then the Buildkits that use it are re-examined (their pods may
// now be outdated, or they were waiting for this template).
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { KubeConfig, V1ConfigMap } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { isDeepStrictEqual } from 'node:util';

import { CONDITION, REASON } from '../api/conditions.ts';
import { BUILDKIT_TEMPLATE, GROUP, VERSION } from '../api/group.ts';
import type { BuildkitTemplate } from '../api/types.generated.ts';
import { isConflict, isNotFound } from '../kube/errors.ts';
import { mergeConditions, sameConditions } from './conditions.ts';
import { templateConfigMaps } from './configmaps.ts';
import type { ReconcileResult } from './reconcile-buildkit.ts';

export interface TemplateReconcilerDeps {
  kc: KubeConfig;
  logger: Logger;
  getTemplate(namespace: string, name: string): BuildkitTemplate | undefined;
  getConfigMap(namespace: string, name: string): V1ConfigMap | undefined;
  now?: () => Date;
}

export function templateReconciler(deps: TemplateReconcilerDeps) {
  const core = deps.kc.makeApiClient(CoreV1Api);
  const custom = deps.kc.makeApiClient(CustomObjectsApi);
  return async (namespace: string, name: string): Promise<ReconcileResult> => {
    const template = deps.getTemplate(namespace, name);
    if (!template) return 'done'; // deleted: garbage collection removes its ConfigMaps
    const log = deps.logger.child({ kind: BUILDKIT_TEMPLATE.kind, namespace, name });
    const desired = templateConfigMaps(template);
    for (const [cmName, cm] of Object.entries(desired)) {
      const existing = deps.getConfigMap(namespace, cmName);
      const ownedByUs = existing?.metadata?.ownerReferences?.some(
        (r) => r.controller && r.uid === template.metadata?.uid,
      );
      try {
        if (cm && !existing) {
          await core.createNamespacedConfigMap({ namespace, body: cm });
          log.info({ configMap: cmName, reason: 'missing' }, 'created ConfigMap');
        } else if (cm && existing && ownedByUs && !isDeepStrictEqual(existing.data ?? {}, cm.data ?? {})) {
          await core.replaceNamespacedConfigMap({
            namespace,
            name: cmName,
            body: {
              ...cm,
              metadata: { ...cm.metadata, resourceVersion: existing.metadata?.resourceVersion },
            },
          });
          log.info({ configMap: cmName, reason: 'template changed' }, 'updated ConfigMap');
        } else if (!cm && existing && ownedByUs) {
          await core.deleteNamespacedConfigMap({ namespace, name: cmName });
          log.info({ configMap: cmName, reason: 'feature turned off in the template' }, 'deleted ConfigMap');
        } else if (existing && !ownedByUs && cm) {
          log.warn(
            { configMap: cmName, reason: 'owned by something else' },
            'ConfigMap name taken; leaving it alone',
          );
        }
      } catch (error) {
        if (isConflict(error) || isNotFound(error)) return 'retry'; // raced with the cache
        throw error;
      }
    }
    const conditions = mergeConditions(
      template.status?.conditions,
      [
        {
          type: CONDITION.Ready,
          status: 'True',
          reason: REASON.ConfigMapsReady,
          message: `ConfigMaps: ${
            Object.entries(desired)
              .filter(([, v]) => v)
              .map(([k]) => k)
              .join(', ') || 'none needed'
          }`,
        },
      ],
      template.metadata?.generation,
      (deps.now ?? (() => new Date()))(),
    );
    if (
      template.status?.observedGeneration !== template.metadata?.generation ||
      !sameConditions(template.status?.conditions, conditions)
    ) {
      try {
        await custom.patchNamespacedCustomObjectStatus(
          {
            group: GROUP,
            version: VERSION,
            namespace,
            plural: BUILDKIT_TEMPLATE.plural,
            name,
            body: { status: { conditions, observedGeneration: template.metadata?.generation } },
          },
          mergePatch,
        );
      } catch (error) {
        if (isNotFound(error)) return 'done';
        throw error;
      }
    }
    return 'done';
  };
}

/** client-node sends patches as JSON Patch by default; status updates are merge patches. */
export const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
