// The MutatingWebhookConfiguration and ValidatingWebhookConfiguration of buildkit-fleet, as a pure
// function of where the webhook is reachable: the Helm chart renders the same shape, local mode
// installs it with a URL pointing at 127.0.0.1.
import type {
  AdmissionregistrationV1WebhookClientConfig,
  V1MutatingWebhookConfiguration,
  V1ValidatingWebhookConfiguration,
} from '@kubernetes/client-node';

import { BUILDKIT, BUILDKIT_TEMPLATE, GROUP, VERSION } from '../api/group.ts';
import { AUTOSCALE_ENABLED, AUTOSCALE_LABEL } from '../api/labels.ts';
import { DEFAULT_PLATFORM_NAMESPACE, SYSTEM_NAMESPACES } from '../api/namespaces.ts';

export const ROUTES = {
  mutateTemplate: '/mutate/buildkittemplates',
  validateTemplate: '/validate/buildkittemplates',
  validateBuildkit: '/validate/buildkits',
  mutatePod: '/mutate/pods',
} as const;

export const WEBHOOK_NAMES = {
  mutateTemplate: `default.${BUILDKIT_TEMPLATE.plural}.${GROUP}`,
  validateTemplate: `validate.${BUILDKIT_TEMPLATE.plural}.${GROUP}`,
  validateBuildkit: `validate.${BUILDKIT.plural}.${GROUP}`,
  mutatePod: 'sidecar.pods.buildkit-fleet.io',
} as const;

/** The namespace label Kubernetes sets on every namespace from 1.21 on (absent on 1.20). */
export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

export interface WebhookConfigOptions {
  /** name of both configuration objects */
  name: string;
  /** where the API server reaches the route at `path` */
  clientConfig: (path: string) => AdmissionregistrationV1WebhookClientConfig;
  caBundle?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Fail: a manifest is never stored unchecked. Ignore: applies succeed while the webhook is down. */
  failurePolicy?: 'Fail' | 'Ignore';
  /** only namespaces with these labels (local development against a shared cluster) */
  namespaceLabels?: Record<string, string>;
  /** the platform's own namespace, which the pod webhook leaves out (besides the system ones) */
  platformNamespace?: string;
}

const rule = (plural: string) => ({
  apiGroups: [GROUP],
  apiVersions: [VERSION],
  operations: ['CREATE', 'UPDATE'],
  resources: [plural],
  scope: 'Namespaced',
});

function common(o: WebhookConfigOptions, path: string, timeoutSeconds: number) {
  const clientConfig = { ...o.clientConfig(path), ...(o.caBundle ? { caBundle: o.caBundle } : {}) };
  return {
    clientConfig,
    admissionReviewVersions: ['v1'],
    sideEffects: 'None',
    failurePolicy: o.failurePolicy ?? 'Fail',
    matchPolicy: 'Equivalent',
    timeoutSeconds,
    ...(o.namespaceLabels ? { namespaceSelector: { matchLabels: o.namespaceLabels } } : {}),
  };
}

const metadata = (o: WebhookConfigOptions) => ({
  name: o.name,
  labels: {
    'app.kubernetes.io/name': 'buildkit-fleet',
    'app.kubernetes.io/component': 'webhook',
    ...o.labels,
  },
  ...(o.annotations ? { annotations: o.annotations } : {}),
});

export function mutatingWebhookConfiguration(o: WebhookConfigOptions): V1MutatingWebhookConfiguration {
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: metadata(o),
    webhooks: [
      {
        name: WEBHOOK_NAMES.mutateTemplate,
        ...common(o, ROUTES.mutateTemplate, 5),
        // defaults never depend on what other webhooks add, so one call is enough
        reinvocationPolicy: 'Never',
        rules: [rule(BUILDKIT_TEMPLATE.plural)],
      },
      podWebhook(o),
    ],
  };
}

export function validatingWebhookConfiguration(o: WebhookConfigOptions): V1ValidatingWebhookConfiguration {
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingWebhookConfiguration',
    metadata: metadata(o),
    webhooks: [
      {
        name: WEBHOOK_NAMES.validateTemplate,
        ...common(o, ROUTES.validateTemplate, 5),
        rules: [rule(BUILDKIT_TEMPLATE.plural)],
      },
      // reads the template from the API server, so it gets more time
      {
        name: WEBHOOK_NAMES.validateBuildkit,
        ...common(o, ROUTES.validateBuildkit, 10),
        rules: [rule(BUILDKIT.plural)],
      },
    ],
  };
}

/**
 * Sidecar injection. Narrow: only pods carrying the autoscale label reach it (objectSelector), and
 * never pods of the system namespaces or the platform's own (namespaceSelector on the name label
 * that 1.21+ sets; `NotIn` also matches namespaces without the label, so on 1.20 those pods do
 * reach the webhook, which skips them itself). CREATE injects; UPDATE only keeps an injected pod's
 * buildkitd behind its sidecar when `kubectl apply` of the original manifest re-asserts its old
 * --addr, probes and ports (see keepBehindSidecar), so re-applying changes nothing.
 * failurePolicy Fail: an opted-in pod admitted without its sidecar would serve clients the
 * autoscaler cannot see, and could be scaled down under them. 5 s: the decision is pure.
 * reinvocationPolicy IfNeeded: a later webhook that changes the pod gets us called again, and the
 * injected marker makes that call a no-op.
 */
function podWebhook(o: WebhookConfigOptions) {
  const excluded = [...SYSTEM_NAMESPACES, o.platformNamespace ?? DEFAULT_PLATFORM_NAMESPACE];
  return {
    name: WEBHOOK_NAMES.mutatePod,
    ...common(o, ROUTES.mutatePod, 5),
    namespaceSelector: {
      ...(o.namespaceLabels ? { matchLabels: o.namespaceLabels } : {}),
      matchExpressions: [{ key: NAMESPACE_NAME_LABEL, operator: 'NotIn', values: excluded }],
    },
    objectSelector: { matchLabels: { [AUTOSCALE_LABEL]: AUTOSCALE_ENABLED } },
    reinvocationPolicy: 'IfNeeded',
    rules: [
      {
        apiGroups: [''],
        apiVersions: ['v1'],
        operations: ['CREATE', 'UPDATE'],
        resources: ['pods'],
        scope: 'Namespaced',
      },
    ],
  };
}
