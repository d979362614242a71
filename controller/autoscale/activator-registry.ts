// How the replicas' activators find each other: each replica keeps a Lease of its own (labelled,
// in the leader-election namespace) that names its activator addresses and is renewed every
// third of its duration; each replica also lists the others' on the same tick. The leader routes
// every target's Service to the addresses of the Leases that are fresh, so a connection may
// reach any live replica, not only the leader's. A replica that stops deletes its Lease first;
// one that dies drops out when its Lease expires.
import { createHash } from 'node:crypto';

import { CoordinationV1Api, V1MicroTime } from '@kubernetes/client-node';
import type { KubeConfig, V1Lease } from '@kubernetes/client-node';
import type { Logger } from 'pino';

import { MANAGED_BY_LABEL, MANAGED_BY_VALUE } from '../../api/labels.ts';
import { isConflict, isNotFound } from '../../kube/errors.ts';

export const ACTIVATOR_LEASE_LABEL = 'buildkit-fleet.io/activator';
export const ACTIVATOR_ADDRESSES_ANNOTATION = 'buildkit-fleet.io/activator-addresses';

export const activatorLeaseName = (identity: string): string =>
  `bkf-activator-${createHash('sha256').update(identity).digest('hex').slice(0, 12)}`;

/**
 * The addresses of the replicas whose Leases are fresh (pure), and this replica's own always:
 * sorted, each once. A Lease counts while its renewTime plus its duration is in the future.
 */
export function liveActivatorAddresses(leases: V1Lease[], own: string[], nowMs: number): string[] {
  const addresses = new Set(own);
  for (const lease of leases) {
    const renewed = lease.spec?.renewTime ? new Date(lease.spec.renewTime).getTime() : NaN;
    const durationMs = (lease.spec?.leaseDurationSeconds ?? 0) * 1000;
    if (!(renewed + durationMs > nowMs)) continue;
    const listed = lease.metadata?.annotations?.[ACTIVATOR_ADDRESSES_ANNOTATION] ?? '';
    for (const a of listed.split(',').map((s) => s.trim())) if (a) addresses.add(a);
  }
  return [...addresses].sort();
}

export interface ActivatorRegistry {
  /** the live replicas' addresses, this one's included */
  addresses(): string[];
  stop(): Promise<void>;
}

export function startActivatorRegistry(o: {
  kc: KubeConfig;
  logger: Logger;
  namespace: string;
  identity: string;
  /** this replica's activator addresses */
  own: string[];
  leaseDurationMs: number;
  /**
   * After deleting its Lease, how long stop() keeps this replica's listeners up while other
   * replicas are live: until the leader has seen the Lease go and rerouted, so that no client is
   * sent to a closed port meanwhile.
   */
  lingerMs?: number;
  /** the set of live addresses changed */
  onChange(addresses: string[]): void;
  now?: () => number;
}): ActivatorRegistry {
  const api = o.kc.makeApiClient(CoordinationV1Api);
  const now = o.now ?? (() => Date.now());
  const name = activatorLeaseName(o.identity);
  const log = o.logger.child({ subsystem: 'activator-registry', lease: `${o.namespace}/${name}` });
  let current = [...o.own].sort();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;

  const body = (resourceVersion?: string): V1Lease => ({
    metadata: {
      name,
      namespace: o.namespace,
      ...(resourceVersion ? { resourceVersion } : {}),
      labels: { [ACTIVATOR_LEASE_LABEL]: 'true', [MANAGED_BY_LABEL]: MANAGED_BY_VALUE },
      annotations: { [ACTIVATOR_ADDRESSES_ANNOTATION]: o.own.join(',') },
    },
    spec: {
      holderIdentity: o.identity,
      leaseDurationSeconds: Math.max(1, Math.round(o.leaseDurationMs / 1000)),
      renewTime: new V1MicroTime(now()),
    },
  });

  async function renew(): Promise<void> {
    try {
      const existing = await api.readNamespacedLease({ namespace: o.namespace, name });
      await api.replaceNamespacedLease({
        namespace: o.namespace,
        name,
        body: body(existing.metadata?.resourceVersion),
      });
    } catch (error) {
      if (!isNotFound(error)) throw error;
      try {
        await api.createNamespacedLease({ namespace: o.namespace, body: body() });
      } catch (createError) {
        if (!isConflict(createError)) throw createError;
      }
    }
  }

  async function tick(): Promise<void> {
    if (o.own.length > 0) await renew();
    const list = await api.listNamespacedLease({
      namespace: o.namespace,
      labelSelector: `${ACTIVATOR_LEASE_LABEL}=true`,
    });
    const next = liveActivatorAddresses(list.items, o.own, now());
    await removeLongExpired(list.items);
    if (JSON.stringify(next) !== JSON.stringify(current)) {
      log.info({ addresses: next, previous: current }, 'activator replicas changed');
      current = next;
      o.onChange(next);
    }
  }

  // Every process start has a Lease of its own: those of replicas that died (no stop() ran) are
  // removed once expired for several durations, by whichever replica sees them first.
  async function removeLongExpired(leases: V1Lease[]): Promise<void> {
    for (const lease of leases) {
      const leaseName = lease.metadata?.name;
      if (!leaseName || leaseName === name) continue;
      const renewed = lease.spec?.renewTime ? new Date(lease.spec.renewTime).getTime() : NaN;
      const durationMs = (lease.spec?.leaseDurationSeconds ?? 0) * 1000;
      if (!(renewed + 3 * Math.max(durationMs, 1000) < now())) continue;
      try {
        await api.deleteNamespacedLease({
          namespace: o.namespace,
          name: leaseName,
          body: { preconditions: { resourceVersion: lease.metadata?.resourceVersion } },
        });
        log.info(
          { removed: leaseName },
          'removed the Lease of an activator replica that stopped renewing it',
        );
      } catch (error) {
        if (!isNotFound(error) && !isConflict(error)) throw error;
      }
    }
  }

  const loop = () => {
    if (stopped) return;
    running = tick()
      .catch((error: Error) => log.warn({ err: error.message }, 'activator lease not renewed'))
      .finally(() => {
        if (!stopped) timer = setTimeout(loop, Math.max(200, o.leaseDurationMs / 3));
      });
  };
  loop();

  return {
    addresses: () => current,
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
      if (o.own.length === 0) return;
      try {
        await api.deleteNamespacedLease({ namespace: o.namespace, name });
      } catch (error) {
        if (!isNotFound(error)) log.warn({ err: (error as Error).message }, 'activator lease not deleted');
      }
      const others = current.some((a) => !o.own.includes(a));
      if (others && o.lingerMs) await new Promise((resolve) => setTimeout(resolve, o.lingerMs));
    },
  };
}
