// The idle scaler's loop (leader only): reads every autoscaled pod's sidecar stats on a short
// interval and when a target's pods change, keeps the readings of this leadership term, and
// asks decideIdle() about each target. It writes nothing itself: when a target's decision
// changes (or says scale down) it enqueues the target, and the target's reconcile, serialized
// with everything else done to that object, records the decision and runs the fence.
import type { V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';

import type { BuildkitAutoscalingStatus } from '../../api/types.generated.ts';
import type { IdleDecision, SidecarReading } from './idle-decision.ts';
import { decideIdle } from './idle-decision.ts';
import { readStats, sidecarAddress } from './sidecar-client.ts';
import { hasReadyCondition } from '../../kube/pod-status.ts';
import { parseTargetKey } from './target-kinds.ts';

export interface IdleTarget {
  key: string;
  idleTimeoutMs: number;
  /** pods that run (not terminating) */
  pods: V1Pod[];
  record: BuildkitAutoscalingStatus | undefined;
}

export interface IdleScalerOptions {
  logger: Logger;
  registry: Registry;
  /** the autoscaled targets that are awake, from the caches */
  listTargets(): IdleTarget[];
  /** the target's decision changed: reconcile it */
  onChange(key: string): void;
  intervalMs: number;
  readTimeoutMs: number;
  now?: () => number;
}

export interface IdleScaler {
  decision(key: string): IdleDecision | undefined;
  /** read the target's sidecars now (its pods changed) */
  poke(key: string): void;
  /** one pass over every target; resolves when its readings are in */
  pass(): Promise<void>;
  stop(): Promise<void>;
}

const sameDecision = (a: IdleDecision | undefined, b: IdleDecision) =>
  a !== undefined &&
  a.scaleDown === b.scaleDown &&
  a.reason === b.reason &&
  a.message === b.message &&
  JSON.stringify(a.record) === JSON.stringify(b.record);

export function startIdleScaler(o: IdleScalerOptions): IdleScaler {
  const now = o.now ?? (() => Date.now());
  const readings = new Map<string, SidecarReading>(); // by pod uid: a new pod of the same name starts fresh
  const decisions = new Map<string, IdleDecision>();
  const metrics = scalerMetrics(o.registry);
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;

  async function readPod(pod: V1Pod): Promise<void> {
    const uid = pod.metadata?.uid ?? '';
    const address = sidecarAddress(pod);
    if ('error' in address) {
      readings.set(uid, { ok: false, error: address.error, readAtMs: now() });
      return;
    }
    try {
      const stats = await readStats(address, o.readTimeoutMs);
      readings.set(uid, { ok: true, stats, readAtMs: now() });
      metrics.reads.inc({ outcome: 'ok' });
    } catch (error) {
      readings.set(uid, { ok: false, error: (error as Error).message, readAtMs: now() });
      metrics.reads.inc({ outcome: 'failed' });
    }
  }

  function decide(target: IdleTarget): void {
    const byName = new Map<string, SidecarReading>();
    for (const pod of target.pods) {
      const r = readings.get(pod.metadata?.uid ?? '');
      if (r) byName.set(pod.metadata!.name!, r);
    }
    const d = decideIdle({
      nowMs: now(),
      idleTimeoutMs: target.idleTimeoutMs,
      pods: target.pods.map((p) => p.metadata!.name!),
      notReady: target.pods.filter((p) => !hasReadyCondition(p)).map((p) => p.metadata!.name!),
      readings: byName,
      maxReadingAgeMs: Math.max(3 * o.intervalMs, 2 * o.readTimeoutMs),
      record: target.record,
    });
    const previous = decisions.get(target.key);
    decisions.set(target.key, d);
    if (!sameDecision(previous, d) || d.scaleDown) {
      if (!sameDecision(previous, d)) {
        const { kind, namespace, name } = parseTargetKey(target.key);
        o.logger.info(
          {
            kind,
            namespace,
            name,
            decision: d.scaleDown ? 'scale down' : 'stay awake',
            reason: d.reason,
            detail: d.message,
          },
          'idle decision',
        );
      }
      o.onChange(target.key);
    }
  }

  async function readTargets(targets: IdleTarget[]): Promise<void> {
    await Promise.all(targets.flatMap((t) => t.pods.map(readPod)));
    if (stopped) return;
    for (const t of targets) decide(t);
  }

  async function pass(): Promise<void> {
    const targets = o.listTargets();
    const live = new Set(targets.flatMap((t) => t.pods.map((p) => p.metadata?.uid ?? '')));
    for (const uid of readings.keys()) if (!live.has(uid)) readings.delete(uid);
    const keys = new Set(targets.map((t) => t.key));
    for (const key of decisions.keys()) if (!keys.has(key)) decisions.delete(key);
    metrics.awake.reset();
    await readTargets(targets);
    for (const d of decisions.values()) metrics.awake.inc({ reason: d.reason });
  }

  const loop = () => {
    if (stopped) return;
    running = pass()
      .catch((error: Error) => o.logger.error({ err: error.message }, 'idle scaler pass failed'))
      .finally(() => {
        if (!stopped) timer = setTimeout(loop, o.intervalMs);
      });
  };
  loop();

  return {
    decision: (key) => decisions.get(key),
    poke(key) {
      const target = o.listTargets().find((t) => t.key === key);
      if (target) void readTargets([target]).catch(() => undefined);
    },
    pass,
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}

function scalerMetrics(registry: Registry) {
  const get = <T>(name: string, make: () => T): T =>
    (registry.getSingleMetric(name) as T | undefined) ?? make();
  return {
    reads: get(
      'buildkit_fleet_scaler_sidecar_reads_total',
      () =>
        new Counter({
          name: 'buildkit_fleet_scaler_sidecar_reads_total',
          help: 'Sidecar /stats reads by the idle scaler, by outcome.',
          labelNames: ['outcome'],
          registers: [registry],
        }),
    ),
    awake: get(
      'buildkit_fleet_scaler_targets_awake',
      () =>
        new Gauge({
          name: 'buildkit_fleet_scaler_targets_awake',
          help: 'Autoscaled targets that are awake, by the reason they are (or ScalingDown).',
          labelNames: ['reason'],
          registers: [registry],
        }),
    ),
  };
}
