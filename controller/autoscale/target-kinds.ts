// The kinds of object that scale to zero, and the keys that name one target across the idle
// scaler, the activator and the work queues. A Buildkit's key is `namespace/name` (the Buildkit
// queue's key); a workload's is `Kind/namespace/name`. Names and namespaces never contain `/`.
import { BUILDKIT, GROUP, VERSION } from '../../api/group.ts';

export const WORKLOAD_KINDS = ['StatefulSet', 'Deployment'] as const;
export type WorkloadKind = (typeof WORKLOAD_KINDS)[number];
export type TargetKind = typeof BUILDKIT.kind | WorkloadKind;

/** Where each kind lives in the API (for the generic object calls). */
export const TARGET_RESOURCES: Record<TargetKind, { group: string; version: string; plural: string }> = {
  Buildkit: { group: GROUP, version: VERSION, plural: BUILDKIT.plural },
  StatefulSet: { group: 'apps', version: 'v1', plural: 'statefulsets' },
  Deployment: { group: 'apps', version: 'v1', plural: 'deployments' },
};

export interface TargetName {
  kind: TargetKind;
  namespace: string;
  name: string;
}

export function targetKey(t: TargetName): string {
  return t.kind === BUILDKIT.kind ? `${t.namespace}/${t.name}` : `${t.kind}/${t.namespace}/${t.name}`;
}

export function parseTargetKey(key: string): TargetName {
  const parts = key.split('/');
  if (parts.length === 2) return { kind: BUILDKIT.kind, namespace: parts[0]!, name: parts[1]! };
  const [kind, namespace, name] = parts as [string, string, string];
  if (parts.length !== 3 || !(WORKLOAD_KINDS as readonly string[]).includes(kind)) {
    throw new Error(`not a target key: ${JSON.stringify(key)}`);
  }
  return { kind: kind as WorkloadKind, namespace, name };
}

export const isWorkloadKey = (key: string): boolean => key.split('/').length === 3;
