// The schemas of BuildkitTemplate and Buildkit: the one source of truth for the CRDs and the
// TypeScript types (`npm run gen` regenerates api/crds/*.yaml and api/types.generated.ts; a unit
// test fails when they drift). Field names and meanings are seatgeek/buildkit-operator's, so its
// manifests apply unchanged; our additions are marked in their descriptions.
//
// Rule: no schema default on a field whose default depends on another field (the API server
// applies schema defaults before mutating webhooks run, which made seatgeek's rootless image
// default unreachable). `image` is defaulted by the webhook from `rootless`.
import {
  DEFAULT_IDLE_TIMEOUT,
  DEFAULT_IMAGE,
  DEFAULT_IMAGE_PULL_POLICY,
  DEFAULT_PERSISTENCE_SIZE,
  DEFAULT_ROOTLESS_STATE_DIR,
  DEFAULT_STATE_DIR,
  PERSISTENCE_ACCESS_MODES,
  DEFAULT_PORT,
  DEFAULT_ROOTLESS_IMAGE,
  DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS,
  PHASES,
  TEMPLATE_NAME_MAX_LENGTH,
} from './group.ts';
import { K8S_SCHEMAS } from './generated/k8s-schemas.ts';
import type { JsonSchema } from './schema-dsl.ts';
import {
  QUANTITY_SCHEMA,
  arrayOf,
  bool,
  int32,
  int64,
  object,
  quantityMap,
  str,
  stringList,
  stringMap,
} from './schema-dsl.ts';

type EmbeddedModel = keyof typeof K8S_SCHEMAS;

/** A Kubernetes core type, validated by its real schema, typed as client-node's class. */
function embedded(model: EmbeddedModel, description: string): JsonSchema {
  return { ...(K8S_SCHEMAS[model] as JsonSchema), description, tsType: model };
}

/** Go duration strings as buildkit-fleet accepts them: `90s`, `5m`, `1h30m`. */
export const DURATION_PATTERN = '^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$';

const condition = object(
  'Condition',
  "One aspect of the object's state, in the Kubernetes condition convention.",
  {
    type: str('Condition type, e.g. `Ready`. Unique within the list.'),
    status: str('`True`, `False` or `Unknown`.', { enum: ['True', 'False', 'Unknown'] }),
    reason: str('A machine-readable CamelCase reason for the last transition, e.g. `PodPending`.'),
    message: str('A human-readable explanation of the last transition.'),
    lastTransitionTime: str('When the status last changed.', { format: 'date-time' }),
    observedGeneration: int64('The metadata.generation this condition was computed from.'),
  },
  { required: ['type', 'status'] },
);

const conditions = arrayOf('Current state, one entry per condition type.', condition, {
  'x-kubernetes-list-type': 'map',
  'x-kubernetes-list-map-keys': ['type'],
});

const resourceRefs = arrayOf(
  'Objects this resource manages (seatgeek compatibility; buildkit-fleet finds them by owner reference).',
  object('ResourceRef', 'A reference to a managed object.', {
    group: str('API group of the object; empty for the core group.'),
    version: str('API version of the object.'),
    kind: str('Kind of the object.'),
    name: str('Name of the object.'),
    namespace: str('Namespace of the object.'),
  }),
);

export const buildkitTemplateSpec = object(
  'BuildkitTemplateSpec',
  'How every buildkitd of this class runs: image, port, configuration, resources, scheduling, lifecycle and autoscaling. Admin-owned; Buildkit instances name it in spec.template.',
  {
    podLabels: stringMap(
      "Labels added to every buildkitd pod of this template. They win over the Buildkit's spec.labels on conflict.",
    ),
    podAnnotations: stringMap(
      "Annotations added to every buildkitd pod of this template. They win over the Buildkit's spec.annotations on conflict.",
    ),
    rootless: bool(
      'Run buildkitd rootless (uid 1000, no privileged container, `--oci-worker-no-process-sandbox`). When true and spec.image is empty, the image defaults to ' +
        `\`${DEFAULT_ROOTLESS_IMAGE}\`.`,
    ),
    port: int32(
      `TCP port buildkitd listens on and clients connect to. Default ${DEFAULT_PORT}; 0 means the default (seatgeek's Go clients send 0 when unset).`,
      { default: DEFAULT_PORT, minimum: 0, maximum: 65535 },
    ),
    buildkitdToml: str(
      'Contents of buildkitd.toml. When non-empty it is stored in the ConfigMap `buildkit-<template>-toml` and mounted into the pod. Must be valid TOML.',
    ),
    image: str(
      `buildkitd container image. Defaults to \`${DEFAULT_IMAGE}\`, or \`${DEFAULT_ROOTLESS_IMAGE}\` when spec.rootless is true (set by the admission webhook, not the schema, because it depends on spec.rootless). Pin a version tag in production.`,
    ),
    imagePullPolicy: str(
      `Pull policy of the buildkitd container. Default \`${DEFAULT_IMAGE_PULL_POLICY}\`.`,
      {
        enum: ['Always', 'IfNotPresent', 'Never'],
        default: DEFAULT_IMAGE_PULL_POLICY,
      },
    ),
    resources: object('TemplateResources', 'Compute resources of the buildkitd container.', {
      default: embedded(
        'V1ResourceRequirements',
        "Requests and limits every instance starts from. A Buildkit's spec.resources override them, clamped by maximum.",
      ),
      maximum: quantityMap(
        'Upper bound per resource name (e.g. cpu, memory) for requests and limits of any instance. Also fills in a missing limit.',
      ),
    }),
    command: stringList(
      'Overrides the buildkitd container entrypoint. The arguments are always set by the platform.',
    ),
    serviceAccountName: str(
      'Service account of the buildkitd pod (also the way to give it imagePullSecrets).',
    ),
    scheduling: object('Scheduling', 'Where buildkitd pods may run.', {
      nodeSelector: stringMap('Node labels a node must carry to run the pod.'),
      tolerations: arrayOf(
        'Taints the pod tolerates.',
        embedded('V1Toleration', 'A taint the pod tolerates.'),
      ),
      affinity: embedded('V1Affinity', 'Node affinity, pod affinity and anti-affinity of the pod.'),
      priorityClassName: str('PriorityClass of the pod.'),
      topologySpreadConstraints: arrayOf(
        'How pods of this template spread across topology domains.',
        embedded('V1TopologySpreadConstraint', 'One spread constraint.'),
      ),
    }),
    lifecycle: object(
      'Lifecycle',
      'How long buildkitd pods live and how they end.',
      {
        requireOwner: bool(
          'Refuse Buildkits without metadata.ownerReferences, so each builder is garbage-collected with its owner (e.g. a CI job pod).',
          { default: false },
        ),
        restartPolicy: str("Restart policy of the buildkitd pod. Kubernetes' default is Always.", {
          enum: ['Always', 'OnFailure', 'Never'],
        }),
        terminationGracePeriodSeconds: int64(
          `Seconds a terminating pod gets to finish running builds. Default ${DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS}.`,
          { default: DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS, minimum: 0 },
        ),
        activeDeadlineSeconds: int64(
          'Hard time limit of a pod in seconds; the pod fails when it is reached.',
          { minimum: 1 },
        ),
        preStopScript: bool(
          'Add a preStop hook that waits until no client connection is open (buildkitd does not drain builds on SIGTERM, moby/buildkit#4090).',
        ),
      },
      { default: {} },
    ),
    observability: object('Observability', 'Logging and tracing of buildkitd.', {
      debugLogging: bool('Start buildkitd with `--debug`.'),
      otlp: object(
        'Otlp',
        'Send OpenTelemetry traces over OTLP; sets the OTEL_* environment of the container.',
        {
          serviceName: str('OTEL_SERVICE_NAME of buildkitd.', { minLength: 1 }),
          resourceAttributes: stringMap('Extra OTEL_RESOURCE_ATTRIBUTES, added in sorted key order.'),
        },
        { required: ['serviceName'] },
      ),
    }),
    hostUsers: bool(
      'Run the pod in the host user namespace (true, the default) or in its own (false; Kubernetes 1.33+ user namespaces).',
      { default: true },
    ),
    autoscaling: object(
      'Autoscaling',
      'buildkit-fleet addition: scale each idle buildkitd of this template to zero and wake it when a client connects. The endpoint stays the same.',
      {
        enabled: bool('Scale idle instances to zero. Default false.', { default: false }),
        idleTimeout: str(
          `How long an instance must have no open client connection before it scales to zero, as a duration (\`90s\`, \`5m\`, \`1h\`). Default \`${DEFAULT_IDLE_TIMEOUT}\`.`,
          { default: DEFAULT_IDLE_TIMEOUT, pattern: DURATION_PATTERN },
        ),
      },
      { default: {} },
    ),
    persistence: object(
      'Persistence',
      "buildkit-fleet addition: give each Buildkit its own PersistentVolumeClaim for buildkitd's state (the build cache), kept while the instance is scaled to zero and mounted again when it wakes.",
      {
        enabled: bool('Create and mount a PersistentVolumeClaim per Buildkit. Default false.', {
          default: false,
        }),
        size: {
          ...QUANTITY_SCHEMA,
          description: `Requested storage of each claim. Default \`${DEFAULT_PERSISTENCE_SIZE}\`.`,
          default: DEFAULT_PERSISTENCE_SIZE,
        },
        storageClassName: str(
          "StorageClass of each claim. Empty or unset: the cluster's default StorageClass.",
        ),
        accessModes: arrayOf(
          'Access modes of each claim. Default `[ReadWriteOnce]`.',
          str('An access mode.', { enum: [...PERSISTENCE_ACCESS_MODES] }),
          { default: ['ReadWriteOnce'], minItems: 1, 'x-kubernetes-list-type': 'set' },
        ),
        mountPath: str(
          `Where the claim is mounted in the buildkitd container; buildkitd is started with \`--root\` there. Default \`${DEFAULT_STATE_DIR}\`, or \`${DEFAULT_ROOTLESS_STATE_DIR}\` when rootless (set by the webhook, so no schema default). An absolute, normalized path that does not overlap the pod's other mounts.`,
          { pattern: '^/' },
        ),
        whenDeleted: str(
          'What happens to the claim when its Buildkit is deleted: `Delete` (the default; the claim is owned by the Buildkit and garbage-collected with it) or `Retain` (the claim stays, and a new Buildkit of the same name mounts it again). Applies to claims created after a change.',
          { enum: ['Delete', 'Retain'], default: 'Delete' },
        ),
      },
      { default: {} },
    ),
  },
);

export const buildkitTemplateStatus = object('BuildkitTemplateStatus', 'Observed state of the template.', {
  conditions,
  resourceRefs,
  observedGeneration: int64('The metadata.generation the controller last acted on.'),
});

export const buildkitSpec = object(
  'BuildkitSpec',
  'One buildkitd instance of a template. Immutable after creation: to change it, create a new Buildkit.',
  {
    template: str('Name of a BuildkitTemplate in the same namespace.', {
      minLength: 1,
      maxLength: TEMPLATE_NAME_MAX_LENGTH,
    }),
    resources: embedded(
      'V1ResourceRequirements',
      "Requests and limits for this instance, merged over the template's resources.default and bounded by its resources.maximum.",
    ),
    annotations: stringMap(
      "Annotations of the buildkitd pod (the template's podAnnotations win on conflict).",
    ),
    labels: stringMap("Labels of the buildkitd pod (the template's podLabels win on conflict)."),
  },
  { required: ['template'] },
);

export const buildkitStatus = object('BuildkitStatus', 'Observed state of the instance.', {
  endpoint: str(
    'Where clients connect: `tcp://<address>:<port>` (use with `buildctl --addr` or `docker buildx create --driver remote`). Set once buildkitd is ready; stable across pod restarts and scale-to-zero.',
  ),
  phase: str(
    'Lifecycle summary (buildkit-fleet addition): Pending, Running, ScaledToZero, Waking or Failed.',
    { enum: [...PHASES] },
  ),
  lastActivityTime: str('buildkit-fleet addition: when a client last sent or received a byte.', {
    format: 'date-time',
  }),
  observedGeneration: int64('The metadata.generation the controller last acted on.'),
  conditions,
  resourceRefs,
  autoscaling: object(
    'BuildkitAutoscalingStatus',
    "buildkit-fleet addition: the idle scaler's record, kept on the object so that a controller restart or a new leader neither restarts nor shortens the idle clock.",
    {
      activatorPort: int32(
        "The port every activator replica holds this instance's connections on while it is at zero or waking.",
        { minimum: 1, maximum: 65535 },
      ),
      idleSince: str('When every pod of the instance was last seen with no open client connection.', {
        format: 'date-time',
      }),
      idleEvidence: arrayOf(
        'The sidecar counters that idleSince rests on: a new leader trusts idleSince only while each pod still reports the same boot id and opened count.',
        object(
          'IdleEvidence',
          'One pod at the start of the idle period.',
          {
            pod: str('Pod name.'),
            bootId: str("The sidecar's boot id."),
            opened: int64("The sidecar's monotonic count of accepted connections."),
          },
          { required: ['pod', 'bootId', 'opened'] },
        ),
        { 'x-kubernetes-list-type': 'atomic' },
      ),
      scaledToZeroTime: str('When the instance last scaled to zero.', { format: 'date-time' }),
      wakeStartTime: str('When the current or last wake started.', { format: 'date-time' }),
    },
  ),
});

const apiVersionField = str(
  'APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values.',
);
const kindField = str(
  'Kind is a string value representing the REST resource this object represents. In CamelCase.',
);
// The API server refuses anything but `type` on metadata: it validates metadata itself.
const metadataField: JsonSchema = { type: 'object', tsType: 'V1ObjectMeta' };

export const buildkitTemplateSchema = object(
  'BuildkitTemplate',
  'A class of BuildKit build servers: image, port, buildkitd.toml, rootless, resources, scheduling, lifecycle and autoscaling, shared by every Buildkit that names it.',
  {
    apiVersion: apiVersionField,
    kind: kindField,
    metadata: metadataField,
    // `default: {}` so a template without spec still gets the schema defaults below it.
    spec: { ...buildkitTemplateSpec, default: {} },
    status: buildkitTemplateStatus,
  },
);

export const buildkitSchema = object(
  'Buildkit',
  'One BuildKit build server (buildkitd) made from a BuildkitTemplate. Its status.endpoint is where clients connect.',
  {
    apiVersion: apiVersionField,
    kind: kindField,
    metadata: metadataField,
    spec: buildkitSpec,
    status: buildkitStatus,
  },
  { required: ['spec'] },
);
