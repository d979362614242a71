// What every activator replica should hold or forward (pure), derived from the caches alone, so
// that each replica reaches the same answer without talking to the leader: every autoscaled
// Buildkit with an activator port is a target; it is forwarded to its pod once the pod runs and
// its buildkitd is confirmed serving (the kubelet's Ready may come later), and held otherwise.
import type { V1Pod, V1Service } from '@kubernetes/client-node';

import type { ActivatorTarget } from '../../activator/index.ts';
import { hasReadyCondition } from '../../kube/pod-status.ts';

export interface TargetSource {
  key: string;
  activatorPort: number | undefined;
  pods: V1Pod[];
  service: V1Service | undefined;
}

/**
 * A pod the activator may splice to once its buildkitd answers: with an address, not terminating,
 * not ended. Not necessarily Running, let alone Ready: the activator dials the pod's address
 * itself, and its own check (the sidecar's gRPC health call to buildkitd) is what it waits for.
 * The kubelet may report the address before the containers run, and its next readiness tick can
 * come seconds after buildkitd serves; asking from the moment there is an address takes both
 * waits out of a wake.
 */
export const isServablePod = (pod: V1Pod): boolean =>
  !pod.metadata?.deletionTimestamp &&
  (pod.status?.phase === 'Running' || pod.status?.phase === 'Pending') &&
  Boolean(pod.status?.podIP);

const isReady = hasReadyCondition;

/** The pod port the Service sends clients to (a named targetPort is looked up in the pod). */
export function servicePodPort(service: V1Service | undefined, pod: V1Pod): number | undefined {
  const target = service?.spec?.ports?.[0]?.targetPort ?? service?.spec?.ports?.[0]?.port;
  if (typeof target === 'number') return target;
  if (target === undefined) return undefined;
  if (/^[0-9]+$/.test(target)) return Number(target);
  for (const c of [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])]) {
    const port = c.ports?.find((p) => p.name === target);
    if (port) return port.containerPort;
  }
  return undefined;
}

/** The pod a target forwards to: a Ready one first, then the oldest, for a stable choice. */
export function forwardPod(pods: V1Pod[]): V1Pod | undefined {
  const created = (p: V1Pod) => new Date(p.metadata?.creationTimestamp ?? 0).getTime();
  return pods
    .filter(isServablePod)
    .sort(
      (a, b) =>
        Number(isReady(b)) - Number(isReady(a)) ||
        created(a) - created(b) ||
        (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''),
    )[0];
}

/**
 * The activator's whole target set. `confirmed` holds the uids of pods whose buildkitd answered
 * the readiness check; a ready pod not confirmed yet keeps its target in hold.
 */
export function activatorTargets(sources: TargetSource[], confirmed: ReadonlySet<string>): ActivatorTarget[] {
  const targets: ActivatorTarget[] = [];
  const ports = new Set<number>();
  for (const s of sources) {
    if (!s.activatorPort || ports.has(s.activatorPort)) continue;
    ports.add(s.activatorPort);
    const pod = forwardPod(s.pods);
    const port = pod && servicePodPort(s.service, pod);
    if (pod && port && confirmed.has(pod.metadata?.uid ?? '')) {
      targets.push({
        key: s.key,
        port: s.activatorPort,
        mode: { kind: 'forward', upstream: { host: pod.status!.podIP!, port } },
      });
    } else {
      targets.push({ key: s.key, port: s.activatorPort, mode: { kind: 'hold' } });
    }
  }
  return targets.sort((a, b) => a.port - b.port);
}
