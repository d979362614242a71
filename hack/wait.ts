// Waiting for cluster processes: the error that names a process that died, and the poll loop
// that fails at once when one does. Shared by the control plane (cluster.ts) and the real node.
import { setTimeout as sleep } from 'node:timers/promises';
import { isAddressInUse } from './ports.ts';
import { describeExit, isRunning, logTail, type ManagedProcess } from './proc.ts';

// A cluster process died: the message names it, how it ended, and the end of its log.
export class ClusterProcessError extends Error {
  readonly process: string;
  readonly pid: number;
  readonly logPath: string;
  readonly addressInUse: boolean;
  constructor(p: ManagedProcess, context: string) {
    const how = p.exit ? describeExit(p.exit) : 'is no longer running';
    const tail = logTail(p.logPath);
    super(`${p.name} (pid ${p.pid}) ${how} ${context}; last lines of ${p.logPath}:\n${tail}`);
    this.name = 'ClusterProcessError';
    this.process = p.name;
    this.pid = p.pid;
    this.logPath = p.logPath;
    // Only this run's part of the log: a retry appends to the same file after a "# " header.
    const thisRun = tail.slice(tail.lastIndexOf('\n# ') + 1);
    this.addressInUse = isAddressInUse(thisRun);
  }
}

export class ClusterDownError extends ClusterProcessError {
  constructor(p: ManagedProcess) {
    super(p, 'after the cluster had started: the cluster is down');
    this.name = 'ClusterDownError';
  }
}

// Runs a probe until it returns true. Fails at once (with the log tail) if one of `watch` dies.
export async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  watch: ManagedProcess[],
  deadline: number,
): Promise<void> {
  let delay = 50;
  for (;;) {
    for (const p of watch) {
      if (p.exit || !isRunning(p)) {
        // Give the exit event a moment so the error can say how it ended.
        await Promise.race([p.exited, sleep(200)]);
        throw new ClusterProcessError(p, `while waiting for ${what}`);
      }
    }
    // A probe must not hang the start: a port can be held by something that accepts
    // connections but never answers (which is also how a port collision can look).
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 3000)));
    const died = watch.map((p) => p.exited.then(() => false));
    const ok = await Promise.race([probe().catch(() => false), timeout, ...died]);
    clearTimeout(timer);
    if (ok) return;
    if (Date.now() > deadline) {
      const tails = watch.map((p) => `--- ${p.logPath}\n${logTail(p.logPath, 10)}`).join('\n');
      throw new Error(`timed out waiting for ${what}\n${tails}`);
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 250);
  }
}
