// The background process behind `cli.ts up`:
// `node supervisor.ts <local dir> <nodes> [<port>] [--real-node]`.
//
// It owns the cluster (so the cluster's watchdog tears it down if this process is killed),
// reports progress in <local dir>/supervisor.json, and stops the cluster on SIGTERM, SIGINT or
// SIGHUP (what `cli.ts down` sends). If a cluster process dies, it stops the rest and records why.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster, type LocalCluster } from './cluster.ts';
import { startTimeOf } from './proc.ts';
import { supervisorFile, writeSupervisor, type SupervisorState } from './supervisor-state.ts';

async function main(): Promise<void> {
  const realNode = process.argv.includes('--real-node');
  const [localDir, nodesArg, portArg] = process.argv.slice(2).filter((a) => a !== '--real-node');
  if (!localDir || nodesArg === undefined) {
    console.error('usage: supervisor.ts <local dir> <nodes> [<apiserver port>] [--real-node]');
    process.exit(2);
  }
  const nodes = Number(nodesArg);
  const clusterDir = path.join(localDir, 'run');
  const state: SupervisorState = {
    pid: process.pid,
    start: startTimeOf(process.pid),
    phase: 'starting',
    nodes,
    realNode,
    clusterDir,
    updatedAt: '',
  };
  writeSupervisor(localDir, state);

  let cluster: LocalCluster | undefined;
  let stopping = false;
  const stop = async (reason: string, code: number): Promise<never> => {
    if (stopping) return new Promise<never>(() => undefined);
    stopping = true;
    console.log(`[supervisor] ${reason}; stopping the cluster`);
    writeSupervisor(localDir, {
      ...state,
      phase: code === 0 ? 'stopping' : 'failed',
      error: code ? reason : undefined,
    });
    try {
      await cluster?.stop();
    } catch (e) {
      console.log(`[supervisor] stop failed: ${String(e)}`);
      code = 1;
    }
    if (code === 0) fs.rmSync(supervisorFile(localDir), { force: true });
    process.exit(code);
  };
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => void stop(`received ${sig}`, 0));
  }

  try {
    cluster = await startCluster({
      nodes,
      realNode,
      dir: clusterDir,
      log: (line) => console.log(line),
      ports: portArg ? { apiserver: Number(portArg) } : undefined,
      // The first start may build the binaries (minutes); the start itself is bounded here.
      timeoutMs: 240_000,
    });
  } catch (e) {
    const msg = (e as Error).message;
    console.log(`[supervisor] the cluster failed to start: ${msg}`);
    writeSupervisor(localDir, { ...state, phase: 'failed', error: msg });
    process.exit(1);
  }
  if (stopping) return; // a signal arrived during the start; stop() is on it

  // A copy outside the cluster dir: that dir goes away with the cluster.
  const kubeconfig = path.join(localDir, 'kubeconfig');
  fs.copyFileSync(cluster.kubeconfigPath, kubeconfig);
  fs.chmodSync(kubeconfig, 0o600);
  Object.assign(state, {
    phase: 'ready',
    server: cluster.server,
    kubeconfig,
    kubectl: cluster.kubectlPath,
    helm: cluster.helmPath,
  });
  writeSupervisor(localDir, state);
  console.log(`[supervisor] cluster ready at ${cluster.server}`);

  for (;;) {
    await sleep(2000);
    if (stopping) continue;
    try {
      cluster.assertRunning();
    } catch (e) {
      await stop((e as Error).message, 1);
    }
  }
}

await main();
