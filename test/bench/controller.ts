// Scale of the controller: time until 500 Buildkits all report Ready on a simulated cluster
// (5 hollow nodes), against the time for the same client to create 500 equivalent pods and
// Services directly and see them Ready, in the same run. Also the controller's peak RSS.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';

import { startCluster } from '../cluster/cluster.ts';
import { renderPod, buildService } from '../../controller/pod-builder.ts';
import { featuresFromVersionInfo } from '../../controller/server-features.ts';
import { defaultTemplateSpec } from '../../webhook/template-defaults.ts';
import { sleep, table, writeResult } from './lib.ts';

const COUNT = Number(process.env['BENCH_BUILDKITS'] ?? 500);
const NODES = Math.max(5, Math.ceil(COUNT / 100));
const PARALLEL = 20; // creates in flight, the same for both runs
const root = fileURLToPath(new URL('../../', import.meta.url));

async function inParallel<T>(items: T[], fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: PARALLEL }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

async function waitFor(
  what: string,
  done: () => Promise<number>,
  target: number,
  timeoutMs = 900_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: number;
  while ((last = await done()) < target) {
    if (Date.now() > deadline) throw new Error(`${what}: only ${last}/${target} after ${timeoutMs / 1000}s`);
    await sleep(500);
  }
}

const isReady = (p: V1Pod) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');

function peakRssMb(pid: number): number {
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return hwm ? Number(hwm[1]) / 1024 : NaN;
}

export async function run(): Promise<void> {
  execFileSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' });
  const cluster = await startCluster({ nodes: NODES, log: () => {} });
  try {
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfigPath);
    const core = kc.makeApiClient(CoreV1Api);
    const custom = kc.makeApiClient(CustomObjectsApi);
    await cluster.kubectl(['apply', '-f', `${root}api/crds/`]);
    await cluster.kubectl(['wait', '--for=condition=Established', 'crd', '--all', '--timeout=60s']);
    const version = JSON.parse((await cluster.kubectl(['version', '-o', 'json'])).stdout) as {
      serverVersion?: { gitVersion?: string };
    };
    const features = featuresFromVersionInfo(version.serverVersion);
    const namespaces = ['bench-direct', 'bench-bk'];
    for (const ns of namespaces) await cluster.kubectl(['create', 'namespace', ns]);
    // pods can be created once each namespace's default service account has its token
    await waitFor(
      'service account tokens',
      async () => {
        const r = await cluster.kubectl([
          'get',
          'secrets',
          '-A',
          '-o',
          'jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\\n"}{end}',
        ]);
        return namespaces.filter((ns) =>
          r.stdout.split('\n').some((l) => l.startsWith(`${ns}/default-token`)),
        ).length;
      },
      namespaces.length,
    );
    const spec = defaultTemplateSpec({ image: 'moby/buildkit:v0.13.1' });
    const names = Array.from({ length: COUNT }, (_, i) => `b${i}`);

    // Baseline: the same pods and Services the controller would make, created directly.
    const template = {
      metadata: { name: 'bench', namespace: 'bench-direct', uid: '00000000-0000-4000-8000-000000000000' },
      spec,
    };
    const t0 = Date.now();
    await inParallel(names, async (name) => {
      const bk = {
        metadata: { name, namespace: 'bench-direct', uid: '00000000-0000-4000-8000-000000000001' },
        spec: { template: 'bench' },
      };
      const pod = renderPod(template, bk, features).pod;
      delete pod.metadata!.ownerReferences; // no owner object exists in the baseline
      const service = buildService(template, bk);
      delete service.metadata!.ownerReferences;
      await core.createNamespacedService({ namespace: 'bench-direct', body: service });
      await core.createNamespacedPod({ namespace: 'bench-direct', body: pod });
    });
    await waitFor(
      'direct pods Ready',
      async () => (await core.listNamespacedPod({ namespace: 'bench-direct' })).items.filter(isReady).length,
      COUNT,
    );
    const direct = (Date.now() - t0) / 1000;
    await cluster.kubectl(['delete', 'namespace', 'bench-direct', '--wait=false']);
    await waitFor(
      'direct pods gone',
      async () => COUNT - (await core.listNamespacedPod({ namespace: 'bench-direct' })).items.length,
      COUNT,
    );

    // The controller, as its own process so its memory can be read.
    const controller = spawn(
      process.execPath,
      [
        // the compiled CLI, as the image runs it (type stripping the .ts sources costs memory)
        `${root}dist/cli/main.js`,
        'controller',
        '--kubeconfig',
        cluster.kubeconfigPath,
        '--metrics-listen',
        '127.0.0.1:0',
        '--log-level',
        'warn',
        '--leader-election-namespace',
        'bench-bk',
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    try {
      await custom.createNamespacedCustomObject({
        group: 'buildkit.seatgeek.io',
        version: 'v1alpha1',
        namespace: 'bench-bk',
        plural: 'buildkittemplates',
        body: {
          apiVersion: 'buildkit.seatgeek.io/v1alpha1',
          kind: 'BuildkitTemplate',
          metadata: { name: 'bench' },
          spec,
        },
      });
      const t1 = Date.now();
      await inParallel(names, (name) =>
        custom.createNamespacedCustomObject({
          group: 'buildkit.seatgeek.io',
          version: 'v1alpha1',
          namespace: 'bench-bk',
          plural: 'buildkits',
          body: {
            apiVersion: 'buildkit.seatgeek.io/v1alpha1',
            kind: 'Buildkit',
            metadata: { name },
            spec: { template: 'bench' },
          },
        }),
      );
      await waitFor(
        'Buildkits Ready',
        async () => {
          const list = (await custom.listNamespacedCustomObject({
            group: 'buildkit.seatgeek.io',
            version: 'v1alpha1',
            namespace: 'bench-bk',
            plural: 'buildkits',
          })) as { items: { status?: { phase?: string; endpoint?: string } }[] };
          return list.items.filter((b) => b.status?.phase === 'Running' && b.status.endpoint).length;
        },
        COUNT,
      );
      const ours = (Date.now() - t1) / 1000;
      const rss = peakRssMb(controller.pid!);
      const summary = {
        config: {
          buildkits: COUNT,
          hollowNodes: NODES,
          parallelCreates: PARALLEL,
          server: 'kube-apiserver 1.20.2 (local)',
        },
        directSeconds: direct,
        controllerSeconds: ours,
        ratio: ours / direct,
        controllerPeakRssMb: rss,
        targets: { ratioBelow: 1.5, peakRssMbBelow: 150 },
      };
      console.log(
        `\ncontroller: ${COUNT} Buildkits to Ready vs ${COUNT} pods + Services created directly (${NODES} hollow nodes)`,
      );
      console.log(
        table(
          ['run', 'seconds to all Ready', 'peak RSS MB'],
          [
            ['pods + Services directly', direct, ''],
            ['Buildkits through the controller', ours, rss],
            ['ratio controller/direct', summary.ratio, ''],
          ],
        ),
      );
      console.log(`results: ${writeResult('controller', summary)}`);
    } finally {
      controller.kill('SIGTERM');
    }
  } finally {
    await cluster.stop();
  }
}
