// The PersistentVolumeClaim of a Buildkit whose template has spec.persistence.enabled: a pure
// function of the template and the instance, like the pod and the Service (pod-builder.ts). The
// pod mounts it at persistence.mountPath as buildkitd's --root, so the build cache outlives pods.
import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';

import { defaultTemplateSpec } from '../api/defaults.ts';
import { NAME_LABEL, NAME_LABEL_VALUE } from '../api/labels.ts';
import type { Buildkit, BuildkitTemplate } from '../api/types.generated.ts';
import { buildkitOwnerReference, claimNameFor, sortedMap } from './meta.ts';
import { checkedTemplateName, platformLabels } from './pod-builder.ts';

/**
 * The claim of `buildkit`, or undefined when its template has no persistence. Labelled like the
 * pod and the Service (the instance label is what a later Buildkit of the same name recognises a
 * retained claim by). Owned by the Buildkit (garbage-collected with it) only with
 * `whenDeleted: Delete`; with `Retain` it has no owner and outlives the Buildkit.
 */
export function buildPvc(
  template: BuildkitTemplate,
  buildkit: Buildkit,
): V1PersistentVolumeClaim | undefined {
  const spec = defaultTemplateSpec(template.spec);
  const persistence = spec.persistence!;
  if (!persistence.enabled) return undefined;
  const templateName = checkedTemplateName(template, buildkit);
  const name = buildkit.metadata?.name ?? '';
  const owned = persistence.whenDeleted !== 'Retain';
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: claimNameFor(name),
      namespace: buildkit.metadata?.namespace,
      labels: sortedMap({ [NAME_LABEL]: NAME_LABEL_VALUE, ...platformLabels(name, templateName) }),
      ...(owned ? { ownerReferences: [buildkitOwnerReference(buildkit)] } : {}),
    },
    spec: {
      accessModes: [...persistence.accessModes!],
      resources: { requests: { storage: String(persistence.size) } },
      // unset, not "": "" would mean no class at all (no dynamic provisioning)
      ...(persistence.storageClassName ? { storageClassName: persistence.storageClassName } : {}),
    },
  };
}
