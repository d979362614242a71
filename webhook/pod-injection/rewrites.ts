// Putting buildkitd behind the sidecar: its public address becomes 127.0.0.1:<private>, the public
// port's `ports` entries leave it, and probes of the public port go to the sidecar's /readyz so
// they never pass through the proxy (they would count as client activity). Shared by the first
// injection and by keepBehindSidecar, which redoes it on updates.
import type { V1Container, V1ContainerPort, V1Probe } from '@kubernetes/client-node';

import type { TcpAddr } from './public-address.ts';

/** The port a probe handler targets, resolving a named port against the container's ports. */
function probePort(probe: V1Probe, container: V1Container): number | undefined {
  const port = probe.grpc?.port ?? probe.tcpSocket?.port ?? probe.httpGet?.port;
  if (typeof port === 'number') return port;
  if (typeof port === 'string') return container.ports?.find((p) => p.name === port)?.containerPort;
  return undefined;
}

const PROBES = ['startupProbe', 'readinessProbe', 'livenessProbe'] as const;

/** Rewrites the probes that target `publicPort` to the sidecar's /readyz; returns which. Exec probes stay. */
function rewriteProbes(container: V1Container, publicPort: number, statsPort: number): string[] {
  const rewritten: string[] = [];
  for (const key of PROBES) {
    const probe = container[key];
    if (!probe || probe.exec || probePort(probe, container) !== publicPort) continue;
    const { grpc: _grpc, tcpSocket: _tcp, httpGet: _http, ...timing } = probe;
    container[key] = { ...timing, httpGet: { path: '/readyz', port: statsPort, scheme: 'HTTP' } };
    rewritten.push(key);
  }
  return rewritten;
}

/**
 * Moves buildkitd to 127.0.0.1:<private>, points its probes of the public port at the sidecar's
 * /readyz and takes the public port's `ports` entries off it (returned for the sidecar).
 */
export function moveBehindSidecar(
  addr: TcpAddr,
  privatePort: number,
  statsPort: number,
): { probes: string[]; publicEntries: V1ContainerPort[] } {
  const buildkitd = addr.container;
  const publicPort = addr.port;
  const list = buildkitd[addr.list]!;
  const moved = `tcp://127.0.0.1:${privatePort}`;
  list[addr.index] = addr.inline ? `--addr=${moved}` : moved;
  const probes = rewriteProbes(buildkitd, publicPort, statsPort);
  // the public port's entries (and their names, which Services target) go to the sidecar
  const isPublic = (p: V1ContainerPort) => p.containerPort === publicPort && (p.protocol ?? 'TCP') === 'TCP';
  const publicEntries = (buildkitd.ports ?? []).filter(isPublic);
  if (buildkitd.ports) {
    buildkitd.ports = buildkitd.ports.filter((p) => !isPublic(p));
    if (!buildkitd.ports.length) delete buildkitd.ports;
  }
  return { probes, publicEntries };
}
