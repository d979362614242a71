// System calls a running process makes under a load, counted with `strace -c -f` (every thread):
// the sidecar benchmark uses it for the calls per churn connection of the sidecar and of HAProxy,
// the same tool on both. strace slows the traced process a lot, so only the counts mean anything.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { sleep } from './lib.ts';

/** calls per system call name, and `total` */
export type SyscallCounts = Record<string, number>;

export const straceAvailable = (): boolean => spawnSync('strace', ['-V'], { stdio: 'ignore' }).status === 0;

/**
 * The call counts of an `strace -c` summary: its rows are
 * `% time  seconds  usecs/call  calls  [errors]  syscall`, then a `total` row.
 */
export function parseStraceSummary(text: string): SyscallCounts {
  const counts: SyscallCounts = {};
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 5 || !/^\d/.test(fields[0]!)) continue;
    const name = fields[fields.length - 1]!;
    counts[name] = Number(fields[3]);
  }
  return counts;
}

/** Counts the system calls of `pid` while `load` runs. */
export async function countSyscalls<T>(
  pid: number,
  load: () => Promise<T>,
): Promise<{ counts: SyscallCounts; result: T }> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-strace-'));
  const out = join(dir, 'summary');
  try {
    const tracer = spawn('strace', ['-c', '-f', '-o', out, '-p', String(pid)], { stdio: 'ignore' });
    // strace attaches to each thread before it counts; give it a moment
    await sleep(500);
    const result = await load();
    tracer.kill('SIGINT');
    await once(tracer, 'exit');
    return { counts: parseStraceSummary(readFileSync(out, 'utf8')), result };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
