// The real-node tier: tests that need the machine's real node (hack/real-node/). Where it cannot
// run, its tests are skipped with the reason in their names, so the run's output lists them as not
// run and they are never counted as passed (the summary reporter prints them).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { realNodeUnavailable } from '../../hack/real-node/start.ts';

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
