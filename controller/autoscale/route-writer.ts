// Puts the activator route in place or takes it away (the slice itself is activator-route.ts).
// Through the generic object API, so the same code writes `discovery.k8s.io/v1` and, on servers
// before 1.21, `v1beta1` (the same shape for what the route uses).
import { CustomObjectsApi } from '@kubernetes/client-node';
import type { KubeConfig, V1EndpointSlice } from '@kubernetes/client-node';

import { isConflict, isNotFound } from '../../kube/errors.ts';
import type { ActivatorRoute } from './activator-route.ts';
import {
  SERVICE_NAME_LABEL,
  activatorSliceName,
  buildActivatorSlice,
  serviceRouteState,
  sliceRoutesAs,
} from './activator-route.ts';
import type { ServiceRouteState } from './activator-route.ts';

export interface RouteWriter {
  /** routes to the activators; resolves with true when it changed anything */
  ensure(route: ActivatorRoute): Promise<boolean>;
  /** removes the route; resolves with true when there was one */
  remove(namespace: string, serviceName: string): Promise<boolean>;
  /** whether the Service is routed to the activators, and whether its own endpoints list a pod */
  state(namespace: string, serviceName: string, podIPs: string[]): Promise<ServiceRouteState>;
}

export function routeWriter(kc: KubeConfig, version: 'v1' | 'v1beta1' = 'v1'): RouteWriter {
  const api = kc.makeApiClient(CustomObjectsApi);
  const at = { group: 'discovery.k8s.io', version, plural: 'endpointslices' };
  const read = async (namespace: string, name: string): Promise<V1EndpointSlice | undefined> => {
    try {
      return (await api.getNamespacedCustomObject({ ...at, namespace, name })) as V1EndpointSlice;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  };
  return {
    async ensure(route) {
      const desired = { ...buildActivatorSlice(route), apiVersion: `discovery.k8s.io/${version}` };
      const name = desired.metadata!.name!;
      const current = await read(route.namespace, name);
      if (sliceRoutesAs(current, desired)) return false;
      if (!current) {
        try {
          await api.createNamespacedCustomObject({ ...at, namespace: route.namespace, body: desired });
          return true;
        } catch (error) {
          if (!isConflict(error)) throw error;
        }
      }
      const latest = current ?? (await read(route.namespace, name));
      await api.replaceNamespacedCustomObject({
        ...at,
        namespace: route.namespace,
        name,
        body: {
          ...desired,
          metadata: { ...desired.metadata, resourceVersion: latest?.metadata?.resourceVersion },
        },
      });
      return true;
    },
    async remove(namespace, serviceName) {
      try {
        await api.deleteNamespacedCustomObject({ ...at, namespace, name: activatorSliceName(serviceName) });
        return true;
      } catch (error) {
        if (isNotFound(error)) return false;
        throw error;
      }
    },
    async state(namespace, serviceName, podIPs) {
      const list = (await api.listNamespacedCustomObject({
        ...at,
        namespace,
        labelSelector: `${SERVICE_NAME_LABEL}=${serviceName}`,
      })) as { items?: V1EndpointSlice[] };
      return serviceRouteState(list.items ?? [], podIPs);
    },
  };
}
