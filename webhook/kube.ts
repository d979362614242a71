// The webhook's only conversations with the API server: reading a template live, and (local mode)
// installing and removing its own webhook configurations.
import { AdmissionregistrationV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import type {
  KubeConfig,
  V1MutatingWebhookConfiguration,
  V1ValidatingWebhookConfiguration,
} from '@kubernetes/client-node';

import { BUILDKIT_TEMPLATE, GROUP, VERSION } from '../api/group.ts';
import type { BuildkitTemplate } from '../api/types.generated.ts';
import { apiErrorText, errorStatus, isConflict, isNotFound } from '../kube/errors.ts';
import type { TemplateReader } from './handlers.ts';

export function liveTemplateReader(kc: KubeConfig): TemplateReader {
  const api = kc.makeApiClient(CustomObjectsApi);
  return async (namespace, name) => {
    try {
      return (await api.getNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace,
        plural: BUILDKIT_TEMPLATE.plural,
        name,
      })) as BuildkitTemplate;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw new Error(`API server answered ${errorStatus(error) ?? 'no status'}: ${apiErrorText(error)}`, {
        cause: error,
      });
    }
  };
}

/** Creates `body`, or replaces the existing object of that name (retrying on conflicts). */
async function upsert<T extends { metadata?: { name?: string; resourceVersion?: string } }>(
  body: T,
  ops: {
    read: (name: string) => Promise<T>;
    create: (body: T) => Promise<unknown>;
    replace: (name: string, body: T) => Promise<unknown>;
  },
): Promise<void> {
  const name = body.metadata!.name!;
  for (let attempt = 0; ; attempt++) {
    try {
      const existing = await ops.read(name).catch((e) => {
        if (isNotFound(e)) return undefined;
        throw e;
      });
      if (!existing) {
        await ops.create(body);
        return;
      }
      await ops.replace(name, {
        ...body,
        metadata: { ...body.metadata, resourceVersion: existing.metadata?.resourceVersion },
      });
      return;
    } catch (error) {
      // a conflict: someone changed it (or created it) between our read and write; read again
      if (!isConflict(error) || attempt >= 4) throw error;
    }
  }
}

export async function applyWebhookConfigurations(
  kc: KubeConfig,
  mutating: V1MutatingWebhookConfiguration,
  validating: V1ValidatingWebhookConfiguration,
): Promise<void> {
  const api = kc.makeApiClient(AdmissionregistrationV1Api);
  await upsert(mutating, {
    read: (name) => api.readMutatingWebhookConfiguration({ name }),
    create: (body) => api.createMutatingWebhookConfiguration({ body }),
    replace: (name, body) => api.replaceMutatingWebhookConfiguration({ name, body }),
  });
  await upsert(validating, {
    read: (name) => api.readValidatingWebhookConfiguration({ name }),
    create: (body) => api.createValidatingWebhookConfiguration({ body }),
    replace: (name, body) => api.replaceValidatingWebhookConfiguration({ name, body }),
  });
}

export async function deleteWebhookConfigurations(kc: KubeConfig, name: string): Promise<void> {
  const api = kc.makeApiClient(AdmissionregistrationV1Api);
  const ignoreMissing = (e: unknown) => {
    if (!isNotFound(e)) throw e;
  };
  await api.deleteMutatingWebhookConfiguration({ name }).catch(ignoreMissing);
  await api.deleteValidatingWebhookConfiguration({ name }).catch(ignoreMissing);
}
