// Wake from zero on the real node, split into phases, against a baseline measured in the same
// run: the same Buildkit's pod restarted while it is awake (delete the pod; the controller makes a
// new one; the client retries until it is answered), which is what a client without scale to
// zero waits for after a pod is lost. Wakes and restarts alternate.
//
// Phases of a wake, each from the client's connect to the endpoint at zero (t0):
//   wake requested   the Buildkit's wakeStartTime (the leader saw the activator's request)
//   pod created      the first watch event of the new pod
//   buildkitd ready  the stand-in's "listening on" line (container log timestamp)
//   pod Ready        the Ready condition (watch)
//   first byte       the held gRPC health call answered through the activator
// Wake overhead: first byte minus buildkitd ready. Idle deadline to scale-down: from
// idleSince + the idle timeout to the scale-down's status record (which comes after the fence).
// CPU: the controller process's (activator and scaler) user+system time per wake, from /proc.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { KubeConfig, type V1Pod } from '@kubernetes/client-node';

import { startCluster } from '../../hack/cluster.ts';
import { NODE_IP } from '../../hack/real-node/plan.ts';
import { realNodeUnavailable } from '../../hack/real-node/start.ts';
import { healthCheck } from '../support/buildkit-client.ts';
import { startPlatform, type PlatformProcess } from '../support/node-tier.ts';
import { waitFor } from '../support/wait.ts';
import { median, percentile, table, writeResult } from './lib.ts';
import { PodTimes } from './pod-times.ts';

const WAKES = Number(process.env['BENCH_WAKES'] ?? 10);
const NAMESPACE = 'bench-wake';
const IDLE_SECONDS = 5;
const root = fileURLToPath(new URL('../../', import.meta.url));
const PHASES = ['wake requested', 'pod created', 'buildkitd ready', 'pod Ready', 'first byte'] as const;
type Phase = (typeof PHASES)[number];

interface BuildkitView {
  status?: {
    phase?: string;
    endpoint?: string;
    autoscaling?: { idleSince?: string; scaledToZeroTime?: string; wakeStartTime?: string };
  };
}

const TICKS = 100; // USER_HZ on Linux
function processCpuMs(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS;
}

export async function run(): Promise<void> {
  const why = realNodeUnavailable();
  if (why) {
    console.log(`wake: NOT RUN: the real-node tier cannot run here: ${why}`);
    return;
  }
  execFileSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' });
  const cluster = await startCluster({ nodes: 0, realNode: true, log: () => {} });
  const platform: PlatformProcess[] = [];
  let stopWatch: (() => void) | undefined;
  try {
    platform.push(
      ...(await startPlatform(
        cluster,
        'bkf-bench-wake',
        ['--activator-address', NODE_IP, '--scale-interval', '0.5', '--fence-settle', '1'],
        ['--min-idle-timeout', '5s'],
      )),
    );
    const controllerPid = platform[1]!.child.pid!;
    await cluster.kubectl(['create', 'namespace', NAMESPACE]);
    const manifests = (name: string, autoscale: boolean) => `
apiVersion: buildkit.seatgeek.io/v1alpha1
kind: BuildkitTemplate
metadata: { name: ${name}, namespace: ${NAMESPACE} }
spec:
  port: 1234
  autoscaling: { enabled: ${autoscale}, idleTimeout: ${IDLE_SECONDS}s }
---
apiVersion: buildkit.seatgeek.io/v1alpha1
kind: Buildkit
metadata: { name: ${name}, namespace: ${NAMESPACE} }
spec: { template: ${name} }
`;
    await cluster.kubectl(['apply', '-f', '-'], {
      input: `${manifests('woken', true)}---${manifests('restarted', false)}`,
    });

    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfigPath);
    const times = new PodTimes(NAMESPACE);
    stopWatch = await times.watch(kc);

    const get = async (name: string) =>
      JSON.parse(
        (await cluster.kubectl(['get', 'buildkit', '-n', NAMESPACE, name, '-o', 'json'])).stdout,
      ) as BuildkitView;
    const phase = (name: string, want: string) =>
      waitFor('phase', async () => ((await get(name)).status?.phase === want ? get(name) : undefined), {
        timeoutMs: 120_000,
        intervalMs: 50,
      });
    const podsOf = async (name: string) =>
      (
        JSON.parse(
          (
            await cluster.kubectl([
              'get',
              'pods',
              '-n',
              NAMESPACE,
              '-l',
              `buildkit.seatgeek.io/instance=${name}`,
              '-o',
              'json',
            ])
          ).stdout,
        ) as { items: V1Pod[] }
      ).items;
    const listeningAt = async (pod: string) => {
      const r = await cluster.kubectl(['logs', '-n', NAMESPACE, pod, '-c', 'buildkit', '--timestamps'], {
        allowFail: true,
      });
      const line = r.stdout.split('\n').find((l) => l.includes('listening on tcp'));
      return line ? Date.parse(line.slice(0, line.indexOf(' '))) : NaN;
    };

    const restarted = (await phase('restarted', 'Running')).status!.endpoint!;
    const wakes: { ms: Record<Phase, number>; overheadMs: number; scaleDownMs: number; cpuMs: number }[] = [];
    const restarts: number[] = [];
    for (let i = 0; i < WAKES; i++) {
      // a wake
      const zero = await phase('woken', 'ScaledToZero');
      const a = zero.status!.autoscaling!;
      const scaleDownMs = Date.parse(a.scaledToZeroTime!) - (Date.parse(a.idleSince!) + IDLE_SECONDS * 1000);
      await waitFor('the pod to be gone', async () => (await podsOf('woken')).length === 0, {
        timeoutMs: 60_000,
      });
      const cpu0 = processCpuMs(controllerPid);
      const t0 = Date.now();
      await healthCheck(zero.status!.endpoint!, 120_000);
      const first = Date.now();
      const cpuMs = processCpuMs(controllerPid) - cpu0;
      const woke = await get('woken');
      const [pod] = (await podsOf('woken')).filter((p) => !p.metadata?.deletionTimestamp);
      const name = pod!.metadata!.name!;
      const ready = await waitFor('the Ready time', async () => times.seen.get(name)?.ready, {
        timeoutMs: 30_000,
      });
      const listening = await listeningAt(name);
      wakes.push({
        ms: {
          'wake requested': Date.parse(woke.status!.autoscaling!.wakeStartTime!) - t0,
          'pod created': times.seen.get(name)!.created! - t0,
          'buildkitd ready': listening - t0,
          'pod Ready': ready - t0,
          'first byte': first - t0,
        },
        overheadMs: first - listening,
        scaleDownMs,
        cpuMs,
      });
      // a restart of the other, awake, instance
      const [old] = await podsOf('restarted');
      const r0 = Date.now();
      await cluster.kubectl([
        'delete',
        'pod',
        '-n',
        NAMESPACE,
        old!.metadata!.name!,
        '--wait=false',
        '--grace-period=1',
      ]);
      await waitFor(
        'the restarted instance to answer from a new pod',
        async () => {
          const pods = await podsOf('restarted');
          if (pods.some((p) => p.metadata?.uid === old!.metadata!.uid)) return false;
          return healthCheck(restarted, 1000).then(
            () => true,
            () => false,
          );
        },
        { timeoutMs: 120_000, intervalMs: 20 },
      );
      restarts.push(Date.now() - r0);
    }

    const sorted = (values: number[]) => [...values].sort((x, y) => x - y);
    const rows = PHASES.map((p) => {
      const v = sorted(wakes.map((w) => w.ms[p]));
      return [p, Math.round(median(v)), Math.round(percentile(v, 90))];
    });
    const firstBytes = sorted(wakes.map((w) => w.ms['first byte']));
    const restartSorted = sorted(restarts);
    const summary = {
      wakes: WAKES,
      phasesMs: Object.fromEntries(rows.map(([p, p50, p90]) => [p, { p50, p90 }])),
      firstByteMs: { p50: median(firstBytes), p90: percentile(firstBytes, 90) },
      restartBaselineMs: { p50: median(restartSorted), p90: percentile(restartSorted, 90) },
      ratioToRestart: median(firstBytes) / median(restartSorted),
      wakeOverheadMs: {
        p50: median(sorted(wakes.map((w) => w.overheadMs))),
        p90: percentile(sorted(wakes.map((w) => w.overheadMs)), 90),
      },
      idleDeadlineToScaleDownMs: {
        p50: median(sorted(wakes.map((w) => w.scaleDownMs))),
        max: Math.max(...wakes.map((w) => w.scaleDownMs)),
      },
      controllerCpuMsPerWake: median(sorted(wakes.map((w) => w.cpuMs))),
    };
    console.log(`\nwake from zero on the real node, ${WAKES} wakes (ms from the client's connect)`);
    console.log(table(['phase', 'p50', 'p90'], rows));
    console.log(
      table(
        ['measure', 'value'],
        [
          [
            'first byte p50 / restart baseline p50',
            `${Math.round(summary.firstByteMs.p50)} / ${Math.round(summary.restartBaselineMs.p50)} = ${summary.ratioToRestart.toFixed(2)}`,
          ],
          [
            'wake overhead (first byte - buildkitd ready) p50 / p90',
            `${Math.round(summary.wakeOverheadMs.p50)} / ${Math.round(summary.wakeOverheadMs.p90)}`,
          ],
          [
            'idle deadline -> scale-down recorded p50 / max',
            `${Math.round(summary.idleDeadlineToScaleDownMs.p50)} / ${Math.round(summary.idleDeadlineToScaleDownMs.max)}`,
          ],
          ['controller CPU per wake (ms)', Math.round(summary.controllerCpuMsPerWake)],
        ],
      ),
    );
    console.log(`result: ${writeResult('wake', summary)}`);
  } finally {
    stopWatch?.();
    await Promise.all(platform.map((p) => p.stop()));
    await cluster.stop();
  }
}
