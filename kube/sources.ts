// List+watch sources for the resources the controller caches. Each builds the list call and the
// watch path from one scope, so the two can never select different objects.
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import type {
  KubeConfig,
  KubernetesListObject,
  KubernetesObject,
  V1ConfigMap,
  V1PersistentVolumeClaim,
  V1Pod,
  V1Service,
} from '@kubernetes/client-node';
// Not re-exported by the package index, but it is what the typed APIs deserialize lists with;
// using it for watch events gives cached objects one shape however they arrived.
import { ObjectSerializer } from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';

import { BUILDKIT, BUILDKIT_TEMPLATE, GROUP, VERSION } from '../api/group.ts';
import type { Buildkit, BuildkitTemplate } from '../api/types.generated.ts';
import type { ListWatchSource } from './informer.ts';
import type { SlimWorkload } from './slim.ts';
import { slimPod, slimService, slimWorkload, withoutManagedFields } from './slim.ts';

export interface Scope {
  /** One namespace; all namespaces when absent. */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
}

interface ListRequest {
  labelSelector?: string;
  fieldSelector?: string;
}

/**
 * How watch events become cached objects: `typeName` deserializes them like the typed list calls
 * do; `slim` instead picks the fields the controller reads from the raw JSON (and from listed
 * objects), which makes deserializing unnecessary.
 */
type Shape<T> = { typeName: string; slim?: undefined } | { slim: (object: T) => T };

function coreSource<T extends KubernetesObject>(
  resource: string,
  shape: Shape<T>,
  scope: Scope,
  listNamespaced: (request: ListRequest & { namespace: string }) => Promise<KubernetesListObject<T>>,
  listAll: (request: ListRequest) => Promise<KubernetesListObject<T>>,
): ListWatchSource<T> {
  const { namespace, labelSelector, fieldSelector } = scope;
  const request: ListRequest = {};
  if (labelSelector) request.labelSelector = labelSelector;
  if (fieldSelector) request.fieldSelector = fieldSelector;
  return {
    resource,
    path: namespace ? `/api/v1/namespaces/${namespace}/${resource}` : `/api/v1/${resource}`,
    list: () => (namespace ? listNamespaced({ ...request, namespace }) : listAll(request)),
    ...request,
    ...('typeName' in shape
      ? {
          fromWatch: (raw: unknown) => ObjectSerializer.deserialize(raw, shape.typeName, '') as T,
          transform: (object: T) => withoutManagedFields(object),
        }
      : { transform: shape.slim }),
  };
}

export function configMapSource(kc: KubeConfig, scope: Scope = {}): ListWatchSource<V1ConfigMap> {
  const api = kc.makeApiClient(CoreV1Api);
  return coreSource<V1ConfigMap>(
    'configmaps',
    { typeName: 'V1ConfigMap' },
    scope,
    (r) => api.listNamespacedConfigMap(r),
    (r) => api.listConfigMapForAllNamespaces(r),
  );
}

/** Select owned pods by label: a cluster-wide pod cache costs hundreds of MB on big clusters. */
export function podSource(kc: KubeConfig, scope: Scope = {}): ListWatchSource<V1Pod> {
  const api = kc.makeApiClient(CoreV1Api);
  return coreSource<V1Pod>(
    'pods',
    { slim: slimPod },
    scope,
    (r) => api.listNamespacedPod(r),
    (r) => api.listPodForAllNamespaces(r),
  );
}

export function serviceSource(kc: KubeConfig, scope: Scope = {}): ListWatchSource<V1Service> {
  const api = kc.makeApiClient(CoreV1Api);
  return coreSource<V1Service>(
    'services',
    { slim: slimService },
    scope,
    (r) => api.listNamespacedService(r),
    (r) => api.listServiceForAllNamespaces(r),
  );
}

/** The claims of spec.persistence; few and small, so cached whole (without managedFields). */
export function pvcSource(kc: KubeConfig, scope: Scope = {}): ListWatchSource<V1PersistentVolumeClaim> {
  const api = kc.makeApiClient(CoreV1Api);
  return coreSource<V1PersistentVolumeClaim>(
    'persistentvolumeclaims',
    { typeName: 'V1PersistentVolumeClaim' },
    scope,
    (r) => api.listNamespacedPersistentVolumeClaim(r),
    (r) => api.listPersistentVolumeClaimForAllNamespaces(r),
  );
}

export interface CustomResource {
  group: string;
  version: string;
  plural: string;
}

/**
 * A custom resource, objects as the API server sends them (plain JSON: timestamps are strings,
 * in lists and watch events alike).
 */
export function customObjectSource<T extends KubernetesObject>(
  kc: KubeConfig,
  resource: CustomResource,
  scope: Scope = {},
): ListWatchSource<T> {
  const api = kc.makeApiClient(CustomObjectsApi);
  const { group, version, plural } = resource;
  const { namespace, labelSelector, fieldSelector } = scope;
  const request: ListRequest = {};
  if (labelSelector) request.labelSelector = labelSelector;
  if (fieldSelector) request.fieldSelector = fieldSelector;
  return {
    resource: `${plural}.${group}`,
    path: namespace
      ? `/apis/${group}/${version}/namespaces/${namespace}/${plural}`
      : `/apis/${group}/${version}/${plural}`,
    list: async () =>
      (namespace
        ? await api.listNamespacedCustomObject({ group, version, plural, namespace, ...request })
        : await api.listClusterCustomObject({
            group,
            version,
            plural,
            ...request,
          })) as KubernetesListObject<T>,
    ...request,
    transform: (object) => withoutManagedFields(object),
  };
}

type BuildkitObject = Buildkit & KubernetesObject;
type BuildkitTemplateObject = BuildkitTemplate & KubernetesObject;

export function buildkitSource(kc: KubeConfig, scope: Scope = {}): ListWatchSource<BuildkitObject> {
  return customObjectSource<BuildkitObject>(
    kc,
    { group: GROUP, version: VERSION, plural: BUILDKIT.plural },
    scope,
  );
}

export function buildkitTemplateSource(
  kc: KubeConfig,
  scope: Scope = {},
): ListWatchSource<BuildkitTemplateObject> {
  return customObjectSource<BuildkitTemplateObject>(
    kc,
    { group: GROUP, version: VERSION, plural: BUILDKIT_TEMPLATE.plural },
    scope,
  );
}

/**
 * StatefulSets or Deployments (`plural`), slimmed to what scale to zero reads: the pod specs,
 * most of a workload's size, never enter the cache.
 */
export function workloadSource(
  kc: KubeConfig,
  plural: 'statefulsets' | 'deployments',
  scope: Scope = {},
): ListWatchSource<SlimWorkload & KubernetesObject> {
  return {
    ...customObjectSource<SlimWorkload & KubernetesObject>(
      kc,
      { group: 'apps', version: 'v1', plural },
      scope,
    ),
    transform: (object) => slimWorkload(object),
  };
}
