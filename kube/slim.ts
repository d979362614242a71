// What the controller keeps of the objects it caches. A cached pod as the API server sends it is
// 5-10 KB of JSON (managedFields alone are often half of it) and several times that as JS objects;
// the reconcilers read only its metadata and a few status fields. Keeping just those bounds the
// controller's memory by the number of pods, not their size, and the watch path skips client-node's
// ObjectSerializer, whose recursive walk over every V1Pod field was a visible CPU cost per event.
//
// Timestamps become Date objects (the shape the typed list calls return), whether the object came
// from a list or as raw JSON from a watch, so the cache never holds both shapes.
import type {
  V1Container,
  V1ContainerState,
  V1ContainerStatus,
  V1LabelSelector,
  V1ObjectMeta,
  V1Pod,
  V1PodCondition,
  V1Service,
} from '@kubernetes/client-node';

type Loose = Record<string, unknown>;

/** kubectl's copy of the whole applied manifest; every user Service has one. */
const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

function toDate(value: unknown): Date | undefined {
  if (value === undefined || value === null) return undefined;
  return value instanceof Date ? value : new Date(String(value));
}

function defined<T extends Loose>(object: T): T {
  for (const key of Object.keys(object)) if (object[key] === undefined) delete object[key];
  return object;
}

/** Metadata without managedFields, with Date timestamps. */
export function slimMetadata(metadata: V1ObjectMeta | undefined): V1ObjectMeta {
  if (!metadata) return {};
  const {
    managedFields: _managed,
    creationTimestamp,
    deletionTimestamp,
    ownerReferences,
    ...rest
  } = metadata;
  return defined({
    ...rest,
    creationTimestamp: toDate(creationTimestamp),
    deletionTimestamp: toDate(deletionTimestamp),
    // plain objects, whether they came as client-node classes or JSON
    ownerReferences: ownerReferences?.map((r) =>
      defined({
        apiVersion: r.apiVersion,
        kind: r.kind,
        name: r.name,
        uid: r.uid,
        controller: r.controller,
        blockOwnerDeletion: r.blockOwnerDeletion,
      }),
    ),
  });
}

function slimCondition(c: V1PodCondition): V1PodCondition {
  return defined({ type: c.type, status: c.status, reason: c.reason, message: c.message });
}

/** Which state, and why; not the timestamps. */
function slimState(state: V1ContainerState): V1ContainerState {
  const { waiting, running, terminated } = state;
  return defined({
    waiting: waiting ? defined({ reason: waiting.reason, message: waiting.message }) : undefined,
    running: running ? {} : undefined,
    terminated: terminated
      ? (defined({
          reason: terminated.reason,
          message: terminated.message,
          exitCode: terminated.exitCode,
        }) as V1ContainerState['terminated'])
      : undefined,
  });
}

function slimContainerStatus(c: V1ContainerStatus): V1ContainerStatus {
  return defined({
    name: c.name,
    ready: c.ready,
    restartCount: c.restartCount,
    started: c.started,
    state: c.state ? slimState(c.state) : undefined,
  }) as V1ContainerStatus;
}

/** Only the named ports of each container: how the scaler and the activator find the sidecar. */
function namedPorts(containers: V1Container[] | undefined): V1Container[] | undefined {
  const kept = containers
    ?.map((c) => ({
      name: c.name,
      ports: c.ports?.filter((p) => p.name).map((p) => ({ name: p.name, containerPort: p.containerPort })),
    }))
    .filter((c) => c.ports?.length);
  return kept?.length ? kept : undefined;
}

/**
 * A pod as the buildkit reconciler reads it: metadata, node, named container ports, phase,
 * conditions, container states.
 */
export function slimPod(pod: V1Pod): V1Pod {
  const status = pod.status;
  const containers = namedPorts(pod.spec?.containers);
  const initContainers = namedPorts(pod.spec?.initContainers);
  const spec = defined({ nodeName: pod.spec?.nodeName, containers, initContainers });
  return defined({
    apiVersion: pod.apiVersion,
    kind: pod.kind,
    metadata: slimMetadata(pod.metadata),
    spec: Object.keys(spec).length ? (spec as unknown as V1Pod['spec']) : undefined,
    status: status
      ? defined({
          phase: status.phase,
          reason: status.reason,
          message: status.message,
          podIP: status.podIP,
          hostIP: status.hostIP,
          conditions: status.conditions?.map(slimCondition),
          containerStatuses: status.containerStatuses?.map(slimContainerStatus),
        })
      : undefined,
  }) as V1Pod;
}

/** A Service as the reconcilers read it: metadata, cluster IP, ports and selector. */
export function slimService(service: V1Service): V1Service {
  const metadata = slimMetadata(service.metadata);
  if (metadata.annotations?.[LAST_APPLIED]) {
    const { [LAST_APPLIED]: _manifest, ...rest } = metadata.annotations;
    metadata.annotations = Object.keys(rest).length ? rest : undefined;
    if (!metadata.annotations) delete metadata.annotations;
  }
  return defined({
    apiVersion: service.apiVersion,
    kind: service.kind,
    metadata,
    spec: service.spec
      ? defined({
          type: service.spec.type,
          clusterIP: service.spec.clusterIP,
          ports: service.spec.ports,
          selector: service.spec.selector,
        })
      : undefined,
  }) as V1Service;
}

/** Any object without its managedFields (custom resources, ConfigMaps: their content is needed). */
export function withoutManagedFields<T extends { metadata?: V1ObjectMeta }>(object: T): T {
  if (!object.metadata?.managedFields) return object;
  const { managedFields: _managed, ...metadata } = object.metadata;
  return { ...object, metadata };
}

/**
 * Only the platform's own annotations (`buildkit-fleet.io/...`): the others are nothing the
 * controller reads, and one of them (kubectl's last-applied-configuration) is the whole manifest.
 */
function platformAnnotations(
  annotations: Record<string, string> | undefined,
): Record<string, string> | undefined {
  if (!annotations) return undefined;
  const kept = Object.entries(annotations).filter(([k]) => k.startsWith('buildkit-fleet.io/'));
  return kept.length ? Object.fromEntries(kept) : undefined;
}

/** What scale to zero reads of a StatefulSet or Deployment (the same shape for both). */
export interface SlimWorkload {
  apiVersion?: string;
  kind?: string;
  metadata?: V1ObjectMeta;
  spec?: {
    replicas?: number;
    selector?: V1LabelSelector;
    template?: { metadata?: V1ObjectMeta };
  };
}

/**
 * A StatefulSet or Deployment without its pod spec: metadata, replicas, selector and the pod
 * template's labels and annotations (where the opt-in label and the knobs are).
 */
export function slimWorkload<T extends SlimWorkload>(workload: T): T {
  const spec = workload.spec;
  const template = spec?.template?.metadata;
  const metadata = slimMetadata(workload.metadata);
  return defined({
    apiVersion: workload.apiVersion,
    kind: workload.kind,
    metadata: defined({ ...metadata, annotations: platformAnnotations(metadata.annotations) }),
    spec: spec
      ? defined({
          replicas: spec.replicas,
          selector: spec.selector,
          template: {
            metadata: defined({
              labels: template?.labels,
              annotations: platformAnnotations(template?.annotations),
            }),
          },
        })
      : undefined,
  }) as T;
}
