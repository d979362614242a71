// The MutatingWebhookConfiguration and ValidatingWebhookConfiguration of buildkit-fleet, as a pure
// function of where the webhook is reachable: the Helm chart renders the same shape, local mode
// installs it with a URL pointing at 127.0.0.1.
import type {
  AdmissionregistrationV1WebhookClientConfig,
  V1MutatingWebhookConfiguration,
  V1ValidatingWebhookConfiguration,
} from '@kubernetes/client-node';

import { BUILDKIT, BUILDKIT_TEMPLATE, GROUP, VERSION } from '../api/group.ts';

export const ROUTES = {
  mutateTemplate: '/mutate/buildkittemplates',
  validateTemplate: '/validate/buildkittemplates',
  validateBuildkit: '/validate/buildkits',
} as const;

export const WEBHOOK_NAMES = {
  mutateTemplate: `default.${BUILDKIT_TEMPLATE.plural}.${GROUP}`,
  validateTemplate: `validate.${BUILDKIT_TEMPLATE.plural}.${GROUP}`,
  validateBuildkit: `validate.${BUILDKIT.plural}.${GROUP}`,
} as const;

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
