// The buildkitd Pod and Service of a Buildkit, as pure functions of the template, the instance and
// what the API server supports. Behaviour follows seatgeek/buildkit-operator's BuildPod; the
// differences are marked "seatgeek:" below.
import { createHash } from 'node:crypto';

import type {
  V1Container,
  V1EnvVar,
  V1PodSpec,
  V1Pod,
  V1Probe,
  V1SecurityContext,
  V1Service,
  V1Volume,
  V1VolumeMount,
} from '@kubernetes/client-node';

import { REASON } from '../api/conditions.ts';
import {
  CONFIG_DIR,
  DEFAULT_ROOTLESS_STATE_DIR,
  DEFAULT_STATE_DIR,
  PRESTOP_SCRIPT_PATH,
  ROOTLESS_CONFIG_DIR,
  ROOTLESS_SOCKET_PATH,
  ROOTLESS_UID,
  SOCKET_PATH,
} from '../api/group.ts';
import type { Buildkit, BuildkitTemplate, BuildkitTemplateSpec } from '../api/types.generated.ts';
import { defaultTemplateSpec } from '../api/defaults.ts';
import {
  APPARMOR_ANNOTATION_PREFIX,
  AUTOSCALE_ENABLED,
  AUTOSCALE_LABEL,
  IDLE_TIMEOUT_ANNOTATION,
  INSTANCE_LABEL,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  NAME_LABEL,
  NAME_LABEL_VALUE,
  RESERVED_ANNOTATIONS,
  RESERVED_LABELS,
  SPEC_HASH_ANNOTATION,
  TARGET_PORT_ANNOTATION,
  TEMPLATE_LABEL,
} from '../api/labels.ts';
import { TOML_KEY } from './configmaps.ts';
import {
  BuildError,
  buildkitOwnerReference,
  claimNameFor,
  labelValueForName,
  scriptsConfigMapName,
  serviceNameFor,
  sortedMap,
  tomlConfigMapName,
} from './meta.ts';
import { PRESTOP_SCRIPT_KEY, prestopScript } from './prestop.ts';
import { byCodePoint } from '../api/order.ts';
import type { MergedResources } from '../api/resources.ts';
import { mergeResources } from '../api/resources.ts';
import type { ServerFeatures } from '../kube/server-features.ts';

/** seatgeek's container name; the AppArmor annotation key and `kubectl logs -c` depend on it. */
export const CONTAINER_NAME = 'buildkit';
/** Name of buildkitd's container port; the Service targets it by name. */
export const PORT_NAME = 'buildkitd';

const SECCOMP_ANNOTATION_PREFIX = 'container.seccomp.security.alpha.kubernetes.io/';
const PRESTOP_PATH = PRESTOP_SCRIPT_PATH;
/** The pod volume of buildkitd's state: an emptyDir, or the Buildkit's claim with persistence. */
const STATE_VOLUME = 'buildkitd';

/** Where buildkitd keeps state, reads its config and opens its socket, per layout (api/group.ts). */
const LAYOUT = {
  rootful: { state: DEFAULT_STATE_DIR, config: CONFIG_DIR, socket: SOCKET_PATH },
  rootless: { state: DEFAULT_ROOTLESS_STATE_DIR, config: ROOTLESS_CONFIG_DIR, socket: ROOTLESS_SOCKET_PATH },
} as const;

export interface RenderedPod {
  pod: V1Pod;
  /** The resource merge behind the container's resources, with what was clamped (for status). */
  resources: MergedResources;
}

/** The buildkitd pod of `buildkit`, made from `template`, for a server with `features`. */
export function buildPod(template: BuildkitTemplate, buildkit: Buildkit, features: ServerFeatures): V1Pod {
  return renderPod(template, buildkit, features).pod;
}

/**
 * buildPod, plus the resource report. Throws BuildError (with a condition reason) when the pod
 * cannot be built as asked, and ResourceQuantityError on a value that is not a quantity.
 */
export function renderPod(
  template: BuildkitTemplate,
  buildkit: Buildkit,
  features: ServerFeatures,
): RenderedPod {
  const templateName = checkedTemplateName(template, buildkit);
  const name = buildkit.metadata?.name ?? '';
  const ownerReference = buildkitOwnerReference(buildkit);
  // Built from the defaulted spec: the controller must not depend on whether the webhook ran.
  const spec = defaultTemplateSpec(template.spec);
  const port = spec.port!;
  const rootless = spec.rootless === true;
  const layout = rootless ? LAYOUT.rootless : LAYOUT.rootful;
  const toml = spec.buildkitdToml || undefined;
  const script = spec.lifecycle?.preStopScript ? prestopScript(port) : undefined;
  const merged = mergeResources(spec.resources, buildkit.spec?.resources);
  const persistence = spec.persistence?.enabled ? spec.persistence : undefined;

  const args = ['--addr', `unix://${layout.socket}`, '--addr', `tcp://0.0.0.0:${port}`];
  // persistence: --root names the claim's mount, whatever buildkitd.toml's `root` or the image say
  if (persistence) args.push('--root', persistence.mountPath!);
  // seatgeek relies on the default config path; naming it keeps working with a command override
  // or an image whose entrypoint sets another HOME.
  if (toml) args.push('--config', `${layout.config}/${TOML_KEY}`);
  if (rootless) args.push('--oci-worker-no-process-sandbox');
  if (spec.observability?.debugLogging) args.push('--debug');

  const mounts: V1VolumeMount[] = [
    { name: STATE_VOLUME, mountPath: persistence ? persistence.mountPath! : layout.state },
  ];
  const volumes: V1Volume[] = [
    persistence
      ? { name: STATE_VOLUME, persistentVolumeClaim: { claimName: claimNameFor(name) } }
      : { name: STATE_VOLUME, emptyDir: {} },
  ];
  if (toml) {
    mounts.push({ name: 'config', mountPath: layout.config, readOnly: true });
    volumes.push({ name: 'config', configMap: { name: tomlConfigMapName(templateName) } });
  }
  if (script) {
    // subPath, as seatgeek: one file in /usr/local/bin without hiding the image's binaries.
    mounts.push({ name: 'scripts', mountPath: PRESTOP_PATH, subPath: PRESTOP_SCRIPT_KEY, readOnly: true });
    volumes.push({
      name: 'scripts',
      configMap: { name: scriptsConfigMapName(templateName), defaultMode: 0o755 },
    });
  }

  const security = securityContext(rootless, features);
  const container: V1Container = {
    name: CONTAINER_NAME,
    image: spec.image,
    imagePullPolicy: spec.imagePullPolicy,
    ...(spec.command?.length ? { command: [...spec.command] } : {}),
    args,
    ports: [{ name: PORT_NAME, containerPort: port, protocol: 'TCP' }],
    ...(spec.observability?.otlp ? { env: otlpEnv(spec.observability.otlp) } : {}),
    resources: merged.resources,
    ...probes(port, layout.socket, features),
    securityContext: security.context,
    volumeMounts: mounts,
    ...(script
      ? {
          lifecycle: {
            // seatgeek: no argument. The port is passed so that a restarted container of an older
            // pod drains its own port even if the template (and the script's default) changed.
            preStop: { exec: { command: ['/bin/sh', PRESTOP_PATH, String(port)] } },
          },
        }
      : {}),
  };

  const podSpec: V1PodSpec = {
    containers: [container],
    volumes,
    // seatgeek: left on (it had no Services). Every Buildkit has a Service now, and service links
    // give each pod ~7 variables per Service in the namespace: thousands with a few hundred.
    enableServiceLinks: false,
    ...hostUsers(spec, features),
    // A new volume is root's; rootless buildkitd (uid 1000) needs it group-writable. The emptyDir
    // is world-writable. OnRootMismatch: no recursive chown of a full cache at every start.
    ...(persistence && rootless
      ? { securityContext: { fsGroup: ROOTLESS_UID, fsGroupChangePolicy: 'OnRootMismatch' } }
      : {}),
    ...(spec.serviceAccountName ? { serviceAccountName: spec.serviceAccountName } : {}),
    ...scheduling(spec),
    ...(spec.lifecycle?.restartPolicy ? { restartPolicy: spec.lifecycle.restartPolicy } : {}),
    terminationGracePeriodSeconds: spec.lifecycle!.terminationGracePeriodSeconds,
    ...(spec.lifecycle?.activeDeadlineSeconds !== undefined
      ? { activeDeadlineSeconds: spec.lifecycle.activeDeadlineSeconds }
      : {}),
  };

  const labels: Record<string, string> = {
    ...userMap({ [NAME_LABEL]: NAME_LABEL_VALUE }, buildkit.spec?.labels, spec.podLabels, RESERVED_LABELS),
    ...platformLabels(name, templateName),
  };
  const platformAnnotations: Record<string, string> = { ...security.annotations };
  if (spec.autoscaling?.enabled) {
    labels[AUTOSCALE_LABEL] = AUTOSCALE_ENABLED;
    platformAnnotations[IDLE_TIMEOUT_ANNOTATION] = spec.autoscaling.idleTimeout!;
    platformAnnotations[TARGET_PORT_ANNOTATION] = String(port);
  }
  // The platform decides the buildkitd container's AppArmor profile when rootless: a user value
  // would override it (old servers) or contradict the field (1.30+: the pod would be refused).
  const reservedAnnotations = rootless
    ? [...RESERVED_ANNOTATIONS, APPARMOR_ANNOTATION_PREFIX + CONTAINER_NAME]
    : RESERVED_ANNOTATIONS;
  const allAnnotations = {
    ...userMap({}, buildkit.spec?.annotations, spec.podAnnotations, reservedAnnotations),
    ...platformAnnotations,
  };

  const pod: V1Pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      generateName: `${name}-`,
      namespace: buildkit.metadata?.namespace,
      labels: sortedMap(labels),
      ...(Object.keys(allAnnotations).length ? { annotations: sortedMap(allAnnotations) } : {}),
      ownerReferences: [ownerReference],
    },
    spec: podSpec,
  };
  const hash = specHash(pod, toml, script);
  pod.metadata!.annotations = sortedMap({ ...pod.metadata!.annotations, [SPEC_HASH_ANNOTATION]: hash });
  return { pod, resources: merged };
}

/** The ClusterIP Service that gives `buildkit` its stable endpoint. */
export function buildService(template: BuildkitTemplate, buildkit: Buildkit): V1Service {
  const templateName = checkedTemplateName(template, buildkit);
  const name = buildkit.metadata?.name ?? '';
  const port = defaultTemplateSpec(template.spec).port!;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: serviceNameFor(name),
      namespace: buildkit.metadata?.namespace,
      labels: sortedMap({ [NAME_LABEL]: NAME_LABEL_VALUE, ...platformLabels(name, templateName) }),
      ownerReferences: [buildkitOwnerReference(buildkit)],
    },
    spec: {
      type: 'ClusterIP',
      // Platform labels only: users cannot set them (reserved), so no other pod is selected.
      selector: sortedMap({
        [INSTANCE_LABEL]: labelValueForName(name),
        [MANAGED_BY_LABEL]: MANAGED_BY_VALUE,
      }),
      // The target is the port's name, not its number, so whatever fronts buildkitd in the pod
      // (the autoscaling sidecar) can take over the name without the Service changing.
      ports: [{ name: PORT_NAME, port, targetPort: PORT_NAME, protocol: 'TCP' }],
    },
  };
}

/** The labels that find a Buildkit's objects; set last so nobody can override them. */
export function platformLabels(buildkitName: string, templateName: string): Record<string, string> {
  return {
    [MANAGED_BY_LABEL]: MANAGED_BY_VALUE,
    [INSTANCE_LABEL]: labelValueForName(buildkitName),
    [TEMPLATE_LABEL]: labelValueForName(templateName),
  };
}

export function checkedTemplateName(template: BuildkitTemplate, buildkit: Buildkit): string {
  const wanted = buildkit.spec?.template;
  const actual = template.metadata?.name ?? wanted;
  if (!actual) throw new BuildError(REASON.TemplateNotFound, 'Buildkit spec.template is empty');
  if (wanted && actual !== wanted) {
    throw new BuildError(REASON.TemplateMismatch, `Buildkit names template "${wanted}", got "${actual}"`);
  }
  const [ns, tns] = [buildkit.metadata?.namespace, template.metadata?.namespace];
  if (ns && tns && ns !== tns) {
    throw new BuildError(
      REASON.TemplateMismatch,
      `template "${actual}" is in namespace "${tns}", not "${ns}"`,
    );
  }
  return actual;
}

/** base, then instance values, then template values (the template wins, as in seatgeek). */
function userMap(
  base: Record<string, string>,
  instance: Record<string, string | undefined> | undefined,
  template: Record<string, string | undefined> | undefined,
  reserved: readonly string[],
): Record<string, string> {
  const merged: Record<string, string> = { ...base };
  for (const map of [instance, template]) {
    for (const [key, value] of Object.entries(map ?? {})) {
      if (typeof value === 'string' && !reserved.includes(key)) merged[key] = value;
    }
  }
  return merged;
}

function probes(port: number, socket: string, features: ServerFeatures): Partial<V1Container> {
  // seatgeek: gRPC health on the TCP port only. Servers before 1.24 drop `grpc` (the probe would
  // have no handler), so there buildctl asks buildkitd for its workers over the unix socket: a
  // stronger check than gRPC health, and it never shows up as a TCP client of buildkitd (which
  // the preStop drain and the autoscaler count).
  const handler = (): Pick<V1Probe, 'grpc' | 'exec'> =>
    features.grpcProbes
      ? { grpc: { port } }
      : { exec: { command: ['buildctl', '--addr', `unix://${socket}`, 'debug', 'workers'] } };
  return {
    // Fast readiness: every 2s for up to 30s (seatgeek PR #92).
    startupProbe: { ...handler(), periodSeconds: 2, failureThreshold: 15 },
    // seatgeek: timeoutSeconds 3 here too (it has it on liveness only). Under build load a 1s
    // timeout fails readiness, which takes the pod out of the Service while builds run.
    readinessProbe: { ...handler(), periodSeconds: 15, timeoutSeconds: 3, failureThreshold: 2 },
    livenessProbe: { ...handler(), periodSeconds: 30, timeoutSeconds: 3, failureThreshold: 6 },
  };
}

/** The container's security context, and the pod annotations that stand in for missing fields. */
function securityContext(
  rootless: boolean,
  features: ServerFeatures,
): { context: V1SecurityContext; annotations: Record<string, string> } {
  const annotations: Record<string, string> = {};
  if (!rootless) return { context: { privileged: true }, annotations };
  // rootlesskit needs to create user namespaces and mount /proc, which the default seccomp and
  // AppArmor profiles forbid.
  const context: V1SecurityContext = { runAsUser: ROOTLESS_UID, runAsGroup: ROOTLESS_UID };
  if (features.seccompField) context.seccompProfile = { type: 'Unconfined' };
  else annotations[SECCOMP_ANNOTATION_PREFIX + CONTAINER_NAME] = 'unconfined';
  // seatgeek: always the beta annotation. 1.30+ has the field (and deprecates the annotation).
  if (features.appArmorField) context.appArmorProfile = { type: 'Unconfined' };
  else annotations[APPARMOR_ANNOTATION_PREFIX + CONTAINER_NAME] = 'unconfined';
  return { context, annotations };
}

/**
 * `hostUsers: false` only, and only where the server keeps it: true is the default (sending it
 * changes nothing and is an unknown field before 1.25). Where the server would drop `false`, the
 * pod would silently run in the host user namespace, less isolated than the admin asked: refuse.
 */
function hostUsers(spec: BuildkitTemplateSpec, features: ServerFeatures): Pick<V1PodSpec, 'hostUsers'> {
  if (spec.hostUsers !== false) return {};
  if (features.hostUsers) return { hostUsers: false };
  const { major, minor } = features.version;
  const why = features.hostUsersBehindGate
    ? 'keeps only with the UserNamespacesSupport feature gate, which is off by default before 1.33'
    : 'does not support (user namespaces need 1.33, or 1.25+ with the UserNamespacesSupport feature gate)';
  throw new BuildError(
    REASON.UnsupportedField,
    `BuildkitTemplate spec.hostUsers is false (a user namespace), which Kubernetes ${major}.${minor} ${why}; ` +
      'the pod is not created rather than run in the host user namespace',
  );
}

function scheduling(spec: BuildkitTemplateSpec): Partial<V1PodSpec> {
  const s = spec.scheduling ?? {};
  const nodeSelector = sortedMap(s.nodeSelector);
  return {
    ...(nodeSelector ? { nodeSelector } : {}),
    ...(s.tolerations?.length ? { tolerations: structuredClone(s.tolerations) } : {}),
    ...(s.affinity ? { affinity: structuredClone(s.affinity) } : {}),
    ...(s.topologySpreadConstraints?.length
      ? { topologySpreadConstraints: structuredClone(s.topologySpreadConstraints) }
      : {}),
    ...(s.priorityClassName ? { priorityClassName: s.priorityClassName } : {}),
  };
}

/**
 * seatgeek's OTLP environment, with the resource attributes in sorted key order (seatgeek
 * iterates a Go map: the order, and so the pod spec, changed from build to build). HOST_IP comes
 * first because OTEL_EXPORTER_OTLP_ENDPOINT refers to it, and Kubernetes only expands variables
 * defined earlier.
 */
function otlpEnv(otlp: { serviceName: string; resourceAttributes?: Record<string, string | undefined> }) {
  const attributes = Object.entries(otlp.resourceAttributes ?? {})
    .filter((e): e is [string, string] => typeof e[1] === 'string' && e[0] !== 'service.name')
    .sort(([a], [b]) => byCodePoint(a, b))
    .map(([key, value]) => `,${encodeAttribute(key)}=${encodeAttribute(value)}`)
    .join('');
  const env: V1EnvVar[] = [
    { name: 'HOST_IP', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'status.hostIP' } } },
    // A node-local collector on hostPort 4317, as in seatgeek.
    { name: 'OTEL_EXPORTER_OTLP_ENDPOINT', value: 'http://$(HOST_IP):4317' },
    { name: 'OTEL_SERVICE_NAME', value: otlp.serviceName },
    {
      name: 'OTEL_RESOURCE_ATTRIBUTES',
      value: `service.name=${encodeAttribute(otlp.serviceName)}${attributes}`,
    },
  ];
  return env;
}

/**
 * The OpenTelemetry spec percent-encodes what would break `k=v,k=v` parsing. Only those
 * characters: SDKs that predate the decoding rule would show any other escape literally.
 */
const encodeAttribute = (text: string): string => text.replace(/[%,=\s]/gu, encodeURIComponent);

/** JSON with object keys sorted at every level: equal objects, equal text. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => byCodePoint(a, b)))
      : v,
  );
}

function specHash(pod: V1Pod, toml: string | undefined, script: string | undefined): string {
  const digest = createHash('sha256')
    .update(canonicalJson({ pod, toml: toml ?? null, script: script ?? null }))
    .digest('hex');
  return `sha256:${digest.slice(0, 16)}`;
}
