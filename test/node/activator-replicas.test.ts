// Two controller replicas on the real node, each with its own activator address (the node IP and
// a second host address): the routes of a target at zero list both, found through the replicas'
// Leases; the leader is killed (SIGKILL) and a client that connects to the other replica's
// activator right then is held there, and once that replica has taken over the lead, woken and
// served. The replica that died did not hold it. Then a replica told to stop (SIGTERM) while it
// holds a client keeps it through its drain: woken, spliced, its build streamed to the end.
import fs from 'node:fs';

import { startCluster, type LocalCluster } from '../../hack/cluster.ts';
import { NODE_IP, SECOND_HOST_IP } from '../../hack/real-node/plan.ts';
import { listWorkers, streamBuild } from '../support/buildkit-client.ts';
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
    /** set by the first test: the address of the replica it killed, free for another */
    let freedAddress: string | undefined;

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
    const untilPhase = (phase: string, what: string, timeoutMs = 60_000) =>
      waitFor(what, async () => (await buildkit()).status?.phase === phase, { timeoutMs, intervalMs: 250 });
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
      freedAddress = otherAddress === NODE_IP ? SECOND_HOST_IP : NODE_IP;
      // straight to the surviving replica's activator: it holds the client, takes over the lead
      // once the dead one's Lease expires, wakes the instance and splices the client through
      const reply = await listWorkers(`tcp://${otherAddress}:${port}`, 120_000);
      expect(reply.record[0]?.ID).toBe('standin');
      expect(await isLeader(other)).toBe(true);

      // the dead replica's activator Lease expires and the routes drop it
      await untilPhase('Running', 'the Running instance');
      await untilPhase('ScaledToZero', 'the instance at zero again');
      await waitFor(
        'the route to list only the survivor',
        async () => JSON.stringify(await sliceAddresses()) === JSON.stringify([otherAddress]),
        { timeoutMs: 30_000, intervalMs: 250 },
      );
    }, 400_000);

    // A rolling upgrade stops replicas with SIGTERM: one that holds a client when told to stop
    // leaves the routes, keeps the client while another replica leads the wake, splices it, and
    // exits only once the build streaming through it has ended.
    test('a replica stopped while it holds a client keeps it: woken, served, its build runs to the end', async () => {
      expect(freedAddress).toBeDefined();
      const third = startPlatformProcess(
        'controller-c',
        controllerArgs(cluster, replicaFlags(freedAddress!)),
        cluster.dir,
      );
      processes.push(third);
      const exited = new Promise<{ code: number | null; signal: string | null; at: number }>((resolve) =>
        third.child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
      );
      await waitFor(
        'the route to list both activators again',
        async () =>
          JSON.stringify(await sliceAddresses()) === JSON.stringify([NODE_IP, SECOND_HOST_IP].sort()),
        { timeoutMs: 60_000, intervalMs: 250 },
      );
      expect((await buildkit()).status?.phase).toBe('ScaledToZero');
      const port = (await buildkit()).status!.autoscaling!.activatorPort!;
      const log = () => fs.readFileSync(third.logPath, 'utf8');

      const build = streamBuild(`tcp://${freedAddress}:${port}`, 'steps=8,quiet=500');
      const done = build.done.then((result) => ({ ...result, at: Date.now() }));
      await waitFor(
        'the third replica to hold the client',
        async () => log().includes('"msg":"wake requested"'),
        {
          timeoutMs: 30_000,
          intervalMs: 100,
        },
      );
      third.child.kill('SIGTERM');

      const { steps, at } = await done;
      expect(steps).toHaveLength(8);
      const exit = await exited;
      expect(exit).toMatchObject({ code: 0, signal: null });
      expect(exit.at).toBeGreaterThanOrEqual(at);
      const lines = log()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { msg: string; held?: number; open?: number });
      // told to stop while it held the client (before the target was ready); the client, spliced
      // by then, was still open when the drain began, and nothing was reset
      const order = (msg: string) => lines.findIndex((l) => l.msg.startsWith(msg));
      expect(order('shutting down')).toBeGreaterThan(order('wake requested'));
      expect(order('target ready')).toBeGreaterThan(order('shutting down'));
      expect(lines.find((l) => l.msg.startsWith('activator draining'))).toMatchObject({ open: 1 });
      expect(lines.map((l) => l.msg)).toContain('activator drained: every connection finished');
      expect(lines.find((l) => l.msg === 'activator closed')).toMatchObject({ reset: 0 });
      await untilPhase('ScaledToZero', 'the instance at zero again');
      await waitFor(
        'the route to list only the survivor again',
        async () => (await sliceAddresses()).every((a) => a !== freedAddress),
        { timeoutMs: 30_000, intervalMs: 250 },
      );
    }, 300_000);
  },
);
