// Sidecar injection into opted-in buildkitd pods: a pure function of the pod, the injection
// config and what the API server supports. No I/O, so dry-run needs nothing special. This is the
// folder's only entry for the rest of the webhook.
//
// For a pod that carries the autoscale label (and passes the skip predicates, skip-predicates.ts), it
//   1. finds buildkitd's public TCP port: the `buildkit-fleet.io/target-port` annotation, else the
//      one `--addr tcp://host:port` (or `--addr=tcp://...`) argument in the pod (public-address.ts);
//   2. moves buildkitd to 127.0.0.1:<private port> (public - 1 unless configured) by rewriting that
//      argument, and moves the public port's `ports` entry (and its name, which the Service targets)
//      to the sidecar (rewrites.ts);
//   3. adds the sidecar `buildkit-fleet-sidecar` (`buildkit-fleet sidecar`), listening on the public
//      port and forwarding to the private one, with its stats port, the fence token Secret mounted
//      (optional), a readiness probe on its /readyz and its process settings (NODE_OPTIONS heap
//      caps, MALLOC_ARENA_MAX: sidecar/process-settings.ts) (container.ts);
//   4. points buildkitd's probes that targeted the public port at the sidecar's /readyz, so probes
//      never go through the proxy (they would count as client activity). Exec probes stay.
//   5. stamps `buildkit-fleet.io/sidecar-injected`; a pod carrying it is never injected again.
//
// Shapes (see ServerFeatures.nativeSidecars):
// - 1.29+: a native sidecar, an init container with `restartPolicy: Always`, first in
//   initContainers. The kubelet starts it before buildkitd and stops it after buildkitd exited.
// - older servers (the local 1.20): a regular container placed FIRST in `containers`. Start order:
//   the kubelet starts regular containers one by one in list order and does not start the next
//   one before the previous one's postStart hook returned, so the sidecar's postStart hook blocks
//   until the proxy listens on the public port (it reads /proc/net/tcp{,6}, never connects, so it
//   is not counted as a client). Stop order: the kubelet sends SIGTERM to all containers at once
//   (after each one's preStop hook); the sidecar then stops accepting but keeps forwarding open
//   connections until they close or its grace period ends, and buildkitd's preStop drain (the
//   controller's pods have one) holds buildkitd until no client is connected. The native shape
//   uses the same postStart hook, so "started" means "listening" there too.
import { createHash } from 'node:crypto';

import type { V1Container, V1Pod } from '@kubernetes/client-node';
import type { Operation } from 'fast-json-patch';

import { INJECT_ANNOTATION, INJECT_DISABLED, SIDECAR_INJECTED_ANNOTATION } from '../../api/labels.ts';
import type { ServerFeatures } from '../../kube/server-features.ts';
import { SIDECAR_OPTIONS } from '../../sidecar/index.ts';
import type { PodContext } from './config.ts';
import { checkNamesFree, checkPortsFree } from './conflicts.ts';
import { SIDECAR_CONTAINER_NAME, sidecarContainer, tokenVolume } from './container.ts';
import { patchOf } from './patch.ts';
import type { TcpAddr } from './public-address.ts';
import { publicAddr, tcpAddrs } from './public-address.ts';
import { Refusal, refuse } from './refusal.ts';
import { moveBehindSidecar } from './rewrites.ts';
import { skipReason } from './skip-predicates.ts';

export type { InjectionConfig, PodContext } from './config.ts';
export {
  DEFAULT_SIDECAR_SECURITY_CONTEXT,
  LISTEN_WAIT_SECONDS,
  SIDECAR_CONTAINER_NAME,
  STATS_PORT_NAME,
  TOKEN_KEY,
  TOKEN_MOUNT_PATH,
  TOKEN_VOLUME_NAME,
  WAIT_FOR_LISTEN_SCRIPT,
} from './container.ts';
export { SKIP_PREDICATES } from './skip-predicates.ts';

export type InjectionDecision =
  | { decision: 'skip'; reason: string }
  | { decision: 'refuse'; reason: string }
  | { decision: 'inject'; reason: string; pod: V1Pod; patch: Operation[] };

/** sha256 of what the injection added, for the marker annotation. */
function markerOf(sidecar: V1Container, features: ServerFeatures): string {
  const shape = features.nativeSidecars ? 'native' : 'legacy';
  const digest = createHash('sha256').update(JSON.stringify({ shape, sidecar })).digest('hex');
  return `sha256:${digest.slice(0, 16)}`;
}

/** The mutated copy of the pod and a summary of what changed; throws Refusal. */
function mutate(ctx: PodContext, features: ServerFeatures): { pod: V1Pod; summary: string } {
  const pod = structuredClone(ctx.pod);
  const spec = (pod.spec ??= { containers: [] });
  const containers = (spec.containers ??= []);
  const initContainers = spec.initContainers ?? [];
  checkNamesFree(pod);

  const addr = publicAddr(pod, containers);
  const publicPort = addr.port;
  const ports = {
    public: publicPort,
    private: ctx.config.privatePort ?? publicPort - 1,
    stats: ctx.config.statsPort,
  };
  checkPortsFree(pod, ports);

  const { probes, publicEntries } = moveBehindSidecar(addr, ports.private, ports.stats);
  const buildkitd = addr.container;

  const sidecar = sidecarContainer(ctx, features, ports, publicEntries);
  if (features.nativeSidecars) spec.initContainers = [sidecar, ...initContainers];
  else spec.containers = [sidecar, ...containers];
  spec.volumes = [...(spec.volumes ?? []), tokenVolume(ctx.config)];
  const metadata = (pod.metadata ??= {});
  metadata.annotations = {
    ...metadata.annotations,
    [SIDECAR_INJECTED_ANNOTATION]: markerOf(sidecar, features),
  };

  const summary =
    `${features.nativeSidecars ? 'native sidecar' : 'sidecar container'} in front of ${buildkitd.name}: ` +
    `public port ${publicPort}, buildkitd on 127.0.0.1:${ports.private}, stats ${ports.stats}` +
    (probes.length ? `, probes rewritten: ${probes.join(', ')}` : '');
  return { pod, summary };
}

/** Decides what to do with `pod` and, when injecting, returns the mutated pod and its patch. */
export function injectSidecar(ctx: PodContext, features: ServerFeatures): InjectionDecision {
  const reason = skipReason(ctx);
  if (reason !== undefined) return { decision: 'skip', reason };
  try {
    const inject = ctx.pod.metadata?.annotations?.[INJECT_ANNOTATION];
    if (inject !== undefined && inject !== 'enabled') {
      refuse(
        `annotation ${INJECT_ANNOTATION}: ${JSON.stringify(inject)} must be "${INJECT_DISABLED}" or "enabled"`,
      );
    }
    const { pod, summary } = mutate(ctx, features);
    return { decision: 'inject', reason: summary, pod, patch: patchOf(ctx.pod, pod) };
  } catch (error) {
    if (error instanceof Refusal) return { decision: 'refuse', reason: error.message };
    throw error;
  }
}

const envPort = (container: V1Container, name: string): number | undefined => {
  const value = container.env?.find((e) => e.name === name)?.value;
  const port = Number(value?.slice(value.lastIndexOf(':') + 1));
  return Number.isInteger(port) && port > 0 ? port : undefined;
};

/**
 * UPDATE of an injected pod: keeps buildkitd behind its sidecar. Client-side `kubectl apply` of
 * the original manifest re-asserts every field it names whose live value differs (buildkitd's
 * --addr, its probes and ports), which would otherwise be refused as a change of an immutable pod
 * spec. Re-doing the move on the updated object (ports read from the sidecar's own env) turns that
 * re-apply into a no-op update. Anything else about the pod is left as the update has it.
 */
export function keepBehindSidecar(pod: V1Pod): InjectionDecision {
  if (pod.metadata?.annotations?.[SIDECAR_INJECTED_ANNOTATION] === undefined) {
    return { decision: 'skip', reason: 'not injected' };
  }
  const after = structuredClone(pod);
  const all = [...(after.spec?.initContainers ?? []), ...(after.spec?.containers ?? [])];
  const sidecar = all.find((c) => c.name === SIDECAR_CONTAINER_NAME);
  const ports = sidecar && {
    public: envPort(sidecar, SIDECAR_OPTIONS.listen.env),
    private: envPort(sidecar, SIDECAR_OPTIONS.upstream.env),
    stats: envPort(sidecar, SIDECAR_OPTIONS.stats.env),
  };
  if (!ports?.public || !ports.private || !ports.stats) {
    return { decision: 'skip', reason: 'injected, but its sidecar and ports are not found' };
  }
  let addrs: TcpAddr[];
  try {
    addrs = all.filter((c) => c !== sidecar).flatMap(tcpAddrs);
  } catch (error) {
    if (error instanceof Refusal) return { decision: 'refuse', reason: error.message };
    throw error;
  }
  const reverted = addrs.filter((a) => a.port === ports.public);
  for (const addr of reverted) moveBehindSidecar(addr, ports.private, ports.stats);
  const patch = patchOf(pod, after);
  if (!patch.length) return { decision: 'skip', reason: 'buildkitd is still behind the sidecar' };
  return {
    decision: 'inject',
    reason: `moved buildkitd back behind the sidecar (127.0.0.1:${ports.private})`,
    pod: after,
    patch,
  };
}
