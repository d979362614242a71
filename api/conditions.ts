// Status conditions and Event reasons: what `kubectl describe` and `kubectl wait` users read, and
// what tools may match on. Named here so that no component spells one differently.

export const CONDITION = {
  /** Buildkit: the buildkitd pod runs and is ready. BuildkitTemplate: its ConfigMaps exist. */
  Ready: 'Ready',
  /** Buildkit: spec.template names a BuildkitTemplate that exists. */
  TemplateResolved: 'TemplateResolved',
  /** Buildkit: the running pod was built from the template as it is now. */
  TemplateCurrent: 'TemplateCurrent',
  /**
   * Buildkit with autoscaling: whether the instance is awake, and why (open connections, idle for
   * less than the timeout, a sidecar that cannot be read) or why not (scaled to zero).
   */
  Active: 'Active',
} as const;
export type ConditionType = (typeof CONDITION)[keyof typeof CONDITION];

/** Reasons of the conditions above (CamelCase, as Kubernetes conventions ask). */
export const REASON = {
  Running: 'Running',
  PodCreating: 'PodCreating',
  PodPending: 'PodPending',
  PodUnschedulable: 'PodUnschedulable',
  ContainerNotReady: 'ContainerNotReady',
  PodFailed: 'PodFailed',
  DeadlineExceeded: 'DeadlineExceeded',
  ServiceConflict: 'ServiceConflict',
  TemplateFound: 'TemplateFound',
  TemplateNotFound: 'TemplateNotFound',
  TemplateMismatch: 'TemplateMismatch',
  MissingMetadata: 'MissingMetadata',
  UnsupportedField: 'UnsupportedField',
  UpToDate: 'UpToDate',
  TemplateChanged: 'TemplateChanged',
  ConfigMapsReady: 'ConfigMapsReady',
  // Active (autoscaling)
  OpenConnections: 'OpenConnections',
  IdleBelowTimeout: 'IdleBelowTimeout',
  SidecarUnreachable: 'SidecarUnreachable',
  SidecarRestarted: 'SidecarRestarted',
  AwaitingFreshStats: 'AwaitingFreshStats',
  ScalingDown: 'ScalingDown',
  ScaledToZero: 'ScaledToZero',
  Waking: 'Waking',
  FenceUnavailable: 'FenceUnavailable',
  // Ready (persistence): why the pod waits for its PersistentVolumeClaim
  ClaimConflict: 'ClaimConflict',
  ClaimTerminating: 'ClaimTerminating',
  ClaimFailed: 'ClaimFailed',
} as const;
export type ConditionReason = (typeof REASON)[keyof typeof REASON];

/** Why the controller deletes a pod of a Buildkit (in its Events and logs). */
export const POD_DELETION_REASON = {
  ExtraPod: 'ExtraPod',
  EndedPod: 'EndedPod',
  ReplacedEndedPod: 'ReplacedEndedPod',
} as const;

/** Reasons of the Events the controller records. */
export const EVENT_REASON = {
  CreatedPod: 'CreatedPod',
  DeletedPod: 'DeletedPod',
  CreatedService: 'CreatedService',
  ResourcesClamped: 'ResourcesClamped',
  ScaledToZero: 'ScaledToZero',
  ScaleDownAborted: 'ScaleDownAborted',
  WakeRequested: 'WakeRequested',
  Woke: 'Woke',
  CreatedClaim: 'CreatedClaim',
  ClaimConflict: 'ClaimConflict',
  /** an annotated workload's autoscaling annotations cannot be used: it stays awake */
  AutoscalingMisconfigured: 'AutoscalingMisconfigured',
} as const;
