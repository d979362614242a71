// One handler per webhook route. Each checks that the request is for the kind the route serves,
// then defers to the pure defaulting/validation/injection functions. The only I/O is the live
// template read.
import type { V1Pod } from '@kubernetes/client-node';

import { BUILDKIT, BUILDKIT_TEMPLATE, GROUP } from '../api/group.ts';
import type { Buildkit, BuildkitTemplate } from '../api/types.generated.ts';
import { INJECT_ANNOTATION, INJECT_DISABLED } from '../api/labels.ts';
import type { ServerFeatures } from '../kube/server-features.ts';
import type { AdmissionRequest, AdmissionResponse } from './admission.ts';
import { allow, allowWithPatch, deny, denyInvalid } from './admission.ts';
import { validateBuildkitCreate, validateBuildkitUpdate } from './buildkit-validation.ts';
import type { InjectionConfig } from './pod-injection/index.ts';
import { injectSidecar, keepBehindSidecar } from './pod-injection/index.ts';
import { templateDefaultsPatch } from '../api/defaults.ts';
import type { TemplateLimits, Verdict } from './template-validation.ts';
import { DEFAULT_TEMPLATE_LIMITS, validateTemplate } from './template-validation.ts';

/** Reads a BuildkitTemplate from the API server; undefined when it does not exist. */
export type TemplateReader = (namespace: string, name: string) => Promise<BuildkitTemplate | undefined>;

export interface HandlerResult {
  response: AdmissionResponse;
  /** why, for the log line: "defaulted 3 fields", "spec.port invalid", ... */
  reason: string;
}

export type Handler = (request: AdmissionRequest) => Promise<HandlerResult>;

function expectKind(request: AdmissionRequest, kind: string): HandlerResult | undefined {
  if (request.kind.group === GROUP && request.kind.kind === kind) return undefined;
  const got = `${request.kind.kind}.${request.kind.group || 'core'}`;
  return {
    response: deny(
      request.uid,
      400,
      `this webhook route serves ${kind}.${GROUP}, not ${got}; check the webhook configuration rules`,
    ),
    reason: `unexpected resource ${got}`,
  };
}

function fromVerdict(request: AdmissionRequest, verdict: Verdict): HandlerResult {
  if (verdict.errors.length) {
    return {
      response: denyInvalid(request, verdict.errors, verdict.warnings),
      reason: verdict.errors.map((e) => `${e.field} ${e.type}`).join('; '),
    };
  }
  return {
    response: allow(request.uid, verdict.warnings),
    reason: verdict.warnings.length ? `allowed with ${verdict.warnings.length} warning(s)` : 'valid',
  };
}

export const mutateTemplate: Handler = async (request) => {
  const wrong = expectKind(request, BUILDKIT_TEMPLATE.kind);
  if (wrong) return wrong;
  if (request.operation !== 'CREATE' && request.operation !== 'UPDATE') {
    return { response: allow(request.uid), reason: `nothing to default on ${request.operation}` };
  }
  const patch = templateDefaultsPatch((request.object ?? {}) as BuildkitTemplate);
  return {
    response: allowWithPatch(request.uid, patch),
    reason: patch.length ? `defaulted ${patch.map((op) => op.path).join(', ')}` : 'nothing to default',
  };
};

export function templateValidationHandler(limits: TemplateLimits = DEFAULT_TEMPLATE_LIMITS): Handler {
  return async (request) => {
    const wrong = expectKind(request, BUILDKIT_TEMPLATE.kind);
    if (wrong) return wrong;
    if (request.operation !== 'CREATE' && request.operation !== 'UPDATE') {
      return { response: allow(request.uid), reason: `${request.operation} is not validated` };
    }
    return fromVerdict(request, validateTemplate((request.object ?? {}) as BuildkitTemplate, limits));
  };
}

/** With the default limits. */
export const validateTemplateHandler: Handler = templateValidationHandler();

export function validateBuildkitHandler(readTemplate: TemplateReader): Handler {
  return async (request) => {
    const wrong = expectKind(request, BUILDKIT.kind);
    if (wrong) return wrong;
    const object = (request.object ?? {}) as unknown as Buildkit;
    if (request.operation === 'UPDATE') {
      return fromVerdict(
        request,
        validateBuildkitUpdate((request.oldObject ?? {}) as unknown as Buildkit, object),
      );
    }
    if (request.operation !== 'CREATE') {
      return { response: allow(request.uid), reason: `${request.operation} is not validated` };
    }
    const namespace = request.namespace ?? object.metadata?.namespace ?? '';
    const templateName = object.spec?.template;
    let template: BuildkitTemplate | undefined;
    if (templateName) {
      try {
        template = await readTemplate(namespace, templateName);
      } catch (error) {
        return {
          response: deny(
            request.uid,
            500,
            `could not read BuildkitTemplate "${templateName}" in namespace "${namespace}": ${(error as Error).message}`,
          ),
          reason: `template read failed: ${(error as Error).message}`,
        };
      }
    }
    return fromVerdict(request, validateBuildkitCreate(object, template));
  };
}

/** What the pod handler needs: the injection config and the features of the API server. */
export interface PodInjection {
  config: InjectionConfig;
  features: ServerFeatures;
}

/**
 * Sidecar injection (webhook/pod-injection.ts). A pod that opted in but cannot be injected is
 * refused: admitted without its sidecar it would serve clients the autoscaler cannot see.
 */
export function mutatePodHandler({ config, features }: PodInjection): Handler {
  return async (request) => {
    if (request.kind.group !== '' || request.kind.kind !== 'Pod') {
      const got = `${request.kind.kind}.${request.kind.group || 'core'}`;
      return {
        response: deny(
          request.uid,
          400,
          `this webhook route serves core Pods, not ${got}; check the webhook configuration rules`,
        ),
        reason: `unexpected resource ${got}`,
      };
    }
    if (request.operation !== 'CREATE' && request.operation !== 'UPDATE') {
      return { response: allow(request.uid), reason: `nothing to inject on ${request.operation}` };
    }
    const pod = (request.object ?? {}) as V1Pod;
    const namespace = request.namespace || pod.metadata?.namespace || '';
    const result =
      request.operation === 'CREATE'
        ? injectSidecar({ pod, namespace, config }, features)
        : keepBehindSidecar(pod);
    switch (result.decision) {
      case 'skip':
        return { response: allow(request.uid), reason: `skipped: ${result.reason}` };
      case 'refuse':
        return {
          response: deny(
            request.uid,
            403,
            `cannot inject the buildkit-fleet sidecar: ${result.reason}. Fix the pod, or opt out with the annotation ${INJECT_ANNOTATION}: "${INJECT_DISABLED}"`,
          ),
          reason: `refused: ${result.reason}`,
        };
      case 'inject':
        return { response: allowWithPatch(request.uid, result.patch), reason: `injected: ${result.reason}` };
    }
  };
}
