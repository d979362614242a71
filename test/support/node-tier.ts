// The real-node tier: tests that need the machine's real node (hack/real-node/). Where it cannot
// run, its tests are skipped with the reason in their names, so the run's output lists them as not
// run and they are never counted as passed (the summary reporter prints them).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { startCluster, type LocalCluster } from '../../hack/cluster.ts';
import { realNodeUnavailable } from '../../hack/real-node/start.ts';
import { installCrds } from '../../hack/crds.ts';
import { waitFor } from './wait.ts';

export const REAL_NODE_UNAVAILABLE = realNodeUnavailable();

/** `describe`, or `describe.skip` with "[NOT RUN: <why>]" in the name where the tier cannot run. */
export function describeRealNode(name: string, fn: () => void): void {
  if (REAL_NODE_UNAVAILABLE)
    describe.skip(`${name} [NOT RUN: the real-node tier cannot run here: ${REAL_NODE_UNAVAILABLE}]`, fn);
  else describe(name, fn);
}

const CLI = fileURLToPath(new URL('../../cli/main.ts', import.meta.url));

export interface PlatformProcess {
  child: ChildProcess;
  logPath: string;
  stop(): Promise<void>;
}

/** Runs `buildkit-fleet <args>` from the source tree as its own host process, logging to a file. */
export function startPlatformProcess(name: string, args: string[], logDir: string): PlatformProcess {
  const logPath = path.join(logDir, `${name}.log`);
  const fd = fs.openSync(logPath, 'a');
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', CLI, ...args], {
    stdio: ['ignore', fd, fd],
    env: { ...process.env, BKF_LOG_LEVEL: 'info' },
  });
  fs.closeSync(fd);
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(15_000)]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  return { child, logPath, stop };
}

export const SIDECAR_IMAGE = 'buildkit-fleet:local';

/** `buildkit-fleet controller` against the cluster, as one replica (no leader election) unless flags add it. */
export function controllerArgs(cluster: LocalCluster, flags: string[] = []): string[] {
  const electing = flags.some((f) => f.startsWith('--leader-election'));
  return [
    'controller',
    '--kubeconfig',
    cluster.kubeconfigPath,
    '--metrics-listen',
    '127.0.0.1:0',
    ...(electing ? [] : ['--disable-leader-election']),
    ...flags,
  ];
}

/**
 * The platform against a cluster with the real node: the CRDs, then the webhook (`--local`,
 * registered as `configName`, injecting the platform image the node holds) and the controller as
 * host processes. Resolves once the webhook's configurations are registered.
 */
export async function startPlatform(
  cluster: LocalCluster,
  configName: string,
  controllerFlags: string[] = [],
  webhookFlags: string[] = [],
): Promise<PlatformProcess[]> {
  await installCrds(async (args) => (await cluster.kubectl(args)).stdout);
  const kubeconfig = ['--kubeconfig', cluster.kubeconfigPath];
  const processes = [
    startPlatformProcess(
      'webhook',
      [
        'webhook',
        '--local',
        ...kubeconfig,
        '--config-name',
        configName,
        '--sidecar-image',
        SIDECAR_IMAGE,
        ...webhookFlags,
      ],
      cluster.dir,
    ),
    startPlatformProcess('controller', controllerArgs(cluster, controllerFlags), cluster.dir),
  ];
  await waitFor(
    'the webhook configurations',
    async () =>
      (await cluster.kubectl(['get', 'mutatingwebhookconfiguration', configName], { allowFail: true }))
        .code === 0,
    { timeoutMs: 30_000 },
  );
  return processes;
}

/**
 * For a benchmark on the real node: builds `dist/` and starts a cluster with the real node and no
 * hollow nodes; where the tier cannot run, prints "<bench>: NOT RUN: ..." and resolves undefined.
 */
export async function startBenchCluster(bench: string): Promise<LocalCluster | undefined> {
  if (REAL_NODE_UNAVAILABLE) {
    console.log(`${bench}: NOT RUN: the real-node tier cannot run here: ${REAL_NODE_UNAVAILABLE}`);
    return undefined;
  }
  execFileSync('npm', ['run', 'build', '--silent'], {
    cwd: fileURLToPath(new URL('../../', import.meta.url)),
    stdio: 'inherit',
  });
  return startCluster({ nodes: 0, realNode: true, log: () => {} });
}

/**
 * A PersistentVolume on the node's disk, as YAML (no provisioner runs here), and the folder it
 * makes for it under the cluster's directory.
 */
export function hostPathVolume(
  cluster: LocalCluster,
  name: string,
  storageClass: string,
): { yaml: string; dir: string } {
  const dir = path.join(cluster.dir, name);
  fs.mkdirSync(dir, { recursive: true });
  const yaml = `
apiVersion: v1
kind: PersistentVolume
metadata: { name: ${name} }
spec:
  capacity: { storage: 1Gi }
  accessModes: [ReadWriteOnce]
  storageClassName: ${storageClass}
  persistentVolumeReclaimPolicy: Retain
  hostPath: { path: ${dir}, type: Directory }
`;
  return { yaml, dir };
}

/**
 * Stops the platform's processes and the cluster; their logs outlive the cluster's folder, in
 * $TMPDIR/<keepAs>, for a look after a failure.
 */
export async function stopAll(
  cluster: LocalCluster | undefined,
  processes: PlatformProcess[],
  keepAs: string,
): Promise<void> {
  await Promise.all(processes.map((p) => p.stop()));
  const keep = path.join(os.tmpdir(), keepAs);
  fs.mkdirSync(keep, { recursive: true });
  for (const p of processes) {
    if (fs.existsSync(p.logPath)) fs.copyFileSync(p.logPath, path.join(keep, path.basename(p.logPath)));
  }
  await cluster?.stop();
}

/** The starts the buildkitd stand-in recorded under its --root (one line each), on the node's disk. */
export function standinBoots(rootDir: string): string[] {
  const file = path.join(rootDir, 'standin-boots.log');
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim().split('\n') : [];
}
