// Activator replicas finding each other through their Leases, on the real API server: a second
// replica's addresses show up in the first one's set, leave it when the second stops (its Lease
// deleted), and leave it when a replica dies without stopping (its Lease expires).
import { randomBytes } from 'node:crypto';

import { CoordinationV1Api, CoreV1Api } from '@kubernetes/client-node';
import { pino } from 'pino';

import { testCluster } from '../../hack/testenv.ts';
import {
  activatorLeaseName,
  startActivatorRegistry,
  type ActivatorRegistry,
} from '../../controller/autoscale/activator-registry.ts';
import { waitFor } from '../support/wait.ts';

const cluster = testCluster();
const kc = cluster.kubeConfig;
const namespace = `activator-registry-${randomBytes(3).toString('hex')}`;
const logger = pino({ level: 'silent' });
const running: ActivatorRegistry[] = [];

beforeAll(async () => {
  await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: namespace } } });
});
afterAll(async () => {
  await Promise.all(running.map((r) => r.stop()));
  await kc.makeApiClient(CoreV1Api).deleteNamespace({ name: namespace });
});

const start = (identity: string, own: string[], leaseDurationMs = 3000) => {
  const changes: string[][] = [];
  const registry = startActivatorRegistry({
    kc,
    logger,
    namespace,
    identity,
    own,
    leaseDurationMs,
    onChange: (a) => changes.push(a),
  });
  running.push(registry);
  return { registry, changes };
};
const has = (r: ActivatorRegistry, want: string[]) => () =>
  JSON.stringify(r.addresses()) === JSON.stringify(want) ? true : undefined;

test('replicas see each other; a stopped one leaves at once, a dead one when its Lease expires', async () => {
  const a = start('replica-a', ['10.0.0.1']);
  const b = start('replica-b', ['10.0.0.2']);
  await waitFor('a to see b', has(a.registry, ['10.0.0.1', '10.0.0.2']), { timeoutMs: 15_000 });
  await waitFor('b to see a', has(b.registry, ['10.0.0.1', '10.0.0.2']), { timeoutMs: 15_000 });
  expect(a.changes.at(-1)).toEqual(['10.0.0.1', '10.0.0.2']);

  // stopped: its Lease is deleted
  await b.registry.stop();
  const coordination = kc.makeApiClient(CoordinationV1Api);
  await expect(
    coordination.readNamespacedLease({ namespace, name: activatorLeaseName('replica-b') }),
  ).rejects.toThrow();
  await waitFor('a to see b leave', has(a.registry, ['10.0.0.1']), { timeoutMs: 15_000 });

  // dead: a Lease nobody renews any more (as a killed replica leaves it)
  const c = start('replica-c', ['10.0.0.3'], 2000);
  await waitFor('a to see c', has(a.registry, ['10.0.0.1', '10.0.0.3']), { timeoutMs: 15_000 });
  const lease = await coordination.readNamespacedLease({ namespace, name: activatorLeaseName('replica-c') });
  // stop renewing without deleting: replace c's loop by a frozen copy of its Lease
  running.splice(running.indexOf(c.registry), 1);
  await c.registry.stop();
  await coordination.createNamespacedLease({
    namespace,
    body: {
      metadata: {
        name: lease.metadata!.name!,
        labels: lease.metadata!.labels!,
        annotations: lease.metadata!.annotations!,
      },
      spec: lease.spec!,
    },
  });
  await waitFor('a to see c again while its Lease is fresh', has(a.registry, ['10.0.0.1', '10.0.0.3']), {
    timeoutMs: 5_000,
  });
  await waitFor('a to drop c once its Lease expired', has(a.registry, ['10.0.0.1']), { timeoutMs: 15_000 });
}, 60_000);
