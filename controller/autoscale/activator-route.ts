// The route that sends a target's Service to the activators (pure): an extra EndpointSlice for
// the Service, listing the activator replicas at the target's activator port under the Service
// port's name. kube-proxy merges every slice labelled with the Service's name, and the
// EndpointSlice controller leaves slices it does not manage alone, so the route works the same
// for the Services the controller owns and for a user's Service in front of an annotated
// workload, without touching a field of the Service itself (nothing to fight `helm upgrade` or
// `kubectl apply` over).
import type { V1EndpointSlice, V1OwnerReference } from '@kubernetes/client-node';

import { MANAGED_BY_LABEL, MANAGED_BY_VALUE } from '../../api/labels.ts';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const SLICE_MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const SLICE_MANAGED_BY_VALUE = 'activator.buildkit-fleet.io';
const MAX_SLICE_NAME = 253;

export function activatorSliceName(serviceName: string): string {
  const suffix = '-bkf-activator';
  return `${serviceName.slice(0, MAX_SLICE_NAME - suffix.length)}${suffix}`;
}

export interface ActivatorRoute {
  namespace: string;
  serviceName: string;
  /** the Service port's name ('' when it has none): kube-proxy matches slice ports by name */
  portName: string;
  activatorPort: number;
  /** the activator replicas' addresses */
  addresses: string[];
  owner?: V1OwnerReference;
}

export function buildActivatorSlice(route: ActivatorRoute): V1EndpointSlice {
  const ipv6 = route.addresses.some((a) => a.includes(':'));
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: activatorSliceName(route.serviceName),
      namespace: route.namespace,
      labels: {
        [SERVICE_NAME_LABEL]: route.serviceName,
        [SLICE_MANAGED_BY_LABEL]: SLICE_MANAGED_BY_VALUE,
        [MANAGED_BY_LABEL]: MANAGED_BY_VALUE,
      },
      ...(route.owner ? { ownerReferences: [route.owner] } : {}),
    },
    addressType: ipv6 ? 'IPv6' : 'IPv4',
    endpoints: [...route.addresses]
      .filter((a) => a.includes(':') === ipv6)
      .sort()
      .map((address) => ({
        addresses: [address],
        conditions: { ready: true, serving: true, terminating: false },
      })),
    ports: [{ name: route.portName, port: route.activatorPort, protocol: 'TCP' }],
  };
}

/** True when the slice in the cluster routes as `desired` does (addresses and port). */
export function sliceRoutesAs(current: V1EndpointSlice | undefined, desired: V1EndpointSlice): boolean {
  if (!current) return false;
  const addrs = (s: V1EndpointSlice) =>
    JSON.stringify(
      (s.endpoints ?? []).flatMap((e) => (e.conditions?.ready === false ? [] : e.addresses)).sort(),
    );
  const ports = (s: V1EndpointSlice) => JSON.stringify((s.ports ?? []).map((p) => [p.name ?? '', p.port]));
  return addrs(current) === addrs(desired) && ports(current) === ports(desired);
}

/**
 * The activator port of a new target: the lowest port of the range that no other target holds.
 * Undefined when the range is full.
 */
export function allocateActivatorPort(
  range: { first: number; last: number },
  taken: ReadonlySet<number>,
): number | undefined {
  for (let port = range.first; port <= range.last; port++) if (!taken.has(port)) return port;
  return undefined;
}
