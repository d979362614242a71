// The real-node tier: a Buildkit from the seed's template runs as a real pod on the local
// cluster's real node (kubelet, containerd, runc, kube-proxy), with the webhook and the controller
// as host processes. Traffic goes host -> Service (kube-proxy) -> injected sidecar -> buildkitd
// stand-in; deleting the pod runs the preStop drain; the egress guard keeps the node tier off
// anything but its own networks; stopping the cluster leaves nothing on the host.
//
// The tests share one cluster and run in order: the last one stops it.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

import { startCluster, type LocalCluster } from '../../hack/cluster.ts';
import {
  mountsUnder,
  processesWith,
  readSysctl,
  run,
  cgroupRoots,
  linkExists,
} from '../../hack/real-node/host.ts';
import { ownedLeftovers } from '../../hack/real-node/iptables-cleanup.ts';
import type { RealNodeJournal } from '../../hack/real-node/journal.ts';
import { BRIDGE, HOST_ADDRESSES, KUBEPODS_CGROUP, REAL_NODE_NAME } from '../../hack/real-node/plan.ts';
import { isRunning } from '../../hack/proc.ts';
import { readState } from '../../hack/state.ts';
import { healthCheck, listWorkers, streamBuild } from '../support/buildkit-client.ts';
import { seatgeekExamples } from '../support/examples.ts';
import {
  describeRealNode,
  SIDECAR_IMAGE,
  startPlatform,
  type PlatformProcess,
} from '../support/node-tier.ts';
import { waitFor } from '../support/wait.ts';

const NAMESPACE = 'some-ns'; // the seed's
const TEMPLATE = 'buildkit-arm64';
const INSTANCE = 'buildkit-arm64-instance';

interface PodView {
  metadata: { name: string; uid: string; deletionTimestamp?: string };
  spec: { nodeName?: string; containers: { name: string; image: string }[] };
  status: {
    podIP?: string;
    phase?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { name: string; ready: boolean }[];
  };
}

describeRealNode('a Buildkit on the real node', () => {
  let cluster: LocalCluster;
  let journal: RealNodeJournal;
  const platform: PlatformProcess[] = [];

  const kubectlJson = async <T>(args: string[]): Promise<T> =>
    JSON.parse((await cluster.kubectl([...args, '-o', 'json'])).stdout) as T;
  const buildkitPods = async (): Promise<PodView[]> =>
    (
      await kubectlJson<{ items: PodView[] }>([
        'get',
        'pods',
        '-n',
        NAMESPACE,
        '-l',
        `buildkit.seatgeek.io/instance=${INSTANCE}`,
      ])
    ).items;
  const readyPod = (): Promise<PodView> =>
    waitFor(
      'a Ready buildkitd pod',
      async () =>
        (await buildkitPods()).find(
          (p) =>
            !p.metadata.deletionTimestamp &&
            p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
        ),
      { timeoutMs: 90_000, intervalMs: 250 },
    );
  const endpoint = async (): Promise<string> =>
    waitFor(
      'status.endpoint',
      async () =>
        (
          await kubectlJson<{ status?: { endpoint?: string } }>([
            'get',
            'buildkit',
            '-n',
            NAMESPACE,
            INSTANCE,
          ])
        ).status?.endpoint,
      { timeoutMs: 60_000, intervalMs: 250 },
    );
  const sidecarStats = async (pod: PodView): Promise<Record<string, number>> =>
    (await (await fetch(`http://${pod.status.podIP}:9436/stats`)).json()) as Record<string, number>;

  beforeAll(async () => {
    const { template } = seatgeekExamples();
    // The seed's template selects linux/arm64 nodes: the real node carries those labels.
    const selector = /nodeSelector:\n((?:\s+\S+: \S+\n)+)/.exec(template)![1]!;
    const labels = Object.fromEntries(
      selector
        .trim()
        .split('\n')
        .map((l) => l.trim().split(': ') as [string, string]),
    );
    cluster = await startCluster({ nodes: 0, realNode: { labels } });
    journal = readState(cluster.dir)!.realNode!;
    platform.push(...(await startPlatform(cluster, 'bkf-real-node')));
    await cluster.kubectl(['create', 'namespace', NAMESPACE]);
  }, 600_000);

  afterAll(async () => {
    await Promise.all(platform.map((p) => p.stop()));
    await cluster?.stop();
  }, 120_000);

  test('the seed template and instance become a real pod with the sidecar, Ready through it; a build streams through Service, kube-proxy and sidecar', async () => {
    const { template, instance } = seatgeekExamples();
    await cluster.kubectl(['apply', '-f', '-'], { input: template });
    // Opt the seed's template into the sidecar and the preStop drain (both off by default).
    await cluster.kubectl([
      'patch',
      'buildkittemplate',
      '-n',
      NAMESPACE,
      TEMPLATE,
      '--type=merge',
      '-p',
      JSON.stringify({ spec: { autoscaling: { enabled: true }, lifecycle: { preStopScript: true } } }),
    ]);
    await cluster.kubectl(['apply', '-f', '-'], { input: instance });

    const pod = await readyPod();
    expect(pod.spec.nodeName).toBe(REAL_NODE_NAME);
    expect(pod.spec.containers.map((c) => c.name)).toEqual(
      expect.arrayContaining(['buildkit', 'buildkit-fleet-sidecar']),
    );
    expect(pod.spec.containers.find((c) => c.name === 'buildkit-fleet-sidecar')!.image).toBe(SIDECAR_IMAGE);
    expect(pod.status.containerStatuses!.every((c) => c.ready)).toBe(true);

    const address = await endpoint();
    expect(address).toMatch(/^tcp:\/\/10\.(9[6-9]|1[01][0-9])\.[0-9]+\.[0-9]+:1234$/); // a ClusterIP
    expect(await healthCheck(address)).toEqual({ status: 'SERVING' });
    expect((await listWorkers(address)).record[0]!.ID).toBe('standin');

    const before = await sidecarStats(pod);
    const build = streamBuild(address, 'steps=4,quiet=1000');
    await build.firstMessage;
    const during = await sidecarStats(pod);
    expect(during['open']).toBeGreaterThanOrEqual(1);
    const { steps } = await build.done;
    expect(steps).toEqual(['step 1/4\n', 'step 2/4\n', 'step 3/4\n', 'step 4/4\n']);
    const after = await waitFor(
      'the sidecar to count the build connection as closed',
      async () => {
        const s = await sidecarStats(pod);
        return s['closed']! > before['closed']! ? s : undefined;
      },
      { timeoutMs: 10_000 },
    );
    expect(after['opened']! - before['opened']!).toBeGreaterThanOrEqual(1);
    expect(after['bytesIn']!).toBeGreaterThan(before['bytesIn']!);
    expect(after['bytesOut']! - before['bytesOut']!).toBeGreaterThan(4 * 'step 1/4\n'.length);
  }, 240_000);

  test('deleting the pod runs the preStop drain: it waits for the open build, then the pod goes', async () => {
    const pod = await readyPod();
    const address = await endpoint();
    const build = streamBuild(address, 'steps=6,quiet=1500');
    await build.firstMessage;
    const deleting = cluster.kubectl(['delete', 'pod', '-n', NAMESPACE, pod.metadata.name, '--wait=false']);
    await deleting;
    const { steps } = await build.done;
    const buildEnded = Date.now();
    expect(steps).toHaveLength(6);
    // still there when the build ended: the drain held it
    const stillThere = (await buildkitPods()).find((p) => p.metadata.uid === pod.metadata.uid);
    expect(stillThere?.metadata.deletionTimestamp).toBeDefined();
    await waitFor(
      'the deleted pod to go',
      async () => !(await buildkitPods()).some((p) => p.metadata.uid === pod.metadata.uid),
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    const gone = Date.now();
    expect(gone).toBeGreaterThanOrEqual(buildEnded);
    const log = (
      await cluster.kubectl([
        'get',
        'events',
        '-n',
        NAMESPACE,
        '--field-selector',
        `involvedObject.uid=${pod.metadata.uid}`,
      ])
    ).stdout;
    expect(log).toMatch(/Killing/);
  }, 240_000);

  describe('the egress guard', () => {
    const suffix = randomBytes(2).toString('hex');
    const ns = `bkf-outside-${suffix}`;
    const outside = '203.0.113.1'; // TEST-NET-3: documentation only, routed nowhere
    let server: ChildProcess;
    let accepted = 0;
    const port = 18080;

    beforeAll(async () => {
      // An "outside" of our own: a network namespace behind a veth pair, with a server in it.
      for (const args of [
        ['netns', 'add', ns],
        ['link', 'add', `bkfo-h${suffix}`, 'type', 'veth', 'peer', 'name', `bkfo-n${suffix}`],
        ['link', 'set', `bkfo-n${suffix}`, 'netns', ns],
        ['addr', 'add', '203.0.113.254/24', 'dev', `bkfo-h${suffix}`],
        ['link', 'set', `bkfo-h${suffix}`, 'up'],
        ['-n', ns, 'addr', 'add', `${outside}/24`, 'dev', `bkfo-n${suffix}`],
        ['-n', ns, 'link', 'set', `bkfo-n${suffix}`, 'up'],
        ['-n', ns, 'link', 'set', 'lo', 'up'],
      ]) {
        const r = run('ip', args);
        if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
      }
      server = spawn(
        'ip',
        [
          'netns',
          'exec',
          ns,
          process.execPath,
          '-e',
          `require('net').createServer((s) => { console.log('accepted'); s.end('outside\\n'); }).listen(${port}, '${outside}', () => console.log('listening'));`,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      await new Promise<void>((resolve) =>
        server.stdout!.on('data', (d: Buffer) => {
          const text = d.toString();
          accepted += text.split('accepted').length - 1;
          if (text.includes('listening')) resolve();
        }),
      );
    });

    afterAll(() => {
      server?.kill('SIGKILL');
      run('ip', ['netns', 'del', ns]);
      run('ip', ['link', 'del', `bkfo-h${suffix}`]);
    });

    const connectFromHost = (): Promise<string> =>
      new Promise((resolve) => {
        const s = net.connect(port, outside);
        s.setTimeout(5000, () => s.destroy(new Error('timeout')));
        let got = '';
        s.on('data', (d) => (got += d.toString()));
        s.on('end', () => resolve(got));
        s.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code ?? e.message}`));
      });

    test('the host reaches the outside; a guarded process, a pod and containerd cannot', async () => {
      expect(await connectFromHost()).toBe('outside\n');
      await waitFor('the server to count the host', async () => accepted === 1, { timeoutMs: 5000 });

      // A process in the guard's cgroup, as containerd, the kubelet and kube-proxy are.
      const guardDir = cluster.realNode!.guardCgroupDir;
      const probe = `const s=require('net').connect(${port},'${outside}');s.setTimeout(5000,()=>{console.log('timeout');process.exit()});s.on('connect',()=>{console.log('connected');process.exit()});s.on('error',(e)=>{console.log(e.code);process.exit()})`;
      const guarded = run('/bin/sh', [
        '-c',
        'echo $$ > "$0/cgroup.procs" && exec "$@"',
        guardDir,
        process.execPath,
        '-e',
        probe,
      ]);
      expect(guarded.stdout.trim()).toBe('ECONNREFUSED');

      // A pod: the buildkitd container has node (the stand-in's runtime).
      const pod = await readyPod();
      const fromPod = await cluster.kubectl(
        ['exec', '-n', NAMESPACE, pod.metadata.name, '-c', 'buildkit', '--', 'node', '-e', probe],
        { allowFail: true },
      );
      expect(fromPod.stdout.trim()).toMatch(/^(ECONNREFUSED|EHOSTUNREACH|ENETUNREACH)$/);

      // containerd: a pod whose image lives "outside" makes containerd try to pull it.
      await cluster.kubectl(['apply', '-f', '-'], {
        input: JSON.stringify({
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: 'pull-from-outside', namespace: NAMESPACE },
          spec: {
            nodeName: REAL_NODE_NAME,
            containers: [{ name: 'c', image: `${outside}:${port}/bkf/outside:1`, imagePullPolicy: 'Always' }],
          },
        }),
      });
      const message = await waitFor(
        'the pull to fail',
        async () => {
          const p = await kubectlJson<{
            status: { containerStatuses?: { state: { waiting?: { reason: string; message?: string } } }[] };
          }>(['get', 'pod', '-n', NAMESPACE, 'pull-from-outside']);
          const waiting = p.status.containerStatuses?.[0]?.state.waiting;
          return waiting && /ErrImagePull|ImagePullBackOff/.test(waiting.reason) && waiting.message
            ? waiting.message
            : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 500 },
      );
      expect(message).toMatch(/connection refused/);
      await cluster.kubectl(
        ['delete', 'pod', '-n', NAMESPACE, 'pull-from-outside', '--grace-period=0', '--force'],
        {
          allowFail: true,
        },
      );
      // Nothing but the host's own connection ever arrived.
      expect(accepted).toBe(1);
    }, 120_000);
  });

  test('stopping the cluster leaves no process, mount, chain, bridge, cgroup, sysctl or host entry behind', async () => {
    const state = readState(cluster.dir)!;
    const pods = await buildkitPods();
    expect(pods.length).toBeGreaterThan(0); // there is something to clean up
    await Promise.all(platform.map((p) => p.stop()));
    await cluster.stop();

    expect(state.processes.filter((p) => isRunning(p)).map((p) => p.name)).toEqual([]);
    expect(processesWith(['-address', journal.layout.containerdSocket])).toEqual([]);
    expect(mountsUnder(cluster.dir)).toEqual([]);
    expect(fs.existsSync(cluster.dir)).toBe(false);
    expect(ownedLeftovers(journal.iptablesBefore.v4, run('iptables-save', []).stdout)).toEqual([]);
    expect(ownedLeftovers(journal.iptablesBefore.v6, run('ip6tables-save', []).stdout)).toEqual([]);
    expect(linkExists(BRIDGE)).toBe(false);
    for (const address of HOST_ADDRESSES) {
      expect(run('ip', ['-o', 'addr', 'show', 'dev', 'lo']).stdout).not.toContain(`${address}/32`);
    }
    expect(fs.readFileSync('/etc/hosts', 'utf8')).not.toContain(journal.hostsLine!);
    for (const [key, value] of Object.entries(journal.sysctls))
      expect([key, readSysctl(key)]).toEqual([key, value]);
    expect(cgroupRoots().filter((r) => fs.existsSync(path.join(r, KUBEPODS_CGROUP)))).toEqual([]);
    expect(fs.existsSync(journal.guard!.dir)).toBe(false);
    expect(journal.createdDirs.filter((d) => fs.existsSync(d))).toEqual([]);
  }, 120_000);
});
