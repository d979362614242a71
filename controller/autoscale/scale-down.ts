// The fenced scale-down of one target, step by step (the judgement in between is
// judgeFence(), pure):
//   1. fence every pod's sidecar, giving it the activator as the place for late arrivals;
//   2. route the Service to the activators (an activator splices what reaches it to the pod,
//      which is still running, so the pod's sidecar counts it and the fence breaks);
//   3. wait for kube-proxy to move new connections over (the settle time);
//   4. read every fence: anything but the idle state the decision rested on aborts;
//   5. record the target as at zero (before the pods go, so that no reconcile recreates them);
//   6. delete the pods, preconditioned on their uid.
// An abort unfences the pods and leaves the route to the caller (the next reconcile routes the
// Service back to the ready pod). A connection that arrives after step 4 reaches either the
// activator (held, and it wakes the target) or the stopping sidecar, which keeps the pod alive
// with the preStop drain while it is open, or passes a late arrival on to the activator.
import { setTimeout as sleep } from 'node:timers/promises';
import type { V1Pod } from '@kubernetes/client-node';

import type { FenceReading } from './fence-judgement.ts';
import { judgeFence } from './fence-judgement.ts';
import type { IdleEvidence } from './idle-decision.ts';
import type { SidecarAddress } from './sidecar-client.ts';
import { clearFence, readFence, setFence, sidecarAddress } from './sidecar-client.ts';

export interface ScaleDownSteps {
  pods: V1Pod[];
  evidence: IdleEvidence[];
  token: string;
  /** where a stopping sidecar passes late arrivals (an activator at the target's port) */
  handoff: SidecarAddress | undefined;
  requestTimeoutMs: number;
  settleMs: number;
  routeToActivator(): Promise<void>;
  recordZero(): Promise<void>;
  /** absent: recording zero already made the pods go (a workload set to 0 replicas) */
  deletePod?: (pod: V1Pod) => Promise<void>;
}

export type ScaleDownOutcome = { scaled: true; pods: string[] } | { scaled: false; reason: string };

async function eachPod<T>(
  pods: V1Pod[],
  step: (address: SidecarAddress) => Promise<T>,
): Promise<Map<string, T | { error: string }>> {
  const results = new Map<string, T | { error: string }>();
  await Promise.all(
    pods.map(async (pod) => {
      const name = pod.metadata!.name!;
      const address = sidecarAddress(pod);
      if ('error' in address) return results.set(name, address);
      try {
        results.set(name, await step(address));
      } catch (error) {
        results.set(name, { error: (error as Error).message });
      }
      return results;
    }),
  );
  return results;
}

export async function runScaleDown(s: ScaleDownSteps): Promise<ScaleDownOutcome> {
  const abort = async (reason: string): Promise<ScaleDownOutcome> => {
    await eachPod(s.pods, (a) => clearFence(a, s.token, s.requestTimeoutMs));
    return { scaled: false, reason };
  };
  const fenced = await eachPod(s.pods, (a) => setFence(a, s.token, s.requestTimeoutMs, s.handoff));
  const early = judgeFence(s.evidence, fenced);
  if (!early.clean) return abort(`fence: ${early.reason}`);
  try {
    await s.routeToActivator();
  } catch (error) {
    return abort(`routing the Service to the activators failed: ${(error as Error).message}`);
  }
  await sleep(s.settleMs);
  const confirmed = await eachPod<FenceReading>(s.pods, (a) => readFence(a, s.requestTimeoutMs));
  const verdict = judgeFence(s.evidence, confirmed);
  if (!verdict.clean) return abort(`fence: ${verdict.reason}`);
  try {
    await s.recordZero();
  } catch (error) {
    return abort(`recording the scale-down failed: ${(error as Error).message}`);
  }
  if (s.deletePod) for (const pod of s.pods) await s.deletePod(pod);
  return { scaled: true, pods: s.pods.map((p) => p.metadata!.name!) };
}
