// The sidecar's data path on loopback (issue 6): bulk throughput one way and both ways, 1 KiB
// ping-pong latency, connection churn and RSS with 1,000 idle connections, for three paths
// measured in the same run and interleaved:
//   direct   client -> peer server
//   sidecar  client -> `node sidecar/main.ts` (its own process, as in production) -> peer
//   haproxy  client -> HAProxy 2.x, mode tcp, option splice-auto, one thread -> peer
// The client and the peer server (sidecar-load.ts) are the same code for all three.
//
// CPU placement (2 cores): this process (load generator and peer server, one event loop) is
// pinned to core 0 and the proxy under test to core 1. Each proxy gets a core of its own, as it
// would next to buildkitd, and the endpoints cost the same on every path, so "direct" is what the
// endpoints can do and a proxy that keeps up with them measures 1.0x. Unpinned, the three
// processes would compete for both cores and the scheduler would decide what gets measured.
// BENCH_PIN=0 turns pinning off. On a shared machine other work lands on both cores anyway:
// compare the per-round ratios, not the absolute numbers of one run.
//
// HAProxy must be installed (Debian: `apt-get install -y haproxy`); without it the benchmark
// says so and exits non-zero. Environment: BENCH_ROUNDS (5), BENCH_BULK_MIB (1024),
// BENCH_SECONDS (2, per latency/churn measurement), BENCH_SIDECAR_NODE_FLAGS (extra node flags
// for the sidecar, e.g. --cpu-prof), BENCH_SIDECAR_MAIN (see below), BENCH_ONLY (comma-separated
// paths, e.g. sidecar). RSS is read from /proc/<pid>/status (VmRSS) at the end of each round, so
// it includes whatever the bulk runs left behind, as it would in a long-lived pod.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { median, percentile, sleep, table, writeResult } from './lib.ts';
import { bulkBothWays, bulkOneWay, churn, openIdle, pingPong, startPeer } from './sidecar-load.ts';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const BULK = Number(process.env['BENCH_BULK_MIB'] ?? 1024) * 2 ** 20;
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 2);
const PIN = process.env['BENCH_PIN'] !== '0';
const SIDECAR_FLAGS = (process.env['BENCH_SIDECAR_NODE_FLAGS'] ?? '').split(' ').filter(Boolean);
const MESSAGE = 1024;
const CHURN_LOOPS = 4;
const IDLE = 1000;
const GB = 1e9;

// the source, as the sidecar tests run it; BENCH_SIDECAR_MAIN=dist/sidecar/main.js (after
// `npm run build`) measures the compiled JavaScript, without Node's type stripping (~17 MiB RSS)
const main =
  process.env['BENCH_SIDECAR_MAIN'] ?? fileURLToPath(new URL('../../sidecar/main.ts', import.meta.url));

interface Path {
  name: 'direct' | 'sidecar' | 'haproxy';
  port: number;
  /** the proxy process (not for direct) */
  pid?: number;
  child?: ChildProcess;
}

const pinned = (core: number, command: string, args: string[]): [string, string[]] =>
  PIN ? ['taskset', ['-c', String(core), command, ...args]] : [command, args];

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

/** The real sidecar, started the way the sidecar tests start it; its listen port from its log. */
async function startSidecar(upstreamPort: number): Promise<Path> {
  const [command, args] = pinned(1, process.execPath, [
    ...SIDECAR_FLAGS,
    main,
    '--listen',
    '127.0.0.1:0',
    '--stats',
    '127.0.0.1:0',
    '--upstream',
    `127.0.0.1:${upstreamPort}`,
    '--log-level',
    'info',
  ]);
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  for await (const line of lines) {
    const entry = JSON.parse(line) as { msg?: string; listen?: { port: number } };
    if (entry.msg === 'sidecar serving') {
      // keep draining its stdout so the child never blocks on a full pipe
      lines.on('line', () => undefined);
      return { name: 'sidecar', port: entry.listen!.port, pid: child.pid!, child };
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
    '  option splice-auto',
    '  timeout connect 10s',
    '  timeout client 1h',
    '  timeout server 1h',
    'listen bench',
    `  bind 127.0.0.1:${listenPort}`,
    `  server peer 127.0.0.1:${upstreamPort}`,
    '',
  ].join('\n');
}

async function startHaproxy(upstreamPort: number, dir: string): Promise<Path> {
  const port = await freePort();
  const config = join(dir, 'haproxy.cfg');
  writeFileSync(config, haproxyConfig(port, upstreamPort));
  execFileSync('haproxy', ['-c', '-q', '-f', config], { stdio: 'inherit' });
  const [command, args] = pinned(1, 'haproxy', ['-db', '-f', config]);
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitForPort(port, child, 'haproxy');
  return { name: 'haproxy', port, pid: child.pid!, child };
}

function haproxyVersion(): string | undefined {
  const result = spawnSync('haproxy', ['-v'], { encoding: 'utf8' });
  if (result.error) return undefined;
  return /HAProxy version (\S+)/.exec(result.stdout)?.[1] ?? 'unknown';
}

type Metric = 'oneWay' | 'bothWays' | 'p50' | 'p99' | 'churn' | 'rss';
const METRICS: Metric[] = ['oneWay', 'bothWays', 'p50', 'p99', 'churn', 'rss'];
type Samples = Record<Metric, number[]>;

async function measureRss(path: Path): Promise<number> {
  const close = await openIdle(path.port, IDLE);
  await sleep(500);
  const rss = rssMiB(path.pid!);
  await close();
  return rss;
}

export async function run(): Promise<void> {
  const version = haproxyVersion();
  if (!version) {
    console.error('sidecar bench: haproxy not found; install it with `apt-get install -y haproxy` (Debian)');
    process.exitCode = 1;
    return;
  }
  if (PIN) execFileSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
  const only = process.env['BENCH_ONLY']?.split(',');
  const dir = mkdtempSync(join(tmpdir(), 'bench-sidecar-'));
  const peer = await startPeer();
  const paths: Path[] = [{ name: 'direct', port: peer.port }];
  const results: Record<string, Samples> = {};
  try {
    paths.push(await startSidecar(peer.port));
    paths.push(await startHaproxy(peer.port, dir));
    const active = paths.filter((p) => !only || only.includes(p.name));
    const idleRss: Record<string, number> = {};
    for (const p of active) {
      results[p.name] = { oneWay: [], bothWays: [], p50: [], p99: [], churn: [], rss: [] };
      if (p.pid) idleRss[p.name] = rssMiB(p.pid);
    }
    // warm-up: JIT and heap growth in every process, TCP autotuning
    for (const p of active) {
      await bulkOneWay(p.port, Math.min(BULK, 256 * 2 ** 20));
      await pingPong(p.port, MESSAGE, 0.3);
      await churn(p.port, CHURN_LOOPS, 0.3);
    }
    for (let round = 0; round < ROUNDS; round++) {
      // rotate the order every round so no path always runs first or last
      const order = active.map((_, i) => active[(i + round) % active.length]!);
      const each = async (fn: (p: Path) => Promise<void>) => {
        for (const p of order) await fn(p);
      };
      await each(
        async (p) => void results[p.name]!.oneWay.push(BULK / (await bulkOneWay(p.port, BULK)) / GB),
      );
      await each(
        async (p) =>
          void results[p.name]!.bothWays.push((2 * BULK) / (await bulkBothWays(p.port, BULK)) / GB),
      );
      await each(async (p) => {
        const samples = await pingPong(p.port, MESSAGE, SECONDS);
        results[p.name]!.p50.push(percentile(samples, 50));
        results[p.name]!.p99.push(percentile(samples, 99));
      });
      await each(async (p) => void results[p.name]!.churn.push(await churn(p.port, CHURN_LOOPS, SECONDS)));
      await each(async (p) => {
        results[p.name]!.rss.push(p.pid ? await measureRss(p) : NaN);
      });
      const r = (name: string, m: Metric) => results[name]?.[m][round]?.toFixed(m === 'rss' ? 0 : 2) ?? '-';
      console.log(
        `round ${round + 1}/${ROUNDS}: ` +
          active
            .map(
              (p) =>
                `${p.name} ${r(p.name, 'oneWay')}/${r(p.name, 'bothWays')} GB/s ` +
                `p50 ${r(p.name, 'p50')}us p99 ${r(p.name, 'p99')}us ${r(p.name, 'churn')} conn/s rss ${r(p.name, 'rss')}MiB`,
            )
            .join(' | '),
      );
    }
    report(results, idleRss, version);
  } finally {
    for (const p of paths) p.child?.kill();
    await peer.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function report(results: Record<string, Samples>, idleRss: Record<string, number>, version: string): void {
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
      idleConnections: IDLE,
      pinned: PIN ? 'load generator + peer on core 0, proxy on core 1' : 'no',
      sidecarNodeFlags: SIDECAR_FLAGS,
      sidecarMain: main,
      haproxy: `${version}, mode tcp, option splice-auto, nbthread 1`,
      node: process.version,
    },
    medians: Object.fromEntries(
      Object.keys(results).map((name) => [name, Object.fromEntries(METRICS.map((m) => [m, med(name, m)]))]),
    ),
    idleRssMiB: idleRss,
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
      bulkGBps: 'at least HAProxy and at least 1.25',
      addedLatency: 'p50 and p99 no worse than HAProxy',
      churn: 'at least HAProxy',
      rssMiBAt1000: 80,
    },
    rounds: results,
  };
  const row = (name: string) => [
    name,
    med(name, 'oneWay'),
    med(name, 'bothWays'),
    med(name, 'p50'),
    med(name, 'p99'),
    med(name, 'churn'),
    name === 'direct' ? '-' : med(name, 'rss'),
  ];
  const ratioRow = (label: string, a: string, b: string) => [
    label,
    ratio(a, b, 'oneWay'),
    ratio(a, b, 'bothWays'),
    ratio(a, b, 'p50'),
    ratio(a, b, 'p99'),
    ratio(a, b, 'churn'),
    b === 'direct' ? '-' : ratio(a, b, 'rss'),
  ];
  console.log(
    `\nsidecar: loopback data path (${ROUNDS} rounds, medians; ${PIN ? 'proxy on core 1, client+server on core 0' : 'unpinned'})`,
  );
  console.log(
    table(
      ['path', '1 way GB/s', '2 ways GB/s', 'p50 us', 'p99 us', 'conn/s', `RSS MiB @${IDLE}`],
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
  console.log(`results: ${writeResult('sidecar', summary)}`);
}
