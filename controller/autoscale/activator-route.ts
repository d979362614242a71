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

/** What the Service's slices say about handing the Service back to its pod. */
export interface ServiceRouteState {
  /** the activator route is among them */
  activatorRouted: boolean;
  /** another slice (in practice, the EndpointSlice controller's) lists one of the pods as ready */
  podServed: boolean;
}

export function serviceRouteState(
  slices: readonly V1EndpointSlice[],
  podIPs: readonly string[],
): ServiceRouteState {
  const ips = new Set(podIPs);
  const ours = (s: V1EndpointSlice) =>
    s.metadata?.labels?.[SLICE_MANAGED_BY_LABEL] === SLICE_MANAGED_BY_VALUE;
  return {
    activatorRouted: slices.some(ours),
    podServed: slices.some(
      (slice) =>
        !ours(slice) &&
        (slice.ports ?? []).length > 0 &&
        (slice.endpoints ?? []).some(
          (e) => e.conditions?.ready !== false && e.addresses.some((a) => ips.has(a)),
        ),
    ),
  };
}

export interface RouteHandback {
  action: 'none' | 'remove' | 'wait';
  reason: string;
  /** the wait ran out: worth a warning, the Service's endpoints are not what they should be */
  gaveUp?: boolean;
}

/**
 * Whether to take the activator route away now that a pod is ready. Not before the Service's own
 * endpoints list the pod: until then the route is the Service's only endpoint, and without it
 * kube-proxy would refuse connections. A Service without a selector has no such endpoints to wait
 * for, and a wait that outlasts `maxWaitMs` ends (the route keeps working meanwhile: the activator
 * passes connections to the awake pod).
 */
export function decideRouteHandback(o: {
  state: ServiceRouteState;
  hasSelector: boolean;
  waitedMs: number;
  maxWaitMs: number;
}): RouteHandback {
  if (!o.state.activatorRouted) return { action: 'none', reason: 'the Service routes to the pod' };
  if (o.state.podServed) return { action: 'remove', reason: "the Service's endpoints list the ready pod" };
  if (!o.hasSelector)
    return { action: 'remove', reason: 'the Service has no selector: no endpoints to wait for' };
  if (o.waitedMs >= o.maxWaitMs) {
    return {
      action: 'remove',
      reason: `the Service's endpoints did not list the ready pod within ${Math.round(o.maxWaitMs / 1000)}s`,
      gaveUp: true,
    };
  }
  return { action: 'wait', reason: "waiting for the Service's endpoints to list the ready pod" };
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
