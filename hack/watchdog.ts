// Detached guard of one cluster: `node watchdog.ts <cluster dir>`.
//
// If the process that started the cluster dies without calling stop() (SIGKILL, OOM, a jest
// worker torn down mid-test), nobody else would ever kill etcd, the apiserver and the hollow
// nodes. The watchdog notices (EOF on the pipe the owner holds, or the owner's pid vanishing)
// and tears the cluster down. It exits on its own once the cluster's state file is gone, which
// is what a clean stop() leaves behind.
import { setTimeout as sleep } from 'node:timers/promises';
import { isRunning } from './proc.ts';
import { destroy, readState } from './state.ts';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: watchdog.ts <cluster dir>');
  process.exit(2);
}

let busy = false;
async function check(): Promise<void> {
  if (busy) return;
  busy = true;
  try {
    const state = readState(dir!);
    if (!state) process.exit(0); // stopped cleanly
    if (isRunning(state.owner)) return;
    console.error(`[watchdog] owner pid ${state.owner.pid} is gone; tearing down the cluster in ${dir}`);
    await destroy(state);
    console.error('[watchdog] done');
    process.exit(0);
  } catch (e) {
    console.error(`[watchdog] ${(e as Error).stack ?? String(e)}`);
  } finally {
    busy = false;
  }
}

// The owner holds the other end of our stdin: EOF means it is gone (or closed it on stop()).
process.stdin.on('end', () => void check());
process.stdin.on('error', () => void check());
process.stdin.resume();
// Terminal signals never reach us (own session), and SIGTERM from stop() should just end us.
process.on('SIGHUP', () => undefined);

for (;;) {
  await check();
  await sleep(1000);
}
