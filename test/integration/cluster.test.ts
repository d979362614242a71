// The local control plane itself: the shared cluster runs real workloads on its hollow node,
// and the harness survives and reports the ways a start or a run can go wrong.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { CoreV1Api } from '@kubernetes/client-node';
import { killClusterProcess, startCluster, type LocalCluster } from '../../hack/cluster.ts';
import { isRunning } from '../../hack/proc.ts';
import { readState, type ClusterState } from '../../hack/state.ts';
import { testCluster } from '../../hack/testenv.ts';

const HOLD = fileURLToPath(new URL('../../hack/hold.ts', import.meta.url));

// Pids of every live process whose command line mentions `text` (all cluster processes name
// their cluster dir in some flag).
function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(text) && isRunning({ pid: Number(entry) })) pids.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return pids.filter((p) => p !== process.pid);
}

async function until(what: string, ok: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

// Starts a cluster owned by a separate process (hold.ts), which the test can then kill.
async function clusterOwnedByChild(): Promise<{ owner: number; state: ClusterState }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bkf-owner-test-'));
  fs.rmSync(dir, { recursive: true }); // startCluster wants to create it
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', HOLD, dir, '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const lines = readline.createInterface({ input: child.stdout });
  const first = await Promise.race([
    new Promise<string>((resolve) => lines.once('line', resolve)),
    new Promise<string>((_, reject) =>
      child.once('exit', () => reject(new Error(`hold.ts exited:\n${stderr}`))),
    ),
  ]);
  lines.close();
  child.stdout.destroy();
  child.stderr.destroy();
  child.unref();
  const info = JSON.parse(first) as { dir: string };
  const state = readState(info.dir);
  if (!state) throw new Error(`no state in ${info.dir}`);
  return { owner: child.pid!, state };
}

function alive(state: ClusterState): string[] {
  return [...state.processes, ...(state.watchdog ? [state.watchdog] : [])]
    .filter(isRunning)
    .map((p) => p.name);
}

describe('the shared test cluster', () => {
  const cluster = testCluster();

  test('kubectl through the harness reaches a v1.20 apiserver with a Ready hollow node', async () => {
    const version = JSON.parse((await cluster.kubectl(['version', '-o', 'json'])).stdout) as {
      serverVersion: { gitVersion: string };
    };
    expect(version.serverVersion.gitVersion).toMatch(/^v1\.20\./);
    const ready = await cluster.kubectl([
      'get',
      'nodes',
      '-o',
      'jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
    ]);
    expect(ready.stdout.trim().split('\n')).toContain('hollow-node-0=True');
    const failed = await cluster.kubectl(['get', 'no-such-kind'], { allowFail: true });
    expect(failed.code).not.toBe(0);
    expect(failed.stderr).toMatch(/no-such-kind/);
    await expect(cluster.kubectl(['get', 'no-such-kind'])).rejects.toThrow(/kubectl get no-such-kind failed/);
  });

  test('client-node works from the kubeconfig testenv loads', async () => {
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const nodes = await core.listNode();
    expect(nodes.items.map((n) => n.metadata?.name)).toContain('hollow-node-0');
    // No node carries the not-ready taint: nothing would ever schedule there otherwise.
    for (const n of nodes.items) {
      expect(n.spec?.taints ?? []).not.toContainEqual(
        expect.objectContaining({ key: 'node.kubernetes.io/not-ready' }),
      );
    }
  });

  describe('a plain Deployment', () => {
    let namespace: string;
    beforeAll(async () => {
      namespace = await cluster.createNamespace('cluster-deploy');
    });
    afterAll(async () => {
      await cluster.deleteNamespace(namespace);
    });

    test('gets its pod scheduled on the hollow node, and the pod reaches Running', async () => {
      await cluster.kubectl(['apply', '-n', namespace, '-f', '-'], {
        input: JSON.stringify({
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          metadata: { name: 'pause' },
          spec: {
            replicas: 1,
            selector: { matchLabels: { app: 'pause' } },
            template: {
              metadata: { labels: { app: 'pause' } },
              spec: { containers: [{ name: 'pause', image: 'registry.k8s.io/pause:3.9' }] },
            },
          },
        }),
      });
      await cluster.kubectl(['rollout', 'status', '-n', namespace, 'deployment/pause', '--timeout=90s'], {
        timeoutMs: 100_000,
      });
      const pods = JSON.parse(
        (await cluster.kubectl(['get', 'pods', '-n', namespace, '-l', 'app=pause', '-o', 'json'])).stdout,
      ) as { items: { spec: { nodeName?: string }; status: { phase: string } }[] };
      expect(pods.items).toHaveLength(1);
      expect(pods.items[0]!.spec.nodeName).toBe('hollow-node-0');
      expect(pods.items[0]!.status.phase).toBe('Running');
    }, 120_000);
  });
});

// These start small extra clusters (etcd + apiserver only, a few seconds each).
describe('harness robustness', () => {
  const clusters: LocalCluster[] = [];
  afterAll(async () => {
    await Promise.all(clusters.map((c) => c.stop()));
  });

  test('ports taken between picking and binding are retried with new ones', async () => {
    // Occupy two ports and ask the harness to use them: etcd and the apiserver both fail to
    // bind, exactly as when another process grabs a port the harness picked.
    const busy = await Promise.all(
      [0, 1].map(
        () =>
          new Promise<net.Server>((resolve) => {
            const s = net.createServer();
            s.listen(0, '127.0.0.1', () => resolve(s));
          }),
      ),
    );
    const [etcdPort, apiPort] = busy.map((s) => (s.address() as net.AddressInfo).port);
    const lines: string[] = [];
    try {
      // the harness's own deadline (60 s here) comes before jest's, so a slow start fails with
      // the harness's message and its progress lines, not with a bare jest timeout
      const c = await startCluster({
        nodes: 0,
        log: (l) => lines.push(l),
        ports: { etcdClient: etcdPort, apiserver: apiPort },
        timeoutMs: 60_000,
      }).catch((error: Error) => {
        throw new Error(`${error.message}\nharness progress:\n${lines.join('\n')}`);
      });
      clusters.push(c);
      expect(lines.join('\n')).toMatch(/etcd: a port was taken/);
      expect(lines.join('\n')).toMatch(/kube-apiserver: a port was taken/);
      expect(new URL(c.server).port).not.toBe(String(apiPort));
      expect((await c.kubectl(['get', 'namespace', 'default', '-o', 'name'])).stdout.trim()).toBe(
        'namespace/default',
      );
    } finally {
      for (const s of busy) s.close();
    }
  }, 120_000);

  test('a killed apiserver is reported clearly, and stop() still leaves no process behind', async () => {
    const c = await startCluster({ nodes: 0, log: () => undefined });
    clusters.push(c);
    const api = c.processes.find((p) => p.name === 'kube-apiserver')!;
    killClusterProcess(c, 'kube-apiserver', 'SIGKILL');
    await until('the apiserver to die', () => !isRunning({ pid: api.pid }), 5000);

    await expect(c.kubectl(['get', 'namespaces'])).rejects.toThrow(
      new RegExp(
        `kube-apiserver \\(pid ${api.pid}\\) (was killed by SIGKILL|is no longer running).*the cluster is down`,
      ),
    );
    expect(() => c.assertRunning()).toThrow(/kube-apiserver/);

    await c.stop();
    for (const p of c.processes) expect(isRunning({ pid: p.pid })).toBe(false);
    expect(processesMentioning(c.dir)).toEqual([]);
    expect(fs.existsSync(c.dir)).toBe(false);
  }, 60_000);

  test('the watchdog tears a cluster down when its owner is SIGKILLed', async () => {
    const { owner, state } = await clusterOwnedByChild();
    expect(alive(state)).toEqual(expect.arrayContaining(['etcd', 'kube-apiserver', 'watchdog']));
    process.kill(owner, 'SIGKILL');
    await until(
      'the watchdog to clean up',
      () => alive(state).length === 0 && !fs.existsSync(state.dir),
      15_000,
    );
    expect(processesMentioning(state.dir)).toEqual([]);
  }, 60_000);

  test('a stale cluster dir whose owner is dead is swept, processes and all, by the next start', async () => {
    const { owner, state } = await clusterOwnedByChild();
    // Take the watchdog out first, as if it had been killed along with its owner.
    process.kill(state.watchdog!.pid, 'SIGKILL');
    process.kill(owner, 'SIGKILL');
    await until('the owner to die', () => !isRunning({ pid: owner }), 5000);
    await sleep(300);
    expect(alive(state)).toEqual(['etcd', 'kube-apiserver']); // orphans, until the next start

    const lines: string[] = [];
    const c = await startCluster({ nodes: 0, log: (l) => lines.push(l) });
    clusters.push(c);
    expect(lines.join('\n')).toContain(`removed a stale cluster in ${state.dir}`);
    expect(alive(state)).toEqual([]);
    expect(fs.existsSync(state.dir)).toBe(false);
    expect(processesMentioning(state.dir)).toEqual([]);
  }, 90_000);
});
