// Two controller replicas on the real node, each with its own activator address (the node IP and
// a second host address): the routes of a target at zero list both, found through the replicas'
// Leases; the leader is killed (SIGKILL) and a client that connects to the other replica's
// activator right then is held there, and once that replica has taken over the lead, woken and
// served. The replica that died did not hold it.
import fs from 'node:fs';

import { startCluster, type LocalCluster } from '../../hack/cluster.ts';
import { NODE_IP, SECOND_HOST_IP } from '../../hack/real-node/plan.ts';
import { listWorkers } from '../support/buildkit-client.ts';
import {
  controllerArgs,
  describeRealNode,
  startPlatform,
  startPlatformProcess,
  stopAll,
  type PlatformProcess,
} from '../support/node-tier.ts';
import { waitFor } from '../support/wait.ts';

const NAMESPACE = 'replicas-ns';
const INSTANCE = 'bk-replicated';

const replicaFlags = (address: string) => [
  '--activator-address',
  address,
  '--activator-listen-host',
  address,
  '--leader-election-namespace',
  'default',
  '--leader-election-lease-duration',
  '4',
  '--leader-election-renew-deadline',
  '3',
  '--leader-election-retry-period',
  '1',
  '--scale-interval',
  '0.5',
  '--fence-settle',
  '1',
];

describeRealNode(
  'two controller replicas: activators found from the cluster, a held client outlives the other replica',
  () => {
    let cluster: LocalCluster;
    let processes: PlatformProcess[] = [];

    const json = async <T>(args: string[]): Promise<T> =>
      JSON.parse((await cluster.kubectl([...args, '-o', 'json'])).stdout) as T;
    const buildkit = () =>
      json<{ status?: { phase?: string; endpoint?: string; autoscaling?: { activatorPort?: number } } }>([
        'get',
        'buildkit',
        '-n',
        NAMESPACE,
        INSTANCE,
      ]);
    const sliceAddresses = async () => {
      const slice = await json<{ endpoints?: { addresses: string[] }[] }>([
        'get',
        'endpointslices.discovery.k8s.io',
        '-n',
        NAMESPACE,
        `${INSTANCE}-bkf-activator`,
      ]);
      return (slice.endpoints ?? []).flatMap((e) => e.addresses).sort();
    };
    const isLeader = async (p: PlatformProcess) => {
      const url = /"metricsUrl":"(http:[^"]+)"/.exec(fs.readFileSync(p.logPath, 'utf8'));
      if (!url) return false;
      const text = await (await fetch(`${url[1]}/metrics`)).text();
      return /^buildkit_fleet_leader_is_leader\{[^}]*\} 1$/m.test(text);
    };

    beforeAll(async () => {
      cluster = await startCluster({ nodes: 0, realNode: true });
      processes = await startPlatform(cluster, 'bkf-activator-replicas', replicaFlags(NODE_IP), [
        '--min-idle-timeout',
        '5s',
      ]);
      processes.push(
        startPlatformProcess(
          'controller-b',
          controllerArgs(cluster, replicaFlags(SECOND_HOST_IP)),
          cluster.dir,
        ),
      );
      await cluster.kubectl(['create', 'namespace', NAMESPACE]);
      await cluster.kubectl(['apply', '-f', '-'], {
        input: `
apiVersion: buildkit.seatgeek.io/v1alpha1
kind: BuildkitTemplate
metadata: { name: autoscaled, namespace: ${NAMESPACE} }
spec:
  port: 1234
  autoscaling: { enabled: true, idleTimeout: 5s }
  lifecycle: { preStopScript: true }
---
apiVersion: buildkit.seatgeek.io/v1alpha1
kind: Buildkit
metadata: { name: ${INSTANCE}, namespace: ${NAMESPACE} }
spec: { template: autoscaled }
`,
      });
    }, 600_000);

    afterAll(() => stopAll(cluster, processes, 'bkf-activator-replicas-logs'), 120_000);

    test('at zero the route lists both replicas; the leader dies and a client held by the other is served', async () => {
      await waitFor('the instance at zero', async () => (await buildkit()).status?.phase === 'ScaledToZero', {
        timeoutMs: 240_000,
        intervalMs: 500,
      });
      await waitFor(
        'the route to list both activators',
        async () =>
          JSON.stringify(await sliceAddresses()) === JSON.stringify([NODE_IP, SECOND_HOST_IP].sort()),
        { timeoutMs: 30_000, intervalMs: 250 },
      );
      const port = (await buildkit()).status!.autoscaling!.activatorPort!;

      const leaders = await Promise.all(
        processes.filter((p) => p.logPath.includes('controller')).map(isLeader),
      );
      const controllers = processes.filter((p) => p.logPath.includes('controller'));
      const leader = controllers[leaders.indexOf(true)]!;
      const other = controllers[leaders.indexOf(false)]!;
      expect([leader, other].every(Boolean)).toBe(true);
      const otherAddress = other.logPath.endsWith('controller-b.log') ? SECOND_HOST_IP : NODE_IP;

      leader.child.kill('SIGKILL');
      await new Promise((resolve) => leader.child.once('exit', resolve));
      // straight to the surviving replica's activator: it holds the client, takes over the lead
      // once the dead one's Lease expires, wakes the instance and splices the client through
      const reply = await listWorkers(`tcp://${otherAddress}:${port}`, 120_000);
      expect(reply.record[0]?.ID).toBe('standin');
      expect(await isLeader(other)).toBe(true);

      // the dead replica's activator Lease expires and the routes drop it
      await waitFor('the Running instance', async () => (await buildkit()).status?.phase === 'Running', {
        timeoutMs: 60_000,
        intervalMs: 250,
      });
      await waitFor(
        'the instance at zero again',
        async () => (await buildkit()).status?.phase === 'ScaledToZero',
        {
          timeoutMs: 60_000,
          intervalMs: 250,
        },
      );
      await waitFor(
        'the route to list only the survivor',
        async () => JSON.stringify(await sliceAddresses()) === JSON.stringify([otherAddress]),
        { timeoutMs: 30_000, intervalMs: 250 },
      );
    }, 400_000);
  },
);
