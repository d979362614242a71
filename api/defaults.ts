// Defaults for BuildkitTemplate, applied by the mutating webhook. Everything seatgeek defaults,
// plus ours; values the user set are never touched, so applying it twice changes nothing.
// The image and persistence.mountPath defaults live here rather than in the schema because they
// depend on `rootless`.
import fastJsonPatch from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';

import {
  DEFAULT_IDLE_TIMEOUT,
  DEFAULT_IMAGE,
  DEFAULT_IMAGE_PULL_POLICY,
  DEFAULT_PERSISTENCE_SIZE,
  DEFAULT_PORT,
  DEFAULT_ROOTLESS_IMAGE,
  DEFAULT_ROOTLESS_STATE_DIR,
  DEFAULT_STATE_DIR,
  DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS,
} from './group.ts';
import type { BuildkitTemplate, BuildkitTemplateSpec } from './types.generated.ts';

export function defaultTemplateSpec(input: BuildkitTemplateSpec | undefined): BuildkitTemplateSpec {
  const spec: BuildkitTemplateSpec = structuredClone(input ?? {});
  // seatgeek's Go clients serialize an unset port as 0
  if (!spec.port) spec.port = DEFAULT_PORT;
  if (!spec.image) spec.image = spec.rootless ? DEFAULT_ROOTLESS_IMAGE : DEFAULT_IMAGE;
  if (!spec.imagePullPolicy) spec.imagePullPolicy = DEFAULT_IMAGE_PULL_POLICY;
  spec.hostUsers ??= true;
  spec.lifecycle ??= {};
  spec.lifecycle.requireOwner ??= false;
  spec.lifecycle.terminationGracePeriodSeconds ??= DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS;
  spec.autoscaling ??= {};
  spec.autoscaling.enabled ??= false;
  spec.autoscaling.idleTimeout ??= DEFAULT_IDLE_TIMEOUT;
  spec.persistence ??= {};
  spec.persistence.enabled ??= false;
  spec.persistence.size ??= DEFAULT_PERSISTENCE_SIZE;
  spec.persistence.accessModes ??= ['ReadWriteOnce'];
  // Whether or not persistence is on, so the stored template shows where a claim would go.
  spec.persistence.mountPath ??= spec.rootless ? DEFAULT_ROOTLESS_STATE_DIR : DEFAULT_STATE_DIR;
  spec.persistence.whenDeleted ??= 'Delete';
  return spec;
}

/** The JSON patch (RFC 6902) that defaults `template`; empty when nothing is missing. */
export function templateDefaultsPatch(template: BuildkitTemplate): Operation[] {
  // Diff only the spec: cheaper than the whole object (managedFields) and the paths stay absolute.
  // An absent spec must diff as absent (`add`), not as an undefined value (`replace`).
  const before = template.spec === undefined ? {} : { spec: template.spec };
  const after = { spec: defaultTemplateSpec(template.spec) };
  return fastJsonPatch.compare(before, after);
}
