// Undoes what the real node did to the host, from its journal: pod processes and containerd
// shims, mounts, network namespaces, the bridge, iptables chains, sysctls, the /etc/hosts line,
// the node address, cgroups and the fixed host dirs. Runs after the node's own processes
// (containerd, kubelet, kube-proxy) are gone, so nothing recreates what it removes. Every step
// runs even when an earlier one fails; the errors are reported together at the end.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  cgroupProcs,
  cgroupRoots,
  cgroupTree,
  kill,
  linkExists,
  mountsUnder,
  processesWith,
  run,
  mustRun,
  writeSysctl,
} from './host.ts';
import { cleanupScript } from './iptables-cleanup.ts';
import type { RealNodeJournal } from './journal.ts';
import { BRIDGE, HOST_ADDRESSES, KUBEPODS_CGROUP } from './plan.ts';

// containerd 1.6 puts shim sockets here whatever its state dir (runtime/v2/shim/util_unix.go).
const SHIM_SOCKET_DIR = '/run/containerd/s';

export function shimSocketPath(containerdAddress: string, namespace: string, id: string): string {
  const digest = createHash('sha256')
    .update(path.join(containerdAddress, namespace, id))
    .digest('hex');
  return path.join(SHIM_SOCKET_DIR, digest);
}

function flagValue(argv: string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1] : undefined;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Kills every process in the kubelet's pod cgroups and every shim of this node's containerd. */
function killPodProcesses(j: RealNodeJournal): void {
  const shims = processesWith(['-address', j.layout.containerdSocket]).filter((p) =>
    p.argv[0]?.includes('containerd-shim'),
  );
  for (let round = 0; round < 20; round++) {
    const pids = cgroupRoots().flatMap((root) =>
      cgroupTree(path.join(root, KUBEPODS_CGROUP)).flatMap((d) => cgroupProcs(d)),
    );
    if (pids.length === 0) break;
    for (const pid of pids) kill(pid);
    sleepSync(100);
  }
  for (const s of shims) {
    kill(s.pid);
    const id = flagValue(s.argv, '-id');
    const ns = flagValue(s.argv, '-namespace') ?? 'k8s.io';
    if (id) fs.rmSync(shimSocketPath(j.layout.containerdSocket, ns, id), { force: true });
  }
}

function unmountAll(dir: string): void {
  for (let round = 0; round < 5; round++) {
    const left = mountsUnder(dir).sort((a, b) => b.mountPoint.length - a.mountPoint.length);
    if (left.length === 0) return;
    for (const m of left) {
      if (run('umount', [m.mountPoint]).code !== 0) run('umount', ['-l', m.mountPoint]);
    }
  }
  const left = mountsUnder(dir);
  if (left.length > 0) throw new Error(`still mounted: ${left.map((m) => m.mountPoint).join(', ')}`);
}

function removeCgroups(): void {
  for (const root of cgroupRoots()) {
    for (const d of cgroupTree(path.join(root, KUBEPODS_CGROUP))) fs.rmdirSync(d);
  }
}

function removeHostsLine(line: string): void {
  const text = fs.readFileSync('/etc/hosts', 'utf8');
  const kept = text.split('\n').filter((l) => l !== line);
  const next = kept.join('\n');
  // /etc/hosts may be a bind mount (containers): write in place rather than rename over it.
  if (next !== text) fs.writeFileSync('/etc/hosts', next);
}

function restoreIptables(j: RealNodeJournal): void {
  for (const [save, restore, before] of [
    ['iptables-save', 'iptables-restore', j.iptablesBefore.v4],
    ['ip6tables-save', 'ip6tables-restore', j.iptablesBefore.v6],
  ] as const) {
    const script = cleanupScript(before, mustRun(save, []));
    if (script) mustRun(restore, ['--noflush'], script);
  }
}

export interface TeardownReport {
  errors: string[];
}

export function teardownRealNode(j: RealNodeJournal): TeardownReport {
  const errors: string[] = [];
  const step = (what: string, fn: () => void): void => {
    try {
      fn();
    } catch (e) {
      errors.push(`${what}: ${(e as Error).message}`);
    }
  };
  step('killing pod processes', () => killPodProcesses(j));
  step(`unmounting under ${j.layout.dir}`, () => unmountAll(j.layout.dir));
  step(`deleting bridge ${BRIDGE}`, () => {
    if (linkExists(BRIDGE)) mustRun('ip', ['link', 'del', BRIDGE]);
  });
  step('removing iptables rules and chains', () => restoreIptables(j));
  step('restoring sysctls', () => {
    for (const [key, value] of Object.entries(j.sysctls)) if (value !== undefined) writeSysctl(key, value);
  });
  if (j.hostsLine) step('removing the /etc/hosts line', () => removeHostsLine(j.hostsLine!));
  if (j.nodeAddressAdded) {
    for (const address of HOST_ADDRESSES) {
      step(`removing ${address} from lo`, () => {
        const r = run('ip', ['addr', 'del', `${address}/32`, 'dev', 'lo']);
        if (r.code !== 0 && !/Cannot assign requested address/.test(r.stderr))
          throw new Error(r.stderr.trim());
      });
    }
  }
  step('removing cgroups', () => {
    removeCgroups();
    if (j.guard && fs.existsSync(j.guard.dir)) fs.rmdirSync(j.guard.dir);
  });
  for (const dir of j.createdDirs) {
    step(`removing ${dir}`, () => {
      unmountAll(dir);
      fs.rmSync(dir, { recursive: true, force: true });
    });
  }
  return { errors };
}
