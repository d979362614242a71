// One real node per machine: its bridge, its iptables chains (kube-proxy's KUBE-SERVICES is
// global), its pod cgroups and the kubelet's fixed host dirs cannot be shared. A second cluster
// that asks for a real node waits here until the first is gone.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isRunning, type ProcRef } from '../proc.ts';

export function lockDir(): string {
  return path.join(os.tmpdir(), 'buildkit-fleet-real-node.lock');
}

interface Holder {
  clusterDir: string;
  owner: ProcRef;
}

function readHolder(): Holder | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(lockDir(), 'holder.json'), 'utf8')) as Holder;
  } catch {
    return undefined;
  }
}

/** Takes the machine's real-node lock for `clusterDir`, waiting up to `timeoutMs` for a holder. */
export async function acquireRealNodeLock(
  clusterDir: string,
  owner: ProcRef,
  timeoutMs: number,
  log: (msg: string) => void,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let said = false;
  for (;;) {
    try {
      fs.mkdirSync(lockDir());
      fs.writeFileSync(path.join(lockDir(), 'holder.json'), JSON.stringify({ clusterDir, owner }));
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const holder = readHolder();
    // A holder whose owner is gone and whose cluster dir is gone left the lock behind.
    if (holder && !isRunning(holder.owner) && !fs.existsSync(holder.clusterDir)) {
      releaseRealNodeLock(holder.clusterDir);
      continue;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `another cluster has the machine's real node (${holder ? `${holder.clusterDir}, owner pid ${holder.owner.pid}` : 'holder unknown'}); ` +
          `only one can run at a time. Stop it (npm run cluster:down) or remove ${lockDir()} if it is stale.`,
      );
    }
    if (!said) {
      log(`waiting for the real node of ${holder?.clusterDir ?? 'another cluster'} to stop`);
      said = true;
    }
    await sleep(500);
  }
}

/** Releases the lock if `clusterDir` holds it. */
export function releaseRealNodeLock(clusterDir: string): void {
  const holder = readHolder();
  if (holder && holder.clusterDir !== clusterDir) return;
  fs.rmSync(lockDir(), { recursive: true, force: true });
}
