// Starting, watching and killing the control-plane processes.
//
// Every process runs in its own process group (spawn's `detached`), writes stdout and stderr to
// its own log file, and is identified by pid *and* kernel start time, so a cleanup that runs
// long after a crash never signals an unrelated process that happens to reuse the pid.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ProcRef {
  name: string;
  pid: number;
  // Start time in clock ticks since boot (field 22 of /proc/<pid>/stat); undefined without /proc.
  start?: number;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ManagedProcess extends ProcRef {
  logPath: string;
  exited: Promise<ExitInfo>;
  // Set once the process has exited.
  exit?: ExitInfo;
}

function readStat(pid: number): string[] | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

const hasProc = fs.existsSync('/proc/self/stat');

export function startTimeOf(pid: number): number | undefined {
  const fields = readStat(pid);
  // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
  const start = fields?.[19];
  return start === undefined ? undefined : Number(start);
}

export function isRunning(ref: { pid: number; start?: number }): boolean {
  if (!Number.isInteger(ref.pid) || ref.pid <= 0) return false;
  if (!hasProc) {
    try {
      process.kill(ref.pid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
  const fields = readStat(ref.pid);
  if (!fields) return false;
  // A zombie has exited; it only waits for its parent to reap it.
  if (fields[0] === 'Z' || fields[0] === 'X') return false;
  return ref.start === undefined || Number(fields[19]) === ref.start;
}

// Signals the process group (all our processes lead their own), falling back to the process.
export function signal(ref: ProcRef, sig: NodeJS.Signals): void {
  if (!isRunning(ref)) return;
  try {
    process.kill(-ref.pid, sig);
  } catch {
    try {
      process.kill(ref.pid, sig);
    } catch {
      // already gone
    }
  }
}

async function waitGone(refs: ProcRef[], ms: number): Promise<ProcRef[]> {
  const deadline = Date.now() + ms;
  let alive = refs.filter(isRunning);
  while (alive.length > 0 && Date.now() < deadline) {
    await sleep(50);
    alive = alive.filter(isRunning);
  }
  return alive;
}

// SIGTERM, then SIGKILL whatever is still there after the grace period; resolves once all are
// gone. Returns the names of processes that had to be killed hard.
export async function terminate(refs: ProcRef[], graceMs = 5000): Promise<string[]> {
  for (const r of refs) signal(r, 'SIGTERM');
  const stubborn = await waitGone(refs, graceMs);
  for (const r of stubborn) signal(r, 'SIGKILL');
  const survivors = await waitGone(stubborn, 5000);
  if (survivors.length > 0) {
    throw new Error(
      `processes survived SIGKILL: ${survivors.map((r) => `${r.name} (pid ${r.pid})`).join(', ')}`,
    );
  }
  return stubborn.map((r) => r.name);
}

export interface SpawnOptions {
  name: string;
  command: string;
  args: string[];
  logPath: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export function spawnLogged(o: SpawnOptions): ManagedProcess {
  const fd = fs.openSync(o.logPath, 'a');
  fs.writeSync(fd, `# ${new Date().toISOString()} ${o.command} ${o.args.join(' ')}\n`);
  let child;
  try {
    child = spawn(o.command, o.args, {
      cwd: o.cwd,
      env: o.env ?? process.env,
      stdio: ['ignore', fd, fd],
      // Own process group: stop() can signal it as a whole, and a Ctrl-C in the terminal
      // (which signals the foreground group) does not kill the cluster behind the owner's back.
      detached: true,
    });
  } finally {
    fs.closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) {
    throw new Error(`could not start ${o.name} (${o.command}); see ${o.logPath}`);
  }
  // The owner's event loop must not stay alive just because the cluster runs; stop() and the
  // watchdog take care of the processes.
  child.unref();
  const proc: ManagedProcess = {
    name: o.name,
    pid,
    start: startTimeOf(pid),
    logPath: o.logPath,
    exited: new Promise<ExitInfo>((resolve) => {
      child.once('exit', (code, sig) => {
        proc.exit = { code, signal: sig };
        resolve(proc.exit);
      });
      child.once('error', () => {
        proc.exit = { code: -1, signal: null };
        resolve(proc.exit);
      });
    }),
  };
  return proc;
}

export function describeExit(e: ExitInfo): string {
  return e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
}

export function logTail(path: string, lines = 25): string {
  try {
    const fd = fs.openSync(path, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const len = Math.min(size, 64 * 1024);
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, size - len);
      return buf.toString('utf8').split('\n').filter(Boolean).slice(-lines).join('\n');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '(no log)';
  }
}
