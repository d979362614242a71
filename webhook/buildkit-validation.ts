// Validation of Buildkit: seatgeek's rules (template exists, requireOwner, spec immutable) plus
// key and resource checks. Resources above the template maximum are allowed and clamped by the
// controller, as in seatgeek, but the user is told with an admission warning.
import { isDeepStrictEqual } from 'node:util';

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

  const resources = checkRequirements('spec.resources', spec?.resources, template?.spec?.resources?.maximum);
  errors.push(...resources.errors);
  for (const over of resources.aboveMaximum) {
    warnings.push(
      `${over.field} ${over.value} exceeds BuildkitTemplate "${templateName}" maximum ${over.maximum}; the pod gets ${over.maximum}`,
    );
  }
  return { errors, warnings };
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
