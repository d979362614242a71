// The sidecar's data path on loopback (issue 6): bulk throughput one way and both ways, 1 KiB
// ping-pong latency, connection churn and RSS with 1,000 idle connections, for three paths
// measured in the same run and interleaved:
//   direct   client -> server
//   sidecar  client -> `buildkit-fleet sidecar` (its own process, as in production; the native
//            data path with --engine auto, BKF_SIDECAR_ENGINE=js for the JavaScript one) -> server
//   haproxy  client -> HAProxy 2.x, mode tcp, option splice-auto (BENCH_HAPROXY_SPLICE=always:
//            splice-request and splice-response), one thread -> server
// Two load generators, each the same for all three paths (sidecar-load.ts):
// - iperf3 (client and `iperf3 -s`, native) for bulk: 1 GiB one way (`-n 1G`) and both ways at
//   once (`--bidir`; iperf3 stops when the client has sent 1 GiB, the reverse direction moves
//   about as much), receiver-side bytes and seconds from its JSON report. These are the bulk
//   numbers that count: a native generator leaves the proxy as the only bottleneck.
// - the Node generator and peer server (this process, one event loop) for ping-pong latency,
//   connection churn and the 1,000 idle connections, and bulk too (labelled Node-generator in the
//   table): about 1.25 GB/s is all one event loop moves through loopback, so there "direct" is
//   the generator's limit rather than the kernel's.
// Each proxy runs twice, one process in front of the Node peer and one in front of iperf3's
// server (a proxy has one upstream); RSS is the first one's.
//
// CPU placement (2 cores): the load generators and servers (this process, the iperf3 client and
// server) are pinned to core 0 and the proxies under test to core 1. Each proxy gets a core of its
// own, as it would next to buildkitd, and the endpoints cost the same on every path, so "direct"
// is what the endpoints can do and a proxy that keeps up with them measures 1.0x. Unpinned, the
// processes would compete for both cores and the scheduler would decide what gets measured.
// That contended case is what a busy node sees, so the same run measures it too: after the pinned
// rounds every process is unpinned (taskset on the running ones) and the rounds run again.
// BENCH_PIN=1 runs only the pinned variant, BENCH_PIN=0 only the unpinned one. On a shared
// machine other work lands on both cores anyway: compare the per-round ratios, not the absolute
// numbers of one run.
//
// CPU: the proxy process's user+system time (/proc/<pid>/stat, all its threads) around the
// iperf3 one-way transfer, per GiB moved, around each churn slice, per 1,000 connections, and
// around the ping-pong, per round trip.
//
// The sidecar runs with the process settings the webhook injects (SIDECAR_ENV: NODE_OPTIONS heap
// caps, MALLOC_ARENA_MAX); BENCH_SIDECAR_PROCESS_SETTINGS=0 runs it with Node's defaults.
//
// HAProxy and iperf3 must be installed (Debian: `apt-get install -y haproxy iperf3`, and answer no
// to iperf3's daemon); without them the benchmark says so and exits non-zero. iperf3 only talks to
// 127.0.0.1. Environment: BENCH_ROUNDS (5), BENCH_BULK_MIB (1024, both generators),
// BENCH_SECONDS (2, per latency/churn measurement), BENCH_SIDECAR_NODE_FLAGS (extra node flags
// for the sidecar, e.g. --cpu-prof), BENCH_SIDECAR_MAIN (see below), BENCH_ONLY (comma-separated
// paths, e.g. sidecar). RSS is read from /proc/<pid>/status (VmRSS) at the end of each round, so
// it includes whatever the bulk runs left behind, as it would in a long-lived pod.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { SIDECAR_ENV } from '../../sidecar/process-settings.ts';
import { median, percentile, processCpuMs, sleep, table, writeResult } from './lib.ts';
import type { SyscallCounts } from './syscalls.ts';
import { countSyscalls, straceAvailable } from './syscalls.ts';
import type { IperfServer } from './sidecar-load.ts';
import {
  bulkBothWays,
  bulkOneWay,
  churn,
  churnCounted,
  iperfBulk,
  iperfVersion,
  openIdle,
  pingPong,
  startIperfServer,
  startPeer,
} from './sidecar-load.ts';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const BULK = Number(process.env['BENCH_BULK_MIB'] ?? 1024) * 2 ** 20;
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 2);
type Variant = 'pinned' | 'unpinned';
const VARIANTS: Variant[] =
  process.env['BENCH_PIN'] === '0'
    ? ['unpinned']
    : process.env['BENCH_PIN'] === '1'
      ? ['pinned']
      : ['pinned', 'unpinned'];
/** whether processes started now are pinned: the variant under way */
let PIN = VARIANTS[0] === 'pinned';
const SIDECAR_FLAGS = (process.env['BENCH_SIDECAR_NODE_FLAGS'] ?? '').split(' ').filter(Boolean);
const SIDECAR_SETTINGS = process.env['BENCH_SIDECAR_PROCESS_SETTINGS'] !== '0';
// HAProxy's splice-auto splices only where it judges it worth it (on loopback it copied every
// byte); BENCH_HAPROXY_SPLICE=always forces splicing both ways, the stronger baseline for CPU.
const HAPROXY_SPLICE_OPTIONS =
  process.env['BENCH_HAPROXY_SPLICE'] === 'always'
    ? ['option splice-request', 'option splice-response']
    : ['option splice-auto'];
const MESSAGE = 1024;
const CHURN_LOOPS = 4;
/** slices of each path's churn time per round, interleaved across the paths */
const CHURN_SLICES = 8;
const IDLE = 1000;
const GB = 1e9;
const GIB = 2 ** 30;

// Production runs `buildkit-fleet sidecar`, the compiled CLI: the benchmark builds dist/ first and
// runs that. BENCH_SIDECAR_MAIN=<script> runs a sidecar entry directly instead, e.g.
// sidecar/main.ts (the source through Node's type stripping, as the unit tests run it: ~17 MiB more).
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const mainOverride = process.env['BENCH_SIDECAR_MAIN'];
const main = mainOverride ? [mainOverride] : [join(ROOT, 'dist/cli/main.js'), 'sidecar'];

function buildDist(): void {
  if (mainOverride) return;
  execFileSync(
    process.execPath,
    [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'],
    {
      cwd: ROOT,
      stdio: 'inherit',
    },
  );
}

/** One proxy process (or, for direct, the server itself). */
interface Hop {
  port: number;
  /** the proxy process (not for direct) */
  pid?: number;
  child?: ChildProcess;
}

interface Path extends Hop {
  name: 'direct' | 'sidecar' | 'haproxy';
  /** the same path in front of iperf3's server */
  iperf: Hop;
}

const pinned = (core: number, command: string, args: string[]): [string, string[]] =>
  PIN ? ['taskset', ['-c', String(core), command, ...args]] : [command, args];
const onCore0 = (command: string, args: string[]) => pinned(0, command, args);

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]);
  return kb / 1024;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function waitForPort(port: number, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} not listening on ${port}`);
    await sleep(50);
  }
}

/** the data path the sidecar reported at start (native or js) */
let sidecarEngine: string | undefined;

/** The real sidecar, started the way the sidecar tests start it; its listen port from its log. */
async function startSidecar(upstreamPort: number): Promise<Hop> {
  const [command, args] = pinned(1, process.execPath, [
    ...SIDECAR_FLAGS,
    ...main,
    '--listen',
    '127.0.0.1:0',
    '--stats',
    '127.0.0.1:0',
    '--upstream',
    `127.0.0.1:${upstreamPort}`,
    '--log-level',
    'info',
  ]);
  const child = spawn(command, args, {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: SIDECAR_SETTINGS ? { ...process.env, ...SIDECAR_ENV } : process.env,
  });
  const lines = createInterface({ input: child.stdout! });
  for await (const line of lines) {
    const entry = JSON.parse(line) as { msg?: string; listen?: { port: number }; engine?: string };
    if (entry.msg === 'sidecar serving') {
      sidecarEngine = entry.engine;
      // keep draining its stdout so the child never blocks on a full pipe
      lines.on('line', () => undefined);
      return { port: entry.listen!.port, pid: child.pid!, child };
    }
  }
  throw new Error(`sidecar exited with ${child.exitCode} before serving`);
}

function haproxyConfig(listenPort: number, upstreamPort: number): string {
  return [
    'global',
    '  nbthread 1',
    '  maxconn 4096',
    'defaults',
    '  mode tcp',
    ...HAPROXY_SPLICE_OPTIONS.map((option) => `  ${option}`),
    '  timeout connect 10s',
    '  timeout client 1h',
    '  timeout server 1h',
    'listen bench',
    `  bind 127.0.0.1:${listenPort}`,
    `  server peer 127.0.0.1:${upstreamPort}`,
    '',
  ].join('\n');
}

async function startHaproxy(upstreamPort: number, dir: string): Promise<Hop> {
  const port = await freePort();
  const config = join(dir, `haproxy-${upstreamPort}.cfg`);
  writeFileSync(config, haproxyConfig(port, upstreamPort));
  execFileSync('haproxy', ['-c', '-q', '-f', config], { stdio: 'inherit' });
  const [command, args] = pinned(1, 'haproxy', ['-db', '-f', config]);
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitForPort(port, child, 'haproxy');
  return { port, pid: child.pid!, child };
}

function haproxyVersion(): string | undefined {
  const result = spawnSync('haproxy', ['-v'], { encoding: 'utf8' });
  if (result.error) return undefined;
  return /HAProxy version (\S+)/.exec(result.stdout)?.[1] ?? 'unknown';
}

/** iperf* are iperf3's bulk numbers, node* the Node generator's (GB/s). */
type Metric =
  | 'iperfOneWay'
  | 'iperfBothWays'
  | 'nodeOneWay'
  | 'nodeBothWays'
  | 'p50'
  | 'p99'
  | 'churn'
  | 'cpuPerGiB'
  | 'cpuPer1000'
  | 'cpuPerRoundTrip'
  | 'rss';
const METRICS: Metric[] = [
  'iperfOneWay',
  'iperfBothWays',
  'nodeOneWay',
  'nodeBothWays',
  'p50',
  'p99',
  'churn',
  'cpuPerGiB',
  'cpuPer1000',
  'cpuPerRoundTrip',
  'rss',
];
/** figures only a proxy has */
const PROXY_ONLY: readonly Metric[] = ['cpuPerGiB', 'cpuPer1000', 'cpuPerRoundTrip', 'rss'];
type Samples = Record<Metric, number[]>;
const emptySamples = (): Samples =>
  Object.fromEntries(METRICS.map((m) => [m, [] as number[]])) as unknown as Samples;

async function measureRss(path: Path): Promise<number> {
  const close = await openIdle(path.port, IDLE);
  await sleep(500);
  const rss = rssMiB(path.pid!);
  await close();
  return rss;
}

const missing = (what: string, install: string) => {
  console.error(`sidecar bench: ${what} not found; install it with \`${install}\` (Debian)`);
  process.exitCode = 1;
};

/** Lets a running process (all its threads) use every core again. */
function unpin(pid: number | undefined): void {
  if (pid === undefined) return;
  execFileSync('taskset', ['-a', '-p', '-c', `0-${availableParallelism() - 1}`, String(pid)], {
    stdio: 'ignore',
  });
}

/** CPU seconds the proxy process `pid` used while `work` ran, and what `work` returned. */
async function withCpu<T>(
  pid: number | undefined,
  work: () => Promise<T>,
): Promise<{ value: T; cpuSeconds: number }> {
  const before = pid === undefined ? 0 : processCpuMs(pid);
  const value = await work();
  return { value, cpuSeconds: pid === undefined ? NaN : (processCpuMs(pid) - before) / 1000 };
}

/** One round of every figure for every path, in an order that rotates with the round. */
async function measureRound(
  active: Path[],
  results: Record<string, Samples>,
  round: number,
  iperfGBps: (p: Path, bytes: number, bidir: boolean) => Promise<number>,
): Promise<void> {
  // rotate the order every round so no path always runs first or last
  const order = active.map((_, i) => active[(i + round) % active.length]!);
  const each = async (fn: (p: Path) => Promise<void>) => {
    for (const p of order) await fn(p);
  };
  const add = (p: Path, m: Metric, value: number) => void results[p.name]![m].push(value);
  await each(async (p) => {
    const { value, cpuSeconds } = await withCpu(p.iperf.pid, () => iperfGBps(p, BULK, false));
    add(p, 'iperfOneWay', value);
    add(p, 'cpuPerGiB', cpuSeconds / (BULK / GIB));
  });
  await each(async (p) => add(p, 'iperfBothWays', await iperfGBps(p, BULK, true)));
  await each(async (p) => add(p, 'nodeOneWay', BULK / (await bulkOneWay(p.port, BULK)) / GB));
  await each(async (p) => add(p, 'nodeBothWays', (2 * BULK) / (await bulkBothWays(p.port, BULK)) / GB));
  await each(async (p) => {
    const { value: samples, cpuSeconds } = await withCpu(p.pid, () => pingPong(p.port, MESSAGE, SECONDS));
    add(p, 'p50', percentile(samples, 50));
    add(p, 'p99', percentile(samples, 99));
    // what the proxy spends on one small request and answer: latency alone hides a proxy that
    // buys its tail with CPU the build needs
    add(p, 'cpuPerRoundTrip', (cpuSeconds / samples.length) * 1e6);
  });
  // churn in short slices taken in turn (A B C A B C ...): a 2 s sample swung between 6.7k
  // and 11.4k conn/s for the same path on this shared machine, and slices put every slow
  // phase on all paths alike; each path still gets SECONDS in all
  const churned = new Map(order.map((p) => [p.name, { connections: 0, seconds: 0, cpu: 0 }]));
  for (let slice = 0; slice < CHURN_SLICES; slice++) {
    for (const p of order) {
      const { value, cpuSeconds } = await withCpu(p.pid, () =>
        churnCounted(p.port, CHURN_LOOPS, SECONDS / CHURN_SLICES),
      );
      const sum = churned.get(p.name)!;
      sum.connections += value.connections;
      sum.seconds += value.elapsedSeconds;
      sum.cpu += cpuSeconds;
    }
  }
  for (const p of order) {
    const sum = churned.get(p.name)!;
    add(p, 'churn', sum.connections / sum.seconds);
    add(p, 'cpuPer1000', (sum.cpu / sum.connections) * 1000);
  }
  await each(async (p) => add(p, 'rss', p.pid ? await measureRss(p) : NaN));
  const r = (name: string, m: Metric, digits = 2) => {
    const value = results[name]?.[m][round];
    return value === undefined || Number.isNaN(value) ? '-' : value.toFixed(digits);
  };
  console.log(
    `${PIN ? 'pinned' : 'unpinned'} round ${round + 1}/${ROUNDS}: ` +
      active
        .map(
          (p) =>
            `${p.name} iperf3 ${r(p.name, 'iperfOneWay')}/${r(p.name, 'iperfBothWays')} ` +
            `node ${r(p.name, 'nodeOneWay')}/${r(p.name, 'nodeBothWays')} GB/s ` +
            `p50 ${r(p.name, 'p50')}us p99 ${r(p.name, 'p99')}us ${r(p.name, 'churn', 0)} conn/s ` +
            `cpu ${r(p.name, 'cpuPerGiB', 3)}s/GiB ${r(p.name, 'cpuPer1000', 3)}s/1000conn rss ${r(p.name, 'rss', 0)}MiB`,
        )
        .join(' | '),
  );
}

export async function run(): Promise<void> {
  const version = haproxyVersion();
  if (!version) return missing('haproxy', 'apt-get install -y haproxy');
  const iperf = iperfVersion();
  if (!iperf) return missing('iperf3', 'DEBIAN_FRONTEND=noninteractive apt-get install -y iperf3');
  buildDist();
  if (PIN) execFileSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
  const only = process.env['BENCH_ONLY']?.split(',');
  const dir = mkdtempSync(join(tmpdir(), 'bench-sidecar-'));
  const peer = await startPeer();
  let iperfServer: IperfServer | undefined;
  const paths: Path[] = [];
  /** every proxy process started, for the cleanup */
  const hops: Hop[] = [];
  try {
    iperfServer = await startIperfServer(await freePort(), onCore0);
    paths.push({ name: 'direct', port: peer.port, iperf: { port: iperfServer.port } });
    const hop = async (start: Promise<Hop>) => {
      const started = await start;
      hops.push(started);
      return started;
    };
    paths.push({
      name: 'sidecar',
      ...(await hop(startSidecar(peer.port))),
      iperf: await hop(startSidecar(iperfServer.port)),
    });
    paths.push({
      name: 'haproxy',
      ...(await hop(startHaproxy(peer.port, dir))),
      iperf: await hop(startHaproxy(iperfServer.port, dir)),
    });
    const active = paths.filter((p) => !only || only.includes(p.name));
    const idleRss: Record<string, number> = {};
    for (const p of active) if (p.pid) idleRss[p.name] = rssMiB(p.pid);
    const iperfGBps = async (p: Path, bytes: number, bidir: boolean) =>
      (await iperfBulk(p.iperf.port, bytes, bidir, onCore0)).bytesPerSecond / GB;
    // warm-up: JIT and heap growth in every process, TCP autotuning
    for (const p of active) {
      await iperfGBps(p, Math.min(BULK, 256 * 2 ** 20), false);
      await iperfGBps(p, Math.min(BULK, 256 * 2 ** 20), true);
      await bulkOneWay(p.port, Math.min(BULK, 256 * 2 ** 20));
      await pingPong(p.port, MESSAGE, 0.3);
      await churn(p.port, CHURN_LOOPS, 0.3);
    }
    const summaries: Record<string, Record<string, unknown>> = {};
    for (const variant of VARIANTS) {
      if (variant === 'unpinned' && PIN) {
        // the running processes too: this one, iperf3's server, every proxy
        const pids = [process.pid, iperfServer.child.pid, ...hops.map((h) => h.pid)];
        for (const pid of pids) unpin(pid);
      }
      PIN = variant === 'pinned';
      const results: Record<string, Samples> = Object.fromEntries(
        active.map((p) => [p.name, emptySamples()]),
      );
      for (let round = 0; round < ROUNDS; round++) await measureRound(active, results, round, iperfGBps);
      // the proxies in front of iperf3 moved all its bulk: what did that leave behind?
      const iperfProxyRss = Object.fromEntries(
        active.filter((p) => p.iperf.pid).map((p) => [p.name, rssMiB(p.iperf.pid!)]),
      );
      summaries[variant] = report(variant, results, idleRss, iperfProxyRss, {
        haproxy: version,
        iperf3: iperf,
      });
    }
    const syscalls = await churnSyscalls(active);
    console.log(`results: ${writeResult('sidecar', { variants: summaries, syscalls })}`);
  } finally {
    for (const h of hops) h.child?.kill();
    iperfServer?.close();
    await peer.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * System calls per churn connection of each proxy (strace -c -f on the proxy process during one
 * churn slice of SECONDS), the same tool on the sidecar and on HAProxy; null without strace.
 */
async function churnSyscalls(active: Path[]): Promise<Record<string, SyscallCounts> | null> {
  if (!straceAvailable()) {
    console.log('system calls per connection: NOT RUN (strace is not installed: apt-get install -y strace)');
    return null;
  }
  const perConnection: Record<string, SyscallCounts> = {};
  for (const p of active) {
    if (!p.pid) continue;
    const { counts, result } = await countSyscalls(p.pid, () => churnCounted(p.port, CHURN_LOOPS, SECONDS));
    perConnection[p.name] = Object.fromEntries(
      Object.entries(counts)
        .map(([name, calls]) => [name, Math.round((calls / result.connections) * 100) / 100] as const)
        .filter(([, calls]) => calls >= 0.01)
        .sort((a, b) => b[1] - a[1]),
    );
  }
  const names = [...new Set(Object.values(perConnection).flatMap((c) => Object.keys(c)))];
  const proxies = Object.keys(perConnection);
  console.log(
    '\nsystem calls per churn connection (strace -c -f on the proxy process; strace slows it, so only counts)',
  );
  console.log(
    table(
      ['system call', ...proxies],
      names.map((name) => [name, ...proxies.map((p) => (perConnection[p]![name] ?? 0).toFixed(2))]),
    ),
  );
  return perConnection;
}

function report(
  variant: Variant,
  results: Record<string, Samples>,
  idleRss: Record<string, number>,
  iperfProxyRss: Record<string, number>,
  versions: { haproxy: string; iperf3: string },
): Record<string, unknown> {
  const med = (name: string, m: Metric) => (results[name] ? median(results[name][m]) : NaN);
  // per-round ratios (both paths measured back to back) cancel most of the machine's drift
  const ratio = (a: string, b: string, m: Metric) =>
    results[a] && results[b] ? median(results[a][m].map((v, i) => v / results[b]![m][i]!)) : NaN;
  // added latency: the proxy's p50/p99 minus direct's, per round
  const added = (name: string, m: Metric) =>
    results[name] && results['direct']
      ? median(results[name][m].map((v, i) => v - results['direct']![m][i]!))
      : NaN;
  const summary: Record<string, unknown> = {
    config: {
      rounds: ROUNDS,
      bulkBytes: BULK,
      secondsPerLatencyOrChurn: SECONDS,
      messageBytes: MESSAGE,
      churnLoops: CHURN_LOOPS,
      churnSlices: CHURN_SLICES,
      idleConnections: IDLE,
      pinned:
        variant === 'pinned'
          ? 'load generators + servers (node, iperf3) on core 0, proxy on core 1'
          : 'no: every process on every core',
      sidecarNodeFlags: SIDECAR_FLAGS,
      sidecarProcessSettings: SIDECAR_SETTINGS ? SIDECAR_ENV : "none (Node's defaults)",
      sidecarCommand: main.join(' '),
      sidecarEngine,
      haproxy: `${versions.haproxy}, mode tcp, ${HAPROXY_SPLICE_OPTIONS.map((o) => `option ${o.split(' ')[1]}`).join(', ')}, nbthread 1`,
      iperf3: `${versions.iperf3}, -n ${BULK} one way and --bidir, receiver-side rates`,
      node: process.version,
      metrics: {
        iperfOneWay: 'GB/s, iperf3 client to iperf3 server',
        iperfBothWays: 'GB/s, iperf3 --bidir, both directions added',
        nodeOneWay: 'GB/s, Node generator to Node peer',
        nodeBothWays: 'GB/s, Node generator and peer, both directions added',
        p50: 'us, 1 KiB ping-pong round trip',
        p99: 'us, 1 KiB ping-pong round trip',
        churn: 'connections/s',
        cpuPerGiB: 'proxy CPU seconds (user+sys) per GiB, iperf3 one way',
        cpuPer1000: 'proxy CPU seconds (user+sys) per 1,000 churn connections',
        cpuPerRoundTrip: 'proxy CPU microseconds (user+sys) per 1 KiB ping-pong round trip',
        rss: `MiB, proxy VmRSS with ${IDLE} idle connections`,
      },
    },
    medians: Object.fromEntries(
      Object.keys(results).map((name) => [name, Object.fromEntries(METRICS.map((m) => [m, med(name, m)]))]),
    ),
    idleRssMiB: idleRss,
    iperfProxyRssMiBAtEnd: iperfProxyRss,
    ratios: Object.fromEntries(
      METRICS.map((m) => [
        m,
        {
          sidecarOverDirect: ratio('sidecar', 'direct', m),
          sidecarOverHaproxy: ratio('sidecar', 'haproxy', m),
        },
      ]),
    ),
    addedLatencyUs: {
      sidecar: { p50: added('sidecar', 'p50'), p99: added('sidecar', 'p99') },
      haproxy: { p50: added('haproxy', 'p50'), p99: added('haproxy', 'p99') },
    },
    targets: {
      bulkGBps: 'iperf3, one way and both ways: at least HAProxy and at least 1.25',
      addedLatency: 'p50 and p99 no worse than HAProxy',
      churn: 'at least HAProxy',
      cpu: 'per GiB and per 1,000 connections: at most HAProxy (per round trip: reported)',
      rssMiBAt1000: 80,
    },
    rounds: results,
  };
  const row = (name: string) => [
    name,
    ...METRICS.map((m) => (PROXY_ONLY.includes(m) && name === 'direct' ? '-' : med(name, m))),
  ];
  const ratioRow = (label: string, a: string, b: string) => [
    label,
    ...METRICS.map((m) => (PROXY_ONLY.includes(m) && b === 'direct' ? '-' : ratio(a, b, m))),
  ];
  console.log(
    `\nsidecar, ${variant}: loopback data path (${ROUNDS} rounds, medians; ${variant === 'pinned' ? 'proxy on core 1, generators and servers on core 0' : 'every process on every core'}; ` +
      `sidecar on its ${sidecarEngine ?? '?'} data path ${SIDECAR_SETTINGS ? 'with its injected process settings' : "with Node's defaults"}; ` +
      `churn in ${CHURN_SLICES} interleaved slices per round)`,
  );
  console.log(
    table(
      [
        'path',
        'iperf3 1 way GB/s',
        'iperf3 2 ways GB/s',
        'Node-gen 1 way GB/s',
        'Node-gen 2 ways GB/s',
        'p50 us',
        'p99 us',
        'conn/s',
        'CPU s/GiB',
        'CPU s/1000 conn',
        'CPU us/round trip',
        `RSS MiB @${IDLE}`,
      ],
      [
        ...Object.keys(results).map(row),
        ...(results['sidecar'] && results['direct'] ? [ratioRow('sidecar/direct', 'sidecar', 'direct')] : []),
        ...(results['sidecar'] && results['haproxy']
          ? [ratioRow('sidecar/haproxy', 'sidecar', 'haproxy')]
          : []),
      ],
    ),
  );
  console.log(
    `added latency over direct (us, median of rounds): sidecar p50 ${added('sidecar', 'p50').toFixed(1)} ` +
      `p99 ${added('sidecar', 'p99').toFixed(1)}; haproxy p50 ${added('haproxy', 'p50').toFixed(1)} ` +
      `p99 ${added('haproxy', 'p99').toFixed(1)}`,
  );
  return summary;
}
