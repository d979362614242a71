// Cold start of a Buildkit pod on the real node (hack/real-node/), split into phases, against a
// baseline measured in the same run: the same buildkitd stand-in as a plain pod without our
// sidecar, probed the way seatgeek/buildkit-operator probes buildkitd (a startup probe every 2 s;
// 1.20 has no gRPC probe, so the nearest, tcpSocket, on buildkitd's port). Starts alternate between
// the two kinds so machine noise falls on both alike.
//
// Phases, each from the pod's creation (the first time a watch sees it):
//   scheduled           nodeName set (watch)
//   sandbox ready       the pause container's task started (containerd event)
//   containers started  the last app container's task started (containerd event)
//   sidecar listening   the sidecar's "sidecar serving" log line (container log timestamp); ours only
//   buildkitd ready     the stand-in's "listening on" log line (container log timestamp)
//   pod Ready           the Ready condition (watch)
//   first byte          a gRPC health answer through the Service, kube-proxy (and our sidecar)
// CPU: the pod's cgroup CPU time (cpuacct) from creation to the first byte.
import { spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, KubeConfig, type V1Pod } from '@kubernetes/client-node';

import { startCluster, type LocalCluster } from '../../hack/cluster.ts';
import { cgroupRoots } from '../../hack/real-node/host.ts';
import { REAL_NODE_NAME } from '../../hack/real-node/plan.ts';
import { realNodeUnavailable } from '../../hack/real-node/start.ts';
import { healthCheck } from '../support/buildkit-client.ts';
import { startPlatform, type PlatformProcess } from '../support/node-tier.ts';
import { waitFor } from '../support/wait.ts';
import { median, percentile, sleep, table, writeResult } from './lib.ts';
import { PodTimes } from './pod-times.ts';

const STARTS = Number(process.env['BENCH_COLD_STARTS'] ?? 10);
const NAMESPACE = 'bench-cold';
const STANDIN_IMAGE = 'docker.io/buildkit-fleet/buildkitd-standin:local';
const root = fileURLToPath(new URL('../../', import.meta.url));
const PHASES = [
  'scheduled',
  'sandbox ready',
  'containers started',
  'sidecar listening',
  'buildkitd ready',
  'pod Ready',
  'first byte',
] as const;
type Phase = (typeof PHASES)[number];

interface Start {
  kind: 'ours' | 'baseline';
  ms: Partial<Record<Phase, number>>;
  cpuMs: number;
}

/** Task-start times by pod and container, from `ctr events` (sandbox: container name ''). */
class ContainerdEvents {
  readonly starts = new Map<string, number>();
  private readonly names = new Map<string, string>();
  private readonly child: ChildProcess;
  private readonly ctr: (args: string[]) => string;
  constructor(ctr: (args: string[]) => string, socket: string) {
    this.ctr = ctr;
    this.child = spawn('ctr', ['--address', socket, 'events'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let rest = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      const lines = (rest + d.toString()).split('\n');
      rest = lines.pop()!;
      for (const line of lines) this.onLine(line);
    });
  }
  private onLine(line: string): void {
    // 2026-12-01 21:00:00.123456789 +0000 UTC k8s.io /tasks/start {"container_id":"…","pid":1}
    const m = /^(\S+ \S+) \+0000 UTC k8s\.io \/tasks\/start (\{.*\})$/.exec(line);
    if (!m) return;
    const at = Date.parse(`${m[1]!.replace(' ', 'T').slice(0, 23)}Z`);
    const id = (JSON.parse(m[2]!) as { container_id: string }).container_id;
    this.starts.set(this.name(id), at);
  }
  private name(id: string): string {
    let name = this.names.get(id);
    if (!name) {
      const info = JSON.parse(this.ctr(['containers', 'info', id])) as { Labels: Record<string, string> };
      const l = info.Labels;
      name = `${l['io.kubernetes.pod.namespace']}/${l['io.kubernetes.pod.name']}/${l['io.kubernetes.container.name'] ?? ''}`;
      this.names.set(id, name);
    }
    return name;
  }
  stop(): void {
    this.child.kill();
  }
}

function logLineTime(
  cluster: LocalCluster,
  pod: string,
  container: string,
  pattern: RegExp,
): Promise<number | undefined> {
  return cluster
    .kubectl(['logs', '-n', NAMESPACE, pod, '-c', container, '--timestamps'], { allowFail: true })
    .then((r) => {
      const line = r.stdout.split('\n').find((l) => pattern.test(l));
      return line ? Date.parse(line.slice(0, line.indexOf(' '))) : undefined;
    });
}

/** CPU time of a pod's cgroup so far, in ms (cpuacct, cgroup v1). */
function podCpuMs(uid: string): number {
  const cpuacct = cgroupRoots().find((r) => fs.existsSync(path.join(r, 'cpuacct.usage')));
  if (!cpuacct) return NaN;
  for (const qos of ['', 'burstable', 'besteffort']) {
    const file = path.join(cpuacct, 'kubepods', qos, `pod${uid}`, 'cpuacct.usage');
    if (fs.existsSync(file)) return Number(fs.readFileSync(file, 'utf8')) / 1e6;
  }
  return NaN;
}

async function firstByte(address: string, deadline: number): Promise<number> {
  for (;;) {
    try {
      await healthCheck(address, 1000);
      return Date.now();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(20);
    }
  }
}

function baselinePod(name: string): object {
  const probe = { tcpSocket: { port: 1234 } };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NAMESPACE, labels: { app: name } },
    spec: {
      nodeName: undefined,
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'buildkit',
          image: STANDIN_IMAGE,
          imagePullPolicy: 'IfNotPresent',
          args: ['--addr', 'unix:///run/buildkit/buildkitd.sock', '--addr', 'tcp://0.0.0.0:1234'],
          ports: [{ containerPort: 1234 }],
          startupProbe: { ...probe, periodSeconds: 2, failureThreshold: 15 },
          readinessProbe: { ...probe, periodSeconds: 15, timeoutSeconds: 3, failureThreshold: 2 },
        },
      ],
    },
  };
}

export async function run(): Promise<void> {
  const why = realNodeUnavailable();
  if (why) {
    console.log(`cold-start: NOT RUN: the real-node tier cannot run here: ${why}`);
    return;
  }
  execFileSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' });
  const cluster = await startCluster({ nodes: 0, realNode: true, log: () => {} });
  const platform: PlatformProcess[] = [];
  let events: ContainerdEvents | undefined;
  let stopWatch: (() => void) | undefined;
  try {
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfigPath);
    const core = kc.makeApiClient(CoreV1Api);
    platform.push(...(await startPlatform(cluster, 'bkf-bench')));
    await cluster.kubectl(['create', 'namespace', NAMESPACE]);
    // pods can be created once the namespace's default service account has its token
    await waitFor(
      'the default service account token',
      async () =>
        (await cluster.kubectl(['get', 'secrets', '-n', NAMESPACE, '-o', 'name'])).stdout.includes(
          'default-token',
        ),
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    // The stand-in as the template's image; autoscaling opts the pods into the sidecar.
    await cluster.kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'buildkit.seatgeek.io/v1alpha1',
        kind: 'BuildkitTemplate',
        metadata: { name: 'bench', namespace: NAMESPACE },
        spec: {
          image: STANDIN_IMAGE,
          port: 1234,
          autoscaling: { enabled: true },
          lifecycle: { terminationGracePeriodSeconds: 1 },
        },
      }),
    });
    diagnose = async () => {
      const objects = await cluster.kubectl(['get', 'bk,pods,svc', '-n', NAMESPACE, '-o', 'wide'], {
        allowFail: true,
      });
      const logs = platform.map(
        (p) => `--- ${p.logPath}\n${fs.readFileSync(p.logPath, 'utf8').split('\n').slice(-15).join('\n')}`,
      );
      return [objects.stdout, objects.stderr, ...logs].join('\n');
    };
    const times = new PodTimes(NAMESPACE);
    stopWatch = await times.watch(kc);
    events = new ContainerdEvents(cluster.realNode!.ctr, cluster.realNode!.layout.containerdSocket);

    const starts: Start[] = [];
    for (let i = 0; i < STARTS * 2; i++) {
      const kind = i % 2 === 0 ? 'ours' : 'baseline';
      const name = `${kind === 'ours' ? 'bk' : 'plain'}-${i}`;
      let podName: string;
      let address: string;
      if (kind === 'ours') {
        await cluster.kubectl(['apply', '-f', '-'], {
          input: JSON.stringify({
            apiVersion: 'buildkit.seatgeek.io/v1alpha1',
            kind: 'Buildkit',
            metadata: { name, namespace: NAMESPACE },
            spec: { template: 'bench' },
          }),
        });
        podName = await waitValue(`the pod of Buildkit ${name}`, () =>
          [...times.seen.keys()].find((p) => p.startsWith(`${name}-`) || p === name),
        );
        const svc = await waitValue(
          `the Service of Buildkit ${name}`,
          async () =>
            (await core.readNamespacedService({ name, namespace: NAMESPACE }).catch(() => undefined))?.spec
              ?.clusterIP,
        );
        address = `tcp://${svc}:1234`;
      } else {
        await core.createNamespacedService({
          namespace: NAMESPACE,
          body: {
            metadata: { name },
            spec: { selector: { app: name }, ports: [{ port: 1234, targetPort: 1234 }] },
          },
        });
        const svc = (await core.readNamespacedService({ name, namespace: NAMESPACE })).spec!.clusterIP!;
        address = `tcp://${svc}:1234`;
        await core.createNamespacedPod({ namespace: NAMESPACE, body: baselinePod(name) as V1Pod });
        podName = name;
      }
      const byte = await firstByte(address, Date.now() + 60_000);
      const t = await waitValue(`pod ${podName} Ready`, () => {
        const s = times.seen.get(podName);
        return s?.ready ? s : undefined;
      });
      const cpuMs = podCpuMs(t.uid!);
      const key = (c: string) => events!.starts.get(`${NAMESPACE}/${podName}/${c}`);
      const appContainers = kind === 'ours' ? ['buildkit', 'buildkit-fleet-sidecar'] : ['buildkit'];
      const started = Math.max(...appContainers.map((c) => key(c) ?? NaN));
      const created = t.created!;
      const rel = (at: number | undefined) =>
        at === undefined || Number.isNaN(at) ? undefined : at - created;
      starts.push({
        kind,
        cpuMs,
        ms: {
          scheduled: rel(t.scheduled),
          'sandbox ready': rel(key('')),
          'containers started': rel(started),
          'sidecar listening':
            kind === 'ours'
              ? rel(await logLineTime(cluster, podName, 'buildkit-fleet-sidecar', /sidecar serving/))
              : undefined,
          'buildkitd ready': rel(await logLineTime(cluster, podName, 'buildkit', /listening on tcp/)),
          'pod Ready': rel(t.ready),
          'first byte': rel(byte),
        },
      });
      process.stderr.write(`cold-start ${i + 1}/${STARTS * 2} ${kind}: first byte ${byte - created} ms\n`);
      // Gone before the next start, so starts do not overlap.
      if (kind === 'ours')
        await cluster.kubectl(['delete', 'buildkit', '-n', NAMESPACE, name, '--wait=false']);
      else {
        await cluster.kubectl(['delete', 'pod', '-n', NAMESPACE, name, '--grace-period=1', '--wait=false']);
        await cluster.kubectl(['delete', 'service', '-n', NAMESPACE, name, '--wait=false']);
      }
      await waitValue(`pod ${podName} gone`, async () =>
        (await core.readNamespacedPod({ name: podName, namespace: NAMESPACE }).catch(() => undefined))
          ? undefined
          : true,
      );
    }

    const summary = (kind: Start['kind']) => {
      const mine = starts.filter((s) => s.kind === kind);
      const stat = (values: number[]) => {
        const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
        return { median: median(sorted), p90: percentile(sorted, 90) };
      };
      return {
        phases: Object.fromEntries(
          PHASES.map((p) => [p, stat(mine.map((s) => s.ms[p] ?? NaN))]).filter(
            ([, v]) => !Number.isNaN((v as { median: number }).median),
          ),
        ) as Record<string, { median: number; p90: number }>,
        cpuMs: stat(mine.map((s) => s.cpuMs)),
      };
    };
    const ours = summary('ours');
    const baseline = summary('baseline');
    const rows = PHASES.map((p) => {
      const o = ours.phases[p];
      const b = baseline.phases[p];
      return [
        p,
        o?.median ?? '-',
        o?.p90 ?? '-',
        b?.median ?? '-',
        b?.p90 ?? '-',
        o && b ? (o.median / b.median).toFixed(2) : '-',
      ];
    });
    rows.push([
      'pod CPU ms',
      ours.cpuMs.median,
      ours.cpuMs.p90,
      baseline.cpuMs.median,
      baseline.cpuMs.p90,
      (ours.cpuMs.median / baseline.cpuMs.median).toFixed(2),
    ]);
    console.log(`\ncold start on ${REAL_NODE_NAME}, ${STARTS} starts each, ms from pod creation`);
    console.log(
      table(['phase', 'ours median', 'ours p90', 'baseline median', 'baseline p90', 'ours/baseline'], rows),
    );
    const file = writeResult('cold-start', { starts: STARTS, ours, baseline, raw: starts });
    console.log(`written to ${file}`);
  } finally {
    events?.stop();
    stopWatch?.();
    await Promise.all(platform.map((p) => p.stop()));
    await cluster.stop();
  }
}

let diagnose: () => Promise<string> = async () => '';

/** The harness's waitFor, polling every 20 ms, with the cluster's state in the timeout's message. */
function waitValue<T>(what: string, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  return waitFor(what, probe, { timeoutMs: 90_000, intervalMs: 20 }).catch(async (e: unknown) => {
    throw new Error(`cold-start: ${(e as Error).message}\n${await diagnose()}`);
  });
}
