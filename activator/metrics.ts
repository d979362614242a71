// Prometheus metrics of the activator (buildkit_fleet_activator_*). The held gauge is read from the
// live hold queues at scrape time, so it is exact and a removed target's series goes away with it.
import { Counter, Gauge, Histogram } from 'prom-client';
import type { Registry } from 'prom-client';

/** How a connection's stay in the activator ended; each accepted connection counts exactly once. */
export type Outcome =
  'spliced' | 'forwarded' | 'gave_up' | 'bound_count' | 'bound_time' | 'upstream_failed' | 'target_removed';

export interface ActivatorMetrics {
  outcome(target: string, outcome: Outcome): void;
  wake(target: string): void;
  /** arrival to splice start (release), in seconds */
  held(seconds: number): void;
  /** bytes written to an upstream (held bytes included) */
  toUpstream: { inc(bytes: number): void };
  /** bytes written to a client */
  toClient: { inc(bytes: number): void };
}

export function createActivatorMetrics(
  registry: Registry,
  heldByTarget: () => Iterable<[string, number]>,
): ActivatorMetrics {
  new Gauge({
    name: 'buildkit_fleet_activator_held_connections',
    help: 'Connections held (waiting for their target to be ready), by target.',
    labelNames: ['target'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [target, held] of heldByTarget()) this.set({ target }, held);
    },
  });
  const connections = new Counter({
    name: 'buildkit_fleet_activator_connections_total',
    help: 'Accepted connections by target and outcome (spliced, forwarded, gave_up, bound_count, bound_time, upstream_failed, target_removed).',
    labelNames: ['target', 'outcome'] as const,
    registers: [registry],
  });
  const wakes = new Counter({
    name: 'buildkit_fleet_activator_wakes_requested_total',
    help: 'Wakes asked for (onWake calls), by target.',
    labelNames: ['target'] as const,
    registers: [registry],
  });
  const holdDuration = new Histogram({
    name: 'buildkit_fleet_activator_hold_duration_seconds',
    help: 'Time from a held connection arriving to its splice starting.',
    buckets: [0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300],
    registers: [registry],
  });
  const bytes = new Counter({
    name: 'buildkit_fleet_activator_spliced_bytes_total',
    help: 'Bytes passed through spliced connections, by direction (to_upstream, to_client).',
    labelNames: ['direction'] as const,
    registers: [registry],
  });
  return {
    outcome: (target, outcome) => connections.inc({ target, outcome }),
    wake: (target) => wakes.inc({ target }),
    held: (seconds) => holdDuration.observe(seconds),
    toUpstream: bytes.labels('to_upstream'),
    toClient: bytes.labels('to_client'),
  };
}
