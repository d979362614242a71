// Validation of Buildkit: seatgeek's rules (template exists, requireOwner, spec immutable) plus
// key and resource checks. Resources above the template maximum are allowed and clamped by the
// controller, as in seatgeek, but the user is told with an admission warning. The warning comes
// from the very function that sizes the pod (api/resources.ts), so it says what the pod gets.
import { isDeepStrictEqual } from 'node:util';

import type { ClampedResource } from '../api/resources.ts';
import { mergeResources, ResourceQuantityError } from '../api/resources.ts';
import type { Buildkit, BuildkitTemplate } from '../api/types.generated.ts';
import type { FieldError } from './field-errors.ts';
import { forbidden, required } from './field-errors.ts';
import { validateKeyMap } from './kube-names.ts';
import { checkRequirements } from './resources.ts';
import type { Verdict } from './template-validation.ts';

/**
 * Create: `template` is the BuildkitTemplate read live from the API server (undefined when it does
 * not exist), never from a cache that may not have seen a template created a moment ago.
 */
export function validateBuildkitCreate(buildkit: Buildkit, template: BuildkitTemplate | undefined): Verdict {
  const errors: FieldError[] = [];
  const warnings: string[] = [];
  const spec = buildkit.spec;
  const namespace = buildkit.metadata?.namespace ?? '';
  const templateName = spec?.template ?? '';

  if (!templateName) {
    errors.push(required('spec.template', 'name the BuildkitTemplate this instance uses'));
  } else if (!template) {
    errors.push({
      field: 'spec.template',
      type: 'NotFound',
      value: templateName,
      detail: `no BuildkitTemplate "${templateName}" in namespace "${namespace}"; create the template first (kubectl get bkt -n ${namespace})`,
    });
  } else if (template.spec?.lifecycle?.requireOwner && !buildkit.metadata?.ownerReferences?.length) {
    errors.push(
      required(
        'metadata.ownerReferences',
        `BuildkitTemplate "${templateName}" requires owner references (lifecycle.requireOwner) but none are present; set the CI job pod (or another object) as owner so the builder is deleted with it`,
      ),
    );
  }

  errors.push(...validateKeyMap('spec.labels', spec?.labels, 'labels'));
  errors.push(...validateKeyMap('spec.annotations', spec?.annotations, 'annotations'));

  const resources = checkRequirements('spec.resources', spec?.resources, undefined);
  errors.push(...resources.errors);
  if (template && resources.errors.length === 0) warnings.push(...clampWarnings(buildkit, template));
  return { errors, warnings };
}

/** One warning per value of the Buildkit's own that the pod will get lowered. */
function clampWarnings(buildkit: Buildkit, template: BuildkitTemplate): string[] {
  let clamped: ClampedResource[];
  try {
    ({ clamped } = mergeResources(template.spec?.resources, buildkit.spec?.resources));
  } catch (error) {
    // a bad quantity in the template was refused when the template was admitted; nothing to add
    if (error instanceof ResourceQuantityError) return [];
    throw error;
  }
  const templateName = template.metadata?.name ?? '';
  return clamped
    .filter((c) => c.source === 'instance')
    .map((c) => {
      const bound =
        c.reason === 'maximum'
          ? `BuildkitTemplate "${templateName}" maximum ${c.granted}`
          : `its ${c.field.replace('requests.', '')} limit ${c.granted}`;
      return `spec.resources.${c.field} ${c.requested} exceeds ${bound}; the pod gets ${c.granted}`;
    });
}

/** The spec fields that differ, e.g. ["spec.template", "spec.resources"]. */
export function changedSpecFields(oldSpec: object | undefined, newSpec: object | undefined): string[] {
  const a = (oldSpec ?? {}) as Record<string, unknown>;
  const b = (newSpec ?? {}) as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  return keys.filter((k) => !isDeepStrictEqual(a[k], b[k])).map((k) => `spec.${k}`);
}

/** Update: metadata may change (labels, owners, finalizers); the spec may not. */
export function validateBuildkitUpdate(oldObject: Buildkit, newObject: Buildkit): Verdict {
  const changed = changedSpecFields(oldObject.spec, newObject.spec);
  if (!changed.length) return { errors: [], warnings: [] };
  return {
    errors: [
      forbidden(
        'spec',
        `spec changes are not allowed for existing Buildkit objects (changed: ${changed.join(', ')}); delete it and create a new Buildkit instead`,
      ),
    ],
    warnings: [],
  };
}
