// Scale of the controller: time until 500 Buildkits all report Ready on a simulated cluster
// (5 hollow nodes), against the time for the same client to create 500 equivalent pods and
// Services directly and see them Ready, in the same run. Also the controller's peak RSS.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';

import { CONTROLLER_ENV, CONTROLLER_NODE_OPTIONS } from '../../controller/options.ts';
import { startCluster } from '../../hack/cluster.ts';
import { installCrds } from '../../hack/crds.ts';
import { freePort } from '../../hack/ports.ts';
import { renderPod, buildService } from '../../controller/pod-builder.ts';
import { featuresFromVersionInfo } from '../../kube/server-features.ts';
import { defaultTemplateSpec } from '../../api/defaults.ts';
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

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return NaN;
  }
}

/** CPU seconds by process kind (hollow nodes summed), to see where a phase's time went. */
function cpuByKind(
  cluster: { processes: readonly { name: string; pid: number }[]; nodeNames: readonly string[] },
  extra: Record<string, number> = {},
) {
  const out: Record<string, number> = {};
  for (const p of cluster.processes) {
    const kind = cluster.nodeNames.includes(p.name) ? 'hollow nodes' : p.name;
    out[kind] = (out[kind] ?? 0) + cpuSeconds(p.pid);
  }
  for (const [name, pid] of Object.entries(extra)) out[name] = cpuSeconds(pid);
  return out;
}

function minus(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, Number((v - (b[k] ?? 0)).toFixed(2))]));
}

/** The API server's write requests so far, by verb and resource (from its own /metrics). */
async function apiWrites(
  kubectl: (args: string[]) => Promise<{ stdout: string }>,
): Promise<Record<string, number>> {
  const text = (await kubectl(['get', '--raw', '/metrics'])).stdout;
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const verb = /verb="([A-Z]+)"/.exec(line)?.[1];
    if (!verb || !['POST', 'PATCH', 'PUT', 'DELETE'].includes(verb)) continue;
    const resource = /resource="([^"]*)"/.exec(line)?.[1] ?? '';
    const sub = /subresource="([^"]*)"/.exec(line)?.[1];
    const key = `${verb} ${resource}${sub ? `/${sub}` : ''}`;
    out[key] = (out[key] ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return out;
}

/** The controller's own view of its memory at the end (prom-client's default metrics), in MB. */
async function controllerMemory(port: number): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const name of [
    'process_resident_memory_bytes',
    'nodejs_heap_size_used_bytes',
    'nodejs_heap_size_total_bytes',
    'nodejs_external_memory_bytes',
  ]) {
    const line = text.split('\n').find((l) => l.startsWith(`buildkit_fleet_controller_${name} `));
    if (line) out[name.replace(/_bytes$/, '')] = Number((Number(line.split(' ')[1]) / 2 ** 20).toFixed(1));
  }
  return out;
}

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
    await installCrds(async (args) => (await cluster.kubectl(args)).stdout);
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
    const cpu0 = cpuByKind(cluster);
    const writes0 = await apiWrites((args) => cluster.kubectl(args));
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
    const directCpu = minus(cpuByKind(cluster), cpu0);
    const directWrites = minus(await apiWrites((args) => cluster.kubectl(args)), writes0);
    await cluster.kubectl(['delete', 'namespace', 'bench-direct', '--wait=false']);
    // all of it gone (pods, Services, Endpoints), so the cleanup does not load the next run
    await cluster.kubectl(['wait', '--for=delete', 'namespace/bench-direct', '--timeout=600s'], {
      timeoutMs: 610_000,
    });

    // The controller, as its own process so its memory can be read.
    const metricsPort = await freePort();
    const controller = spawn(
      process.execPath,
      [
        // the documented process settings; override (e.g. to add --cpu-prof --cpu-prof-dir=/tmp/prof)
        // with BENCH_CONTROLLER_NODE_FLAGS
        ...(process.env['BENCH_CONTROLLER_NODE_FLAGS'] ?? CONTROLLER_NODE_OPTIONS).split(' ').filter(Boolean),
        // the compiled CLI, as the image runs it (type stripping the .ts sources costs memory)
        `${root}dist/cli/main.js`,
        'controller',
        '--kubeconfig',
        cluster.kubeconfigPath,
        '--metrics-listen',
        `127.0.0.1:${metricsPort}`,
        '--log-level',
        'warn',
        '--leader-election-namespace',
        'bench-bk',
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...CONTROLLER_ENV } },
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
      const cpu1 = cpuByKind(cluster, { controller: controller.pid! });
      const writes1 = await apiWrites((args) => cluster.kubectl(args));
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
      const memory = await controllerMemory(metricsPort);
      const oursCpu = minus(cpuByKind(cluster, { controller: controller.pid! }), cpu1);
      const oursWrites = minus(await apiWrites((args) => cluster.kubectl(args)), writes1);
      const summary = {
        config: {
          buildkits: COUNT,
          hollowNodes: NODES,
          parallelCreates: PARALLEL,
          server: 'kube-apiserver 1.20.2 (local)',
          controllerNodeFlags: process.env['BENCH_CONTROLLER_NODE_FLAGS'] ?? CONTROLLER_NODE_OPTIONS,
        },
        directSeconds: direct,
        controllerSeconds: ours,
        ratio: ours / direct,
        controllerPeakRssMb: rss,
        controllerMemoryAtEndMb: memory,
        cpuSeconds: { direct: directCpu, controller: oursCpu },
        apiWrites: { direct: directWrites, controller: oursWrites },
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
      console.log('\nCPU seconds by process during each run, and API writes (apiserver_request_total):');
      console.log(JSON.stringify({ cpu: summary.cpuSeconds, writes: summary.apiWrites }, null, 1));
      console.log(`results: ${writeResult('controller', summary)}`);
    } finally {
      // let it exit by itself (a --cpu-prof profile is written on exit)
      const exited = new Promise((resolve) => controller.once('exit', resolve));
      controller.kill('SIGTERM');
      await Promise.race([exited, sleep(15_000)]);
    }
  } finally {
    await cluster.stop();
  }
}
