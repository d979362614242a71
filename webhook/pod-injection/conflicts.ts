// Refusals for pods the sidecar would collide with: a name it adds that the pod already uses, or a
// port it needs that is taken. Checked before anything is moved, so a refused pod is never half
// rewritten.
import type { V1Pod } from '@kubernetes/client-node';

import { SIDECAR_INJECTED_ANNOTATION } from '../../api/labels.ts';
import { SIDECAR_CONTAINER_NAME, STATS_PORT_NAME, TOKEN_VOLUME_NAME } from './container.ts';
import { tcpAddrs } from './public-address.ts';
import { refuse } from './refusal.ts';

/** Throws Refusal when the pod already has a container, volume or port name the injection adds. */
export function checkNamesFree(pod: V1Pod): void {
  const containers = [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])];
  if (containers.some((c) => c.name === SIDECAR_CONTAINER_NAME)) {
    refuse(
      `a container is already named ${SIDECAR_CONTAINER_NAME} but the pod has no ${SIDECAR_INJECTED_ANNOTATION} annotation`,
    );
  }
  if (pod.spec?.volumes?.some((v) => v.name === TOKEN_VOLUME_NAME)) {
    refuse(`a volume is already named ${TOKEN_VOLUME_NAME}`);
  }
  if (containers.some((c) => c.ports?.some((p) => p.name === STATS_PORT_NAME))) {
    refuse(`a container port is already named ${STATS_PORT_NAME}`);
  }
}

/** Every container port number in the pod, with the container it belongs to. */
function usedPorts(pod: V1Pod): { port: number; where: string }[] {
  const containers = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])];
  return containers.flatMap((c) =>
    [...(c.ports ?? []).map((p) => p.containerPort), ...tcpAddrs(c).map((a) => a.port)].map((port) => ({
      port,
      where: `container ${c.name}`,
    })),
  );
}

function checkFree(pod: V1Pod, port: number, what: string): void {
  const taken = usedPorts(pod).find((u) => u.port === port);
  if (taken) refuse(`${what} ${port} is already used by ${taken.where}`);
}

/** Throws Refusal unless the private and stats ports are distinct from the public one and free. */
export function checkPortsFree(pod: V1Pod, ports: { public: number; private: number; stats: number }): void {
  const { public: publicPort, private: privatePort, stats: statsPort } = ports;
  if (privatePort < 1) refuse(`no private port below public port ${publicPort}; set --sidecar-private-port`);
  if (privatePort === publicPort) refuse(`the private port ${privatePort} is buildkitd's public port`);
  if (statsPort === publicPort || statsPort === privatePort) {
    refuse(
      `the sidecar stats port ${statsPort} is buildkitd's ${statsPort === publicPort ? 'public' : 'private'} port; change --sidecar-stats-port`,
    );
  }
  checkFree(pod, privatePort, 'the private port for buildkitd');
  checkFree(pod, statsPort, 'the sidecar stats port');
}
