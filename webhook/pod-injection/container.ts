// The sidecar container the injection adds, and the volume of its fence token. Wired to the
// sidecar by its environment flags (sidecar/index.ts); see index.ts for the two shapes and why the
// postStart hook waits until the proxy listens.
import { readFileSync } from 'node:fs';

import type { V1Container, V1ContainerPort, V1SecurityContext, V1Volume } from '@kubernetes/client-node';

import type { ServerFeatures } from '../../kube/server-features.ts';
import { SIDECAR_ENV, SIDECAR_OPTIONS } from '../../sidecar/index.ts';
import type { InjectionConfig, PodContext } from './config.ts';

export { SIDECAR_CONTAINER_NAME, STATS_PORT_NAME, TOKEN_KEY } from '../../api/sidecar-contract.ts';
import { SIDECAR_CONTAINER_NAME, STATS_PORT_NAME, TOKEN_KEY } from '../../api/sidecar-contract.ts';
export const TOKEN_VOLUME_NAME = 'buildkit-fleet-sidecar-token';
export const TOKEN_MOUNT_PATH = '/var/run/buildkit-fleet/sidecar-token';
/** Seconds the postStart hook waits for the proxy to listen before failing (the kubelet restarts it). */
export const LISTEN_WAIT_SECONDS = 30;

/**
 * `node -e` program of the postStart hook: exits 0 once a socket LISTENs (state 0A) on the port in
 * argv[1], 1 after argv[2] seconds. Reads /proc/net/tcp and tcp6 of the pod's network namespace;
 * it never connects, so the proxy does not count it. JavaScript rather than shell because the
 * sidecar's image is only known to have node; CommonJS because that is what `node -e` runs. The
 * asset is .txt so the formatter and linter leave its bytes alone: they are part of every injected
 * pod (and of its marker digest). Its file ends with a newline, the program in the pod does not.
 */
export const WAIT_FOR_LISTEN_SCRIPT = readFileSync(
  new URL('../assets/wait-for-listen.js.txt', import.meta.url),
  'utf8',
).replace(/\n$/, '');

/** Non-root, read-only root filesystem, no privilege escalation, no capabilities. */
export const DEFAULT_SIDECAR_SECURITY_CONTEXT: V1SecurityContext = {
  runAsNonRoot: true,
  runAsUser: 65532,
  runAsGroup: 65532,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
};

export function sidecarContainer(
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
      { name: SIDECAR_OPTIONS.listen.env, value: `0.0.0.0:${ports.public}` },
      { name: SIDECAR_OPTIONS.upstream.env, value: `127.0.0.1:${ports.private}` },
      { name: SIDECAR_OPTIONS.stats.env, value: `0.0.0.0:${ports.stats}` },
      { name: SIDECAR_OPTIONS['token-file'].env, value: `${TOKEN_MOUNT_PATH}/${TOKEN_KEY}` },
      { name: SIDECAR_OPTIONS.grace.env, value: String(grace) },
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
    // Every second: the pod is Ready only once this passes, and a kubelet probes first at its
    // period after the container starts, so the period is added to every cold start. /readyz is a
    // local connect to buildkitd; three misses in a row take the pod out of its Service.
    readinessProbe: {
      httpGet: { path: '/readyz', port: ports.stats, scheme: 'HTTP' },
      periodSeconds: 1,
      timeoutSeconds: 2,
      failureThreshold: 3,
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

export function tokenVolume(config: InjectionConfig): V1Volume {
  // optional: without the Secret the sidecar runs with the fence control disabled
  return { name: TOKEN_VOLUME_NAME, secret: { secretName: config.tokenSecretName, optional: true } };
}
