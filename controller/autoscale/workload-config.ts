// An annotated StatefulSet or Deployment as a scale-to-zero target (pure): whether it opted in,
// its knobs (annotations on the workload, or on its pod template), the client-facing Service it
// is reached through, and the state the controller keeps on it in one annotation.
import type { V1Service } from '@kubernetes/client-node';

import { parseDuration } from '../../api/duration.ts';
import type { Phase } from '../../api/group.ts';
import { PHASES } from '../../api/group.ts';
import {
  AUTOSCALE_ENABLED,
  AUTOSCALE_LABEL,
  AUTOSCALING_STATE_ANNOTATION,
  IDLE_TIMEOUT_ANNOTATION,
  INJECT_ANNOTATION,
  INJECT_DISABLED,
  SERVICE_ANNOTATION,
  WAKE_REPLICAS_ANNOTATION,
} from '../../api/labels.ts';
import type { BuildkitAutoscalingStatus } from '../../api/types.generated.ts';
import type { SlimWorkload } from '../../kube/slim.ts';

/** What the controller reads of a StatefulSet or Deployment (both have this shape). */
export type Workload = SlimWorkload;

export const DEFAULT_WORKLOAD_IDLE_TIMEOUT = '5m';

/** What status.autoscaling is to a Buildkit, plus what a workload has no status field for. */
export interface WorkloadState extends BuildkitAutoscalingStatus {
  phase?: Phase;
  /** the replicas the workload had when it scaled to zero */
  replicas?: number;
  /** the client-facing Service the route was written for */
  service?: string;
  lastActivityTime?: string;
  /** why it is awake or not, as a Buildkit's Active condition says it */
  reason?: string;
  message?: string;
}

export interface WorkloadSettings {
  idleTimeoutMs: number;
  idleTimeout: string;
  serviceName: string;
  /** the client Service itself, as the cache holds it */
  service: V1Service;
  /** replicas a wake sets; undefined: those before the scale-down */
  wakeReplicas: number | undefined;
}

export type SettingsResult = { ok: true; settings: WorkloadSettings } | { ok: false; error: string };

/** The pod template carries the opt-in label (the webhook injects the sidecar into its pods). */
export function isOptedIn(w: Workload): boolean {
  const meta = w.spec?.template?.metadata;
  return (
    meta?.labels?.[AUTOSCALE_LABEL] === AUTOSCALE_ENABLED &&
    meta.annotations?.[INJECT_ANNOTATION] !== INJECT_DISABLED
  );
}

/** A knob: on the workload first, then on its pod template. */
function knob(w: Workload, key: string): string | undefined {
  return w.metadata?.annotations?.[key] ?? w.spec?.template?.metadata?.annotations?.[key];
}

const describe = (w: Workload) => `${w.kind ?? 'workload'} ${w.metadata?.name ?? ''}`;

// The activator route and the forward carry one port: a Service with several (buildkitd beside
// metrics, say) would have its other ports routed to buildkitd, or buildkitd's to the wrong one.
const onePort = (s: V1Service) =>
  `Service ${s.metadata?.name} has ${s.spec?.ports?.length ?? 0} ports; the client Service of an autoscaled workload must have exactly one (buildkitd's)`;

/**
 * The Service clients reach the workload through: the one the annotation names, or else the one
 * Service of the namespace whose selector picks the workload's pods. Headless Services do not
 * count: kube-proxy does not route them, so no route to the activators could work.
 */
export function clientService(
  w: Workload,
  services: readonly V1Service[],
): { service: V1Service } | { error: string } {
  const podLabels = w.spec?.template?.metadata?.labels;
  const selects = (s: V1Service) => {
    const selector = s.spec?.selector ?? {};
    return (
      Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => podLabels?.[k] === v)
    );
  };
  const headless = (s: V1Service) => s.spec?.clusterIP === 'None';
  const named = knob(w, SERVICE_ANNOTATION);
  if (named !== undefined) {
    const service = services.find((s) => s.metadata?.name === named);
    if (!service)
      return { error: `annotation ${SERVICE_ANNOTATION}: Service ${JSON.stringify(named)} does not exist` };
    if (headless(service)) {
      return {
        error: `annotation ${SERVICE_ANNOTATION}: Service ${named} is headless, so kube-proxy does not route it`,
      };
    }
    if ((service.spec?.ports?.length ?? 0) !== 1) return { error: onePort(service) };
    if (!selects(service)) {
      return {
        error: `annotation ${SERVICE_ANNOTATION}: Service ${named} does not select the pods of ${describe(w)}`,
      };
    }
    return { service };
  }
  const candidates = services.filter((s) => selects(s) && !headless(s));
  if (candidates.length === 1) {
    const [service] = candidates as [V1Service];
    return (service.spec?.ports?.length ?? 0) === 1 ? { service } : { error: onePort(service) };
  }
  const names = candidates.map((s) => s.metadata?.name).sort();
  return {
    error:
      candidates.length === 0
        ? `no Service (other than headless ones) selects the pods of ${describe(w)}; name the client Service with annotation ${SERVICE_ANNOTATION}`
        : `several Services select the pods of ${describe(w)} (${names.join(', ')}); name the client Service with annotation ${SERVICE_ANNOTATION}`,
  };
}

export function workloadSettings(
  w: Workload,
  services: readonly V1Service[],
  minIdleTimeoutMs: number,
): SettingsResult {
  const idleTimeout = knob(w, IDLE_TIMEOUT_ANNOTATION) ?? DEFAULT_WORKLOAD_IDLE_TIMEOUT;
  const idleTimeoutMs = parseDuration(idleTimeout);
  if (idleTimeoutMs === undefined) {
    return {
      ok: false,
      error: `annotation ${IDLE_TIMEOUT_ANNOTATION}: ${JSON.stringify(idleTimeout)} is not a duration such as 90s, 5m or 1h`,
    };
  }
  if (idleTimeoutMs < minIdleTimeoutMs) {
    return {
      ok: false,
      error: `annotation ${IDLE_TIMEOUT_ANNOTATION}: ${idleTimeout} is shorter than the minimum of ${minIdleTimeoutMs / 1000}s (the controller's --min-idle-timeout)`,
    };
  }
  const replicasText = knob(w, WAKE_REPLICAS_ANNOTATION);
  let wakeReplicas: number | undefined;
  if (replicasText !== undefined) {
    wakeReplicas = /^[0-9]+$/.test(replicasText) ? Number(replicasText) : NaN;
    if (!(wakeReplicas >= 1 && wakeReplicas <= 1000)) {
      return {
        ok: false,
        error: `annotation ${WAKE_REPLICAS_ANNOTATION}: ${JSON.stringify(replicasText)} is not a whole number from 1 to 1000`,
      };
    }
  }
  const found = clientService(w, services);
  if ('error' in found) return { ok: false, error: found.error };
  return {
    ok: true,
    settings: {
      idleTimeoutMs,
      idleTimeout,
      serviceName: found.service.metadata!.name!,
      service: found.service,
      wakeReplicas,
    },
  };
}

const isIso = (v: unknown): v is string => typeof v === 'string' && !Number.isNaN(Date.parse(v));
const isPort = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0 && (v as number) < 65536;

/**
 * The state annotation, read defensively: it is ours, but anyone can edit an annotation. A field
 * that does not parse is dropped (the state then says less, which at worst keeps the workload
 * awake longer), and the error says what was wrong.
 */
export function readWorkloadState(w: Workload): { state: WorkloadState; error?: string } {
  const text = w.metadata?.annotations?.[AUTOSCALING_STATE_ANNOTATION];
  if (text === undefined) return { state: {} };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { state: {}, error: `annotation ${AUTOSCALING_STATE_ANNOTATION} is not JSON; starting afresh` };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return {
      state: {},
      error: `annotation ${AUTOSCALING_STATE_ANNOTATION} is not a JSON object; starting afresh`,
    };
  }
  const r = raw as Record<string, unknown>;
  const state: WorkloadState = {};
  if ((PHASES as readonly unknown[]).includes(r['phase'])) state.phase = r['phase'] as Phase;
  if (isPort(r['activatorPort'])) state.activatorPort = r['activatorPort'];
  for (const k of ['idleSince', 'scaledToZeroTime', 'wakeStartTime', 'lastActivityTime'] as const) {
    if (isIso(r[k])) state[k] = r[k];
  }
  if (Number.isInteger(r['replicas']) && (r['replicas'] as number) >= 1)
    state.replicas = r['replicas'] as number;
  if (typeof r['reason'] === 'string') state.reason = r['reason'];
  if (typeof r['service'] === 'string') state.service = r['service'];
  if (typeof r['message'] === 'string') state.message = r['message'];
  if (Array.isArray(r['idleEvidence'])) {
    const evidence = r['idleEvidence'].filter(
      (e): e is NonNullable<BuildkitAutoscalingStatus['idleEvidence']>[number] =>
        typeof e === 'object' &&
        e !== null &&
        typeof (e as Record<string, unknown>)['pod'] === 'string' &&
        typeof (e as Record<string, unknown>)['bootId'] === 'string' &&
        Number.isInteger((e as Record<string, unknown>)['opened']),
    );
    if (evidence.length === r['idleEvidence'].length) state.idleEvidence = evidence;
  }
  return { state };
}

/** The annotation's text: keys in a fixed order, absent fields left out, so equal states compare equal. */
export function writeWorkloadState(state: WorkloadState): string {
  const ordered: (keyof WorkloadState)[] = [
    'phase',
    'reason',
    'message',
    'replicas',
    'service',
    'activatorPort',
    'idleSince',
    'idleEvidence',
    'lastActivityTime',
    'scaledToZeroTime',
    'wakeStartTime',
  ];
  const out: Record<string, unknown> = {};
  for (const k of ordered) if (state[k] !== undefined) out[k] = state[k];
  return JSON.stringify(out);
}

/** Replicas a wake sets: the annotation's, else those before the scale-down, else 1. */
export function replicasOnWake(settings: WorkloadSettings | undefined, state: WorkloadState): number {
  return settings?.wakeReplicas ?? state.replicas ?? 1;
}
