// Puts the activator route in place or takes it away (the slice itself is activator-route.ts).
import { DiscoveryV1Api } from '@kubernetes/client-node';
import type { KubeConfig, V1EndpointSlice } from '@kubernetes/client-node';

import { isConflict, isNotFound } from '../../kube/errors.ts';
import type { ActivatorRoute } from './activator-route.ts';
import { activatorSliceName, buildActivatorSlice, sliceRoutesAs } from './activator-route.ts';

export interface RouteWriter {
  /** routes to the activators; resolves with true when it changed anything */
  ensure(route: ActivatorRoute): Promise<boolean>;
  /** removes the route; resolves with true when there was one */
  remove(namespace: string, serviceName: string): Promise<boolean>;
}

export function routeWriter(kc: KubeConfig): RouteWriter {
  const api = kc.makeApiClient(DiscoveryV1Api);
  const read = async (namespace: string, name: string): Promise<V1EndpointSlice | undefined> => {
    try {
      return await api.readNamespacedEndpointSlice({ namespace, name });
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  };
  return {
    async ensure(route) {
      const desired = buildActivatorSlice(route);
      const name = desired.metadata!.name!;
      const current = await read(route.namespace, name);
      if (sliceRoutesAs(current, desired)) return false;
      if (!current) {
        try {
          await api.createNamespacedEndpointSlice({ namespace: route.namespace, body: desired });
          return true;
        } catch (error) {
          if (!isConflict(error)) throw error;
        }
      }
      const latest = current ?? (await read(route.namespace, name));
      await api.replaceNamespacedEndpointSlice({
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
        await api.deleteNamespacedEndpointSlice({ namespace, name: activatorSliceName(serviceName) });
        return true;
      } catch (error) {
        if (isNotFound(error)) return false;
        throw error;
      }
    },
  };
}
