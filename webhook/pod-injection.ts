// Sidecar injection into opted-in buildkitd pods: a pure function of the pod, the injection
// config and what the API server supports. No I/O, so dry-run needs nothing special.
//
// For a pod that carries the autoscale label (and passes the skip predicates below), it
//   1. finds buildkitd's public TCP port: the `buildkit-fleet.io/target-port` annotation, else the
//      one `--addr tcp://host:port` (or `--addr=tcp://...`) argument in the pod;
//   2. moves buildkitd to 127.0.0.1:<private port> (public - 1 unless configured) by rewriting that
//      argument, and moves the public port's `ports` entry (and its name, which the Service targets)
//      to the sidecar;
//   3. adds the sidecar `buildkit-fleet-sidecar` (`buildkit-fleet sidecar`), listening on the public
//      port and forwarding to the private one, with its stats port, the fence token Secret mounted
//      (optional), a readiness probe on its /readyz and its process settings (NODE_OPTIONS heap
//      caps, MALLOC_ARENA_MAX: sidecar/process-settings.ts);
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

import type {
  V1Container,
  V1ContainerPort,
  V1Pod,
  V1Probe,
  V1ResourceRequirements,
  V1SecurityContext,
  V1Volume,
} from '@kubernetes/client-node';
import type { Operation } from 'fast-json-patch';

import {
  AUTOSCALE_ENABLED,
  AUTOSCALE_LABEL,
  INJECT_ANNOTATION,
  INJECT_DISABLED,
  SIDECAR_INJECTED_ANNOTATION,
  TARGET_PORT_ANNOTATION,
} from '../api/labels.ts';
import type { ServerFeatures } from '../kube/server-features.ts';
import { SIDECAR_ENV } from '../sidecar/process-settings.ts';

export const SIDECAR_CONTAINER_NAME = 'buildkit-fleet-sidecar';
/** Name of the sidecar's stats port (the controller scrapes /stats there, probes hit /readyz). */
export const STATS_PORT_NAME = 'bkf-stats';
export const TOKEN_VOLUME_NAME = 'buildkit-fleet-sidecar-token';
export const TOKEN_MOUNT_PATH = '/var/run/buildkit-fleet/sidecar-token';
/** The Secret key holding the fence token. */
export const TOKEN_KEY = 'token';
/** Namespaces never injected (besides the platform's own), also when a 1.20 namespace lacks its name label. */
export const SYSTEM_NAMESPACES: readonly string[] = ['kube-system', 'kube-public', 'kube-node-lease'];
/** Where the chart installs the platform (webhook/manifests.ts), when POD_NAMESPACE does not say. */
export const DEFAULT_PLATFORM_NAMESPACE = 'buildkit-fleet-system';
/** Seconds the postStart hook waits for the proxy to listen before failing (the kubelet restarts it). */
export const LISTEN_WAIT_SECONDS = 30;

export interface InjectionConfig {
  image: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  resources: V1ResourceRequirements;
  /** the sidecar's plain-HTTP stats port (BKF_SIDECAR_STATS) */
  statsPort: number;
  /** buildkitd's new port on 127.0.0.1; undefined: the public port - 1 */
  privatePort?: number;
  /** Secret holding the fence token under key `token`; mounted optional */
  tokenSecretName: string;
  /** BKF_SIDECAR_GRACE; undefined: the pod's terminationGracePeriodSeconds (30 when unset) */
  graceSeconds?: number;
  /** the platform's own namespace: its pods are never injected */
  platformNamespace: string;
  /** undefined: DEFAULT_SIDECAR_SECURITY_CONTEXT */
  securityContext?: V1SecurityContext;
}

/** Non-root, read-only root filesystem, no privilege escalation, no capabilities. */
export const DEFAULT_SIDECAR_SECURITY_CONTEXT: V1SecurityContext = {
  runAsNonRoot: true,
  runAsUser: 65532,
  runAsGroup: 65532,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
};

export type InjectionDecision =
  | { decision: 'skip'; reason: string }
  | { decision: 'refuse'; reason: string }
  | { decision: 'inject'; reason: string; pod: V1Pod; patch: Operation[] };

/** What the skip predicates look at. */
export interface PodContext {
  pod: V1Pod;
  /** the request's namespace (pods created through a controller may not carry it in metadata) */
  namespace: string;
  config: InjectionConfig;
}

type Predicate = (ctx: PodContext) => string | undefined;

const labelsOf = (pod: V1Pod) => pod.metadata?.labels ?? {};
const annotationsOf = (pod: V1Pod) => pod.metadata?.annotations ?? {};

/** Each returns why the pod is left alone, or undefined. Checked in this order. */
export const SKIP_PREDICATES: readonly Predicate[] = [
  ({ namespace, config }) =>
    namespace === config.platformNamespace
      ? `namespace ${namespace} is the platform's own`
      : SYSTEM_NAMESPACES.includes(namespace)
        ? `namespace ${namespace} is a system namespace`
        : undefined,
  ({ pod }) =>
    labelsOf(pod)[AUTOSCALE_LABEL] === AUTOSCALE_ENABLED
      ? undefined
      : `not opted in (label ${AUTOSCALE_LABEL} is not "${AUTOSCALE_ENABLED}")`,
  ({ pod }) =>
    annotationsOf(pod)[INJECT_ANNOTATION] === INJECT_DISABLED
      ? `opted out (annotation ${INJECT_ANNOTATION}: "${INJECT_DISABLED}")`
      : undefined,
  ({ pod }) => {
    const marker = annotationsOf(pod)[SIDECAR_INJECTED_ANNOTATION];
    return marker === undefined ? undefined : `already injected (${SIDECAR_INJECTED_ANNOTATION}: ${marker})`;
  },
];

/** A pod that opted in but cannot be injected as asked. */
class Refusal extends Error {}
const refuse = (message: string): never => {
  throw new Refusal(message);
};

/** Where one `--addr tcp://...` value sits in a container's command or args. */
interface TcpAddr {
  container: V1Container;
  list: 'command' | 'args';
  index: number;
  /** `--addr=tcp://...` (one element) rather than `--addr`, `tcp://...` */
  inline: boolean;
  value: string;
  port: number;
}

const TCP_ADDR = /^tcp:\/\/(\[[^\]]*\]|[^[\]:/]*):([0-9]{1,5})$/;

function tcpAddrs(container: V1Container): TcpAddr[] {
  const found: TcpAddr[] = [];
  for (const list of ['command', 'args'] as const) {
    const items = container[list] ?? [];
    items.forEach((item, i) => {
      let value: string | undefined;
      let index = i;
      const inline = item.startsWith('--addr=');
      if (inline) value = item.slice('--addr='.length);
      else if (item === '--addr' && i + 1 < items.length) [value, index] = [items[i + 1], i + 1];
      if (value === undefined || !value.startsWith('tcp://')) return;
      const match = TCP_ADDR.exec(value);
      const port = match ? Number(match[2]) : NaN;
      if (!match || port < 1 || port > 65535) {
        refuse(
          `container ${container.name}: cannot understand buildkitd address ${JSON.stringify(value)} (expected tcp://<host>:<port>)`,
        );
      }
      found.push({ container, list, index, inline, value, port });
    });
  }
  return found;
}

function targetPortAnnotation(pod: V1Pod): number | undefined {
  const text = annotationsOf(pod)[TARGET_PORT_ANNOTATION];
  if (text === undefined) return undefined;
  const port = /^[0-9]{1,5}$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!(port >= 1 && port <= 65535)) {
    refuse(`annotation ${TARGET_PORT_ANNOTATION}: ${JSON.stringify(text)} is not a port number 1-65535`);
  }
  return port;
}

const describeAddrs = (addrs: TcpAddr[]) => addrs.map((a) => `${a.container.name}: ${a.value}`).join(', ');

/** buildkitd's public address: the target-port annotation's, else the only one in the pod. */
function publicAddr(pod: V1Pod, containers: V1Container[]): TcpAddr {
  const addrs = containers.flatMap(tcpAddrs);
  const wanted = targetPortAnnotation(pod);
  if (!addrs.length) {
    refuse(
      'no container has a buildkitd TCP address (--addr tcp://<host>:<port> or --addr=tcp://...), so there is no port to put the sidecar in front of',
    );
  }
  if (wanted === undefined) {
    if (addrs.length > 1) {
      refuse(
        `several buildkitd TCP addresses (${describeAddrs(addrs)}); set annotation ${TARGET_PORT_ANNOTATION} to the port clients use`,
      );
    }
    return addrs[0]!;
  }
  const matching = addrs.filter((a) => a.port === wanted);
  if (matching.length !== 1) {
    refuse(
      matching.length
        ? `annotation ${TARGET_PORT_ANNOTATION}: ${wanted} matches several addresses (${describeAddrs(matching)})`
        : `annotation ${TARGET_PORT_ANNOTATION}: ${wanted} is not the port of any buildkitd TCP address (${describeAddrs(addrs)})`,
    );
  }
  return matching[0]!;
}

/** The port a probe handler targets, resolving a named port against the container's ports. */
function probePort(probe: V1Probe, container: V1Container): number | undefined {
  const port = probe.grpc?.port ?? probe.tcpSocket?.port ?? probe.httpGet?.port;
  if (typeof port === 'number') return port;
  if (typeof port === 'string') return container.ports?.find((p) => p.name === port)?.containerPort;
  return undefined;
}

const PROBES = ['startupProbe', 'readinessProbe', 'livenessProbe'] as const;

/** Rewrites the probes that target `publicPort` to the sidecar's /readyz; returns which. */
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
 * `node -e` program of the postStart hook: exits 0 once a socket LISTENs (state 0A) on the port in
 * argv[1], 1 after argv[2] seconds. Reads /proc/net/tcp and tcp6 of the pod's network namespace;
 * it never connects, so the proxy does not count it.
 */
export const WAIT_FOR_LISTEN_SCRIPT = [
  "const fs = require('node:fs');",
  'const port = Number(process.argv[1]);',
  'const deadline = Date.now() + 1000 * Number(process.argv[2]);',
  "const suffix = ':' + port.toString(16).toUpperCase().padStart(4, '0');",
  'const listening = () =>',
  "  ['/proc/net/tcp', '/proc/net/tcp6'].some((file) => {",
  "    let text = '';",
  "    try { text = fs.readFileSync(file, 'utf8'); } catch { return false; }",
  "    return text.split('\\n').some((line) => {",
  '      const f = line.trim().split(/\\s+/);',
  "      return f.length > 3 && f[1].endsWith(suffix) && f[3] === '0A';",
  '    });',
  '  });',
  'const check = () => {',
  '  if (listening()) process.exit(0);',
  "  if (Date.now() > deadline) { console.error('sidecar is not listening on port ' + port); process.exit(1); }",
  '  setTimeout(check, 100);',
  '};',
  'check();',
].join('\n');

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

function sidecarContainer(
  ctx: PodContext,
  features: ServerFeatures,
  ports: { public: number; private: number; stats: number },
  publicPortEntries: V1ContainerPort[],
): V1Container {
  const { config, pod } = ctx;
  const grace = config.graceSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
  const securityContext = structuredClone(config.securityContext ?? DEFAULT_SIDECAR_SECURITY_CONTEXT);
  if (features.seccompField) securityContext.seccompProfile ??= { type: 'RuntimeDefault' };
  return {
    name: SIDECAR_CONTAINER_NAME,
    image: config.image,
    imagePullPolicy: config.imagePullPolicy ?? 'IfNotPresent',
    command: ['buildkit-fleet', 'sidecar'],
    env: [
      { name: 'BKF_SIDECAR_LISTEN', value: `0.0.0.0:${ports.public}` },
      { name: 'BKF_SIDECAR_UPSTREAM', value: `127.0.0.1:${ports.private}` },
      { name: 'BKF_SIDECAR_STATS', value: `0.0.0.0:${ports.stats}` },
      { name: 'BKF_SIDECAR_TOKEN_FILE', value: `${TOKEN_MOUNT_PATH}/${TOKEN_KEY}` },
      { name: 'BKF_SIDECAR_GRACE', value: String(grace) },
      // heap caps and malloc arenas (sidecar/process-settings.ts); the postStart hook's node gets them too
      ...Object.entries(SIDECAR_ENV).map(([name, value]) => ({ name, value })),
    ],
    ports: [
      ...(publicPortEntries.length
        ? publicPortEntries
        : [{ containerPort: ports.public, protocol: 'TCP' as const }]),
      { name: STATS_PORT_NAME, containerPort: ports.stats, protocol: 'TCP' },
    ],
    resources: structuredClone(config.resources),
    readinessProbe: {
      httpGet: { path: '/readyz', port: ports.stats, scheme: 'HTTP' },
      periodSeconds: 5,
      timeoutSeconds: 2,
      failureThreshold: 2,
    },
    lifecycle: {
      postStart: {
        exec: {
          command: ['node', '-e', WAIT_FOR_LISTEN_SCRIPT, String(ports.public), String(LISTEN_WAIT_SECONDS)],
        },
      },
    },
    securityContext,
    volumeMounts: [{ name: TOKEN_VOLUME_NAME, mountPath: TOKEN_MOUNT_PATH, readOnly: true }],
    ...(features.nativeSidecars ? { restartPolicy: 'Always' } : {}),
  };
}

function tokenVolume(config: InjectionConfig): V1Volume {
  // optional: without the Secret the sidecar runs with the fence control disabled
  return { name: TOKEN_VOLUME_NAME, secret: { secretName: config.tokenSecretName, optional: true } };
}

/** sha256 of what the injection added, for the marker annotation. */
function markerOf(sidecar: V1Container, features: ServerFeatures): string {
  const shape = features.nativeSidecars ? 'native' : 'legacy';
  const digest = createHash('sha256').update(JSON.stringify({ shape, sidecar })).digest('hex');
  return `sha256:${digest.slice(0, 16)}`;
}

/**
 * Moves buildkitd to 127.0.0.1:<private>, points its probes of the public port at the sidecar's
 * /readyz and takes the public port's `ports` entries off it (returned for the sidecar).
 */
function moveBehindSidecar(
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

/** The mutated copy of the pod and a summary of what changed; throws Refusal. */
function mutate(ctx: PodContext, features: ServerFeatures): { pod: V1Pod; summary: string } {
  const pod = structuredClone(ctx.pod);
  const spec = (pod.spec ??= { containers: [] });
  const containers = (spec.containers ??= []);
  const initContainers = spec.initContainers ?? [];
  if ([...containers, ...initContainers].some((c) => c.name === SIDECAR_CONTAINER_NAME)) {
    refuse(
      `a container is already named ${SIDECAR_CONTAINER_NAME} but the pod has no ${SIDECAR_INJECTED_ANNOTATION} annotation`,
    );
  }
  if (spec.volumes?.some((v) => v.name === TOKEN_VOLUME_NAME)) {
    refuse(`a volume is already named ${TOKEN_VOLUME_NAME}`);
  }
  if ([...containers, ...initContainers].some((c) => c.ports?.some((p) => p.name === STATS_PORT_NAME))) {
    refuse(`a container port is already named ${STATS_PORT_NAME}`);
  }

  const addr = publicAddr(pod, containers);
  const publicPort = addr.port;
  const privatePort = ctx.config.privatePort ?? publicPort - 1;
  const statsPort = ctx.config.statsPort;
  if (privatePort < 1) refuse(`no private port below public port ${publicPort}; set --sidecar-private-port`);
  if (privatePort === publicPort) refuse(`the private port ${privatePort} is buildkitd's public port`);
  if (statsPort === publicPort || statsPort === privatePort) {
    refuse(
      `the sidecar stats port ${statsPort} is buildkitd's ${statsPort === publicPort ? 'public' : 'private'} port; change --sidecar-stats-port`,
    );
  }
  checkFree(pod, privatePort, 'the private port for buildkitd');
  checkFree(pod, statsPort, 'the sidecar stats port');

  const { probes, publicEntries } = moveBehindSidecar(addr, privatePort, statsPort);
  const buildkitd = addr.container;

  const sidecar = sidecarContainer(
    ctx,
    features,
    { public: publicPort, private: privatePort, stats: statsPort },
    publicEntries,
  );
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
    `public port ${publicPort}, buildkitd on 127.0.0.1:${privatePort}, stats ${statsPort}` +
    (probes.length ? `, probes rewritten: ${probes.join(', ')}` : '');
  return { pod, summary };
}

/** The JSON patch from `before` to `after`, one whole-value op per changed field. */
function patchOf(before: V1Pod, after: V1Pod): Operation[] {
  const ops: Operation[] = [];
  if (!before.metadata) ops.push({ op: 'add', path: '/metadata', value: after.metadata });
  const fields = [
    ...(before.metadata ? [['metadata', 'annotations'] as const] : []),
    ['spec', 'initContainers'] as const,
    ['spec', 'containers'] as const,
    ['spec', 'volumes'] as const,
  ];
  for (const [parent, key] of fields) {
    const was = (before[parent] as Record<string, unknown> | undefined)?.[key];
    const now = (after[parent] as Record<string, unknown> | undefined)?.[key];
    if (JSON.stringify(was) === JSON.stringify(now)) continue;
    ops.push({ op: was === undefined ? 'add' : 'replace', path: `/${parent}/${key}`, value: now });
  }
  return ops;
}

/** Decides what to do with `pod` and, when injecting, returns the mutated pod and its patch. */
export function injectSidecar(ctx: PodContext, features: ServerFeatures): InjectionDecision {
  for (const predicate of SKIP_PREDICATES) {
    const reason = predicate(ctx);
    if (reason !== undefined) return { decision: 'skip', reason };
  }
  try {
    const inject = annotationsOf(ctx.pod)[INJECT_ANNOTATION];
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
  if (annotationsOf(pod)[SIDECAR_INJECTED_ANNOTATION] === undefined) {
    return { decision: 'skip', reason: 'not injected' };
  }
  const after = structuredClone(pod);
  const all = [...(after.spec?.initContainers ?? []), ...(after.spec?.containers ?? [])];
  const sidecar = all.find((c) => c.name === SIDECAR_CONTAINER_NAME);
  const ports = sidecar && {
    public: envPort(sidecar, 'BKF_SIDECAR_LISTEN'),
    private: envPort(sidecar, 'BKF_SIDECAR_UPSTREAM'),
    stats: envPort(sidecar, 'BKF_SIDECAR_STATS'),
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
