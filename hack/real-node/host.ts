// Small synchronous helpers for the host changes the real node makes and undoes. Synchronous on
// purpose: teardown also runs in the watchdog and the sweep, where a half-finished step must not
// interleave with another.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface RunOutput {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(command: string, args: string[], input?: string): RunOutput {
  const r = spawnSync(command, args, { input, encoding: 'utf8', timeout: 60_000 });
  if (r.error) return { code: -1, stdout: '', stderr: String(r.error) };
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a command and throws with its output when it fails. */
export function mustRun(command: string, args: string[], input?: string): string {
  const r = run(command, args, input);
  if (r.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
  }
  return r.stdout;
}

export function readSysctl(key: string): string | undefined {
  try {
    return fs.readFileSync(path.join('/proc/sys', key), 'utf8').trim();
  } catch {
    return undefined;
  }
}

export function writeSysctl(key: string, value: string): void {
  fs.writeFileSync(path.join('/proc/sys', key), `${value}\n`);
}

export interface Mount {
  id: number;
  mountPoint: string;
  fsType: string;
}

// /proc/self/mountinfo escapes spaces and the like as octal.
const unescape = (s: string): string =>
  s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function mounts(): Mount[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const f = line.split(' ');
      const sep = f.indexOf('-');
      return { id: Number(f[0]), mountPoint: unescape(f[4]!), fsType: f[sep + 1]! };
    });
}

export function mountsUnder(dir: string): Mount[] {
  const prefix = `${dir.replace(/\/+$/, '')}/`;
  return mounts().filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(prefix));
}

/** Mount points of the cgroup hierarchies (v1 and v2). */
export function cgroupRoots(): string[] {
  return [
    ...new Set(
      mounts()
        .filter((m) => m.fsType === 'cgroup' || m.fsType === 'cgroup2')
        .map((m) => m.mountPoint),
    ),
  ];
}

/** The cgroup-v2 mount (hybrid hosts mount it at /sys/fs/cgroup/unified). */
export function cgroupV2Root(): string | undefined {
  return mounts().find((m) => m.fsType === 'cgroup2')?.mountPoint;
}

/** Every dir of a cgroup tree, deepest first (the order rmdir needs). */
export function cgroupTree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }))
      if (e.isDirectory()) walk(path.join(d, e.name));
    out.push(d);
  };
  walk(dir);
  return out;
}

export function cgroupProcs(dir: string): number[] {
  try {
    return fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Processes whose command line contains every one of `parts` (in order of appearance). */
export function processesWith(parts: string[]): { pid: number; argv: string[] }[] {
  const out: { pid: number; argv: string[] }[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter(Boolean);
    } catch {
      continue;
    }
    if (parts.every((p) => argv.includes(p))) out.push({ pid: Number(entry), argv });
  }
  return out;
}

export function kill(pid: number, sig: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

export function linkExists(name: string): boolean {
  return fs.existsSync(`/sys/class/net/${name}`);
}
