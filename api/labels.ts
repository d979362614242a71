// Label and annotation names the controller puts on the objects it creates. The webhook imports
// them (to inject the sidecar into opted-in pods, and to refuse user labels that would collide), so
// they live in one module without dependencies.

/** The name every buildkitd pod carries (seatgeek's default, which users may override). */
export const NAME_LABEL = 'app.kubernetes.io/name';
export const NAME_LABEL_VALUE = 'buildkit';

/** Marks objects the controller manages; nobody can override it. */
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_VALUE = 'buildkit-fleet';

/**
 * The Buildkit an object belongs to (a label-safe form of its name, see labelValueForName). The
 * Service selects pods by it, and the controller lists pods by it (then keeps only those whose
 * controller owner reference carries the Buildkit's uid).
 */
export const INSTANCE_LABEL = 'buildkit.seatgeek.io/instance';

/** The BuildkitTemplate an object was made from (template names are at most 57 characters). */
export const TEMPLATE_LABEL = 'buildkit.seatgeek.io/template';

/**
 * Autoscaling opt-in: the sidecar injector selects pods by this label (a label, not an
 * annotation, so a webhook objectSelector can match it and other pods never reach the webhook).
 */
export const AUTOSCALE_LABEL = 'buildkit-fleet.io/autoscale';
export const AUTOSCALE_ENABLED = 'enabled';

/**
 * How long a target must have no client connection before it scales to zero (`90s`, `5m`, ...):
 * set by the controller on a Buildkit's pods (from its template), by the user on an annotated
 * StatefulSet or Deployment (or its pod template; default 5m).
 */
export const IDLE_TIMEOUT_ANNOTATION = 'buildkit-fleet.io/idle-timeout';

/**
 * Asks for a wake: set (to any value, conventionally the time) on a Buildkit at zero, or on an
 * annotated StatefulSet or Deployment at zero, by an activator that holds a client connection or
 * by a CI job that wants the target ready before it connects (`kubectl annotate`). The controller
 * wakes the target and removes the annotation once it runs.
 */
export const WAKE_REQUESTED_ANNOTATION = 'buildkit-fleet.io/wake-requested';

/**
 * On an annotated StatefulSet or Deployment (or its pod template): the client-facing Service the
 * platform routes to the activators while the workload is at zero. Without it, the one Service in
 * the namespace that selects the workload's pods.
 */
export const SERVICE_ANNOTATION = 'buildkit-fleet.io/service';

/**
 * On an annotated StatefulSet or Deployment: how many replicas a wake sets. Without it, the
 * replicas the workload had when it scaled to zero.
 */
export const WAKE_REPLICAS_ANNOTATION = 'buildkit-fleet.io/wake-replicas';

/**
 * On an annotated StatefulSet or Deployment, written by the controller only: the scale-to-zero
 * state a Buildkit keeps in status.autoscaling (JSON), plus the phase, the replicas to restore
 * and why the workload is awake. An annotation, because a workload's status belongs to its own
 * controller, and an annotation nobody else sets is not a field `kubectl apply` or `helm
 * upgrade` would take back.
 */
export const AUTOSCALING_STATE_ANNOTATION = 'buildkit-fleet.io/autoscaling-state';

/** The TCP port buildkitd serves clients on, so the injector need not guess which port to front. */
export const TARGET_PORT_ANNOTATION = 'buildkit-fleet.io/target-port';

/**
 * A hash of everything a pod was built from (its spec, labels and annotations, the buildkitd.toml
 * and preStop script it mounts). The controller compares it with a fresh build to report pods that
 * run an outdated template; the webhook's later changes to the pod do not affect it.
 */
export const SPEC_HASH_ANNOTATION = 'buildkit-fleet.io/spec-hash';

/**
 * On a webhook configuration: the failurePolicy its entries are meant to have. A first self-managed
 * install renders them with `Ignore`, since no CA exists yet to put into caBundle and an entry
 * with `Fail` would refuse every request it matches until one does. The webhook replica that
 * writes caBundle sets this policy on each entry once the entry's Service has a ready endpoint,
 * and removes the annotation when every entry holds it; its absence means: leave the policy alone.
 */
export const FAILURE_POLICY_ANNOTATION = 'buildkit-fleet.io/failure-policy';

/** AppArmor before Kubernetes 1.30 (`securityContext.appArmorProfile` replaced it). */
export const APPARMOR_ANNOTATION_PREFIX = 'container.apparmor.security.beta.kubernetes.io/';

/** Labels only the platform sets: user values for these keys are dropped. */
export const RESERVED_LABELS: readonly string[] = [
  MANAGED_BY_LABEL,
  INSTANCE_LABEL,
  TEMPLATE_LABEL,
  AUTOSCALE_LABEL,
];

/** Annotations only the platform sets: user values for these keys are dropped. */
export const RESERVED_ANNOTATIONS: readonly string[] = [
  IDLE_TIMEOUT_ANNOTATION,
  TARGET_PORT_ANNOTATION,
  SPEC_HASH_ANNOTATION,
];

/**
 * Per-pod opt-out of sidecar injection: `buildkit-fleet.io/inject: "disabled"` on a pod that
 * carries the autoscale label leaves it untouched (the pod then does not scale to zero).
 */
export const INJECT_ANNOTATION = 'buildkit-fleet.io/inject';
export const INJECT_DISABLED = 'disabled';

/**
 * Set by the webhook on every pod it injected, to a hash of what it added (`sha256:<16 hex>`).
 * A pod carrying it is never injected again, whatever the value.
 */
export const SIDECAR_INJECTED_ANNOTATION = 'buildkit-fleet.io/sidecar-injected';
