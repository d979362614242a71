// Keeps this replica's activator in step with the caches (runs in every replica, leader or
// not): recomputes the target set on every Buildkit, pod or Service change, confirms a newly
// ready pod's buildkitd with the sidecar's gRPC check before forwarding to it, and turns the
// activator's wake calls into wake requests on the object.
import type { V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';

import type { Activator } from '../../activator/index.ts';
import { ListenError } from '../../activator/index.ts';
import type { TargetSource } from './activator-targets.ts';
import { activatorTargets, forwardPod } from './activator-targets.ts';
import { checkServing, sidecarAddress } from './sidecar-client.ts';

export interface ActivatorSyncOptions {
  activator: Activator;
  logger: Logger;
  listSources(): TargetSource[];
  /** how often a ready pod's buildkitd is asked until it answers, and for how long */
  confirmIntervalMs?: number;
  confirmTimeoutMs?: number;
}

export interface ActivatorSync {
  /** something in the caches changed: recompute soon */
  schedule(): void;
  /** recompute now; resolves once the activator has the new set */
  sync(): Promise<void>;
  stop(): void;
}

export function startActivatorSync(o: ActivatorSyncOptions): ActivatorSync {
  const confirmed = new Set<string>();
  const confirming = new Set<string>();
  const interval = o.confirmIntervalMs ?? 50;
  const timeout = o.confirmTimeoutMs ?? 60_000;
  let stopped = false;
  let pending: NodeJS.Timeout | undefined;
  let chain: Promise<void> = Promise.resolve();

  async function confirm(key: string, pod: V1Pod): Promise<void> {
    const uid = pod.metadata?.uid ?? '';
    const address = sidecarAddress(pod);
    if ('error' in address) return;
    confirming.add(uid);
    const deadline = Date.now() + timeout;
    try {
      while (!stopped && Date.now() < deadline) {
        if (await checkServing(address, 1000)) {
          confirmed.add(uid);
          o.logger.info(
            { target: key, pod: pod.metadata?.name, decision: 'forward' },
            'buildkitd serves: forwarding held connections',
          );
          schedule();
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, interval));
      }
      if (!stopped)
        o.logger.warn(
          { target: key, pod: pod.metadata?.name },
          'buildkitd did not answer its readiness check: connections stay held',
        );
    } finally {
      confirming.delete(uid);
    }
  }

  async function apply(): Promise<void> {
    const sources = o.listSources();
    const live = new Set(sources.flatMap((s) => s.pods.map((p) => p.metadata?.uid ?? '')));
    for (const uid of confirmed) if (!live.has(uid)) confirmed.delete(uid);
    for (const s of sources) {
      const pod = forwardPod(s.pods);
      const uid = pod?.metadata?.uid ?? '';
      if (pod && s.activatorPort && !confirmed.has(uid) && !confirming.has(uid)) {
        confirm(s.key, pod).catch((error: Error) =>
          o.logger.error({ target: s.key, err: error.message }, 'readiness check failed'),
        );
      }
    }
    try {
      await o.activator.setTargets(activatorTargets(sources, confirmed));
    } catch (error) {
      if (error instanceof ListenError) {
        for (const f of error.failures) {
          o.logger.warn(
            { target: f.key, port: f.port, err: f.code },
            'activator cannot listen for this target: its clients are refused while it is at zero',
          );
        }
      } else {
        o.logger.error({ err: (error as Error).message }, 'activator targets not applied');
      }
    }
  }

  const sync = () => (chain = chain.then(apply));
  function schedule(): void {
    if (stopped || pending) return;
    pending = setTimeout(() => {
      pending = undefined;
      void sync();
    }, 10);
  }
  return {
    schedule,
    sync,
    stop() {
      stopped = true;
      if (pending) clearTimeout(pending);
    },
  };
}
