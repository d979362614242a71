// The on-disk record of a running cluster, so that processes outlive nobody.
//
// Each cluster dir holds state.json: the owner (the process that started the cluster) and every
// child it started, each as pid + kernel start time. A registry dir in the temp folder holds a
// symlink per cluster dir. Whoever starts a cluster first sweeps the registry: a cluster whose
// owner is gone (crashed, SIGKILLed, jest worker torn down) gets its processes killed and its
// dir removed. The watchdog (watchdog.ts) does the same for one cluster as soon as its owner dies.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isRunning, startTimeOf, terminate, type ProcRef } from './proc.ts';
import type { RealNodeJournal } from './real-node/journal.ts';
import { releaseRealNodeLock } from './real-node/lock.ts';
import { teardownRealNode } from './real-node/teardown.ts';

export const STATE_FILE = 'state.json';
// Marks a dir as created by this harness; nothing without it is ever deleted.
export const MARKER_FILE = '.buildkit-fleet-cluster';

export interface ClusterState {
  version: 1;
  id: string;
  dir: string;
  owner: ProcRef;
  processes: ProcRef[];
  watchdog?: ProcRef;
  server?: string;
  // Temp dirs outside `dir` that belong to the cluster and go with it.
  extraDirs?: string[];
  // The real node's host changes, to undo (hack/real-node/journal.ts).
  realNode?: RealNodeJournal;
  // Whether this cluster holds the machine's real-node lock.
  realNodeLock?: boolean;
}

export function registryDir(): string {
  return path.join(os.tmpdir(), 'buildkit-fleet-clusters');
}

export function selfRef(name = 'owner'): ProcRef {
  return { name, pid: process.pid, start: startTimeOf(process.pid) };
}

export function readState(dir: string): ClusterState | undefined {
  try {
    const s = JSON.parse(fs.readFileSync(path.join(dir, STATE_FILE), 'utf8')) as ClusterState;
    return s.version === 1 && typeof s.owner?.pid === 'number' ? s : undefined;
  } catch {
    return undefined;
  }
}

// Atomic replace, so a concurrent sweep or the watchdog never reads half a file.
export function writeState(state: ClusterState): void {
  const file = path.join(state.dir, STATE_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(state, null, 2));
  fs.renameSync(tmp, file);
}

export function register(state: ClusterState): void {
  fs.mkdirSync(registryDir(), { recursive: true });
  const link = path.join(registryDir(), state.id);
  fs.rmSync(link, { force: true });
  fs.symlinkSync(state.dir, link);
}

export function unregister(id: string): void {
  fs.rmSync(path.join(registryDir(), id), { force: true });
}

export function isHarnessDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, MARKER_FILE));
}

// Kills everything a cluster started and removes its files. Used by stop(), the watchdog and
// the sweep, so a cluster is torn down the same way whoever does it.
// keepFiles leaves the dir (logs, certs, etcd data) for debugging; only state.json goes, so
// nobody sweeps it again.
export async function destroy(
  state: ClusterState,
  opts: { graceMs?: number; keepFiles?: boolean } = {},
): Promise<void> {
  const refs = [...state.processes];
  // The watchdog is not killed when it is the one calling destroy().
  if (state.watchdog && state.watchdog.pid !== process.pid) refs.push(state.watchdog);
  let failure: Error | undefined;
  try {
    await terminate(refs, opts.graceMs ?? 5000);
  } finally {
    // After the node's processes are gone, so nothing recreates what the teardown removes.
    if (state.realNode) {
      const { errors } = teardownRealNode(state.realNode);
      if (errors.length > 0) {
        failure = new Error(
          `the real node's teardown left work undone (the cluster dir ${state.dir} is kept):\n  ${errors.join('\n  ')}`,
        );
      }
    }
    if (state.realNodeLock && !failure) releaseRealNodeLock(state.dir);
    unregister(state.id);
    if (opts.keepFiles || failure) {
      fs.rmSync(path.join(state.dir, STATE_FILE), { force: true });
    } else {
      for (const d of state.extraDirs ?? []) fs.rmSync(d, { recursive: true, force: true });
      if (isHarnessDir(state.dir)) fs.rmSync(state.dir, { recursive: true, force: true });
    }
  }
  if (failure) throw failure;
}

export interface SweepResult {
  dir: string;
  ownerPid: number;
  killed: string[];
}

// Tears down every registered cluster whose owner is gone. `extraDirs` are checked too (a dir the
// caller is about to reuse, which may hold the state of a crashed run).
export async function sweepStale(extraDirs: string[] = []): Promise<SweepResult[]> {
  const candidates = new Map<string, string | undefined>();
  let links: string[] = [];
  try {
    links = fs.readdirSync(registryDir());
  } catch {
    // no registry yet
  }
  for (const id of links) {
    const link = path.join(registryDir(), id);
    let target: string;
    try {
      target = fs.readlinkSync(link);
    } catch {
      continue;
    }
    if (!fs.existsSync(target)) {
      fs.rmSync(link, { force: true });
      continue;
    }
    candidates.set(path.resolve(target), id);
  }
  for (const d of extraDirs) if (fs.existsSync(d)) candidates.set(path.resolve(d), undefined);

  const results: SweepResult[] = [];
  for (const [dir, id] of candidates) {
    const state = readState(dir);
    if (!state) continue; // being created right now, or not ours
    if (isRunning(state.owner)) continue;
    const alive = [...state.processes, ...(state.watchdog ? [state.watchdog] : [])].filter(isRunning);
    await destroy(state);
    if (id && id !== state.id) unregister(id);
    results.push({ dir, ownerPid: state.owner.pid, killed: alive.map((p) => `${p.name} (pid ${p.pid})`) });
  }
  return results;
}
