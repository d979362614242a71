// The activator's data path on loopback, with the activator in a process of its own
// (activator-process.ts, driven over IPC) and the clients and the upstream server in this one.
// Every measured figure has its baseline in the same run:
// 1. memory: RSS of the activator holding BENCH_HELD (1,000) connections for one target, each
//    client having sent a 99-byte HTTP/2-style preface (the connection preface, a SETTINGS, a
//    WINDOW_UPDATE and a PING frame carrying the client's index), against the RSS of the same
//    process holding none just before; both read after a full GC (--expose-gc), so the difference
//    is what the held connections keep alive. The V8 heap's difference is reported beside it.
//    Each round starts a fresh activator process and holds and releases twice: "fresh" is the
//    first time (what holding costs a process that never did), "again" the second (a long-lived
//    activator, which reuses what the first one freed). A throwaway cycle first warms this process.
// 2. release: from sending the switch to forward (performance.now() here) until every held
//    connection's first bytes reached the upstream server (here); per-connection p50/p90 and the
//    last one ("all"), and the CPU both processes used meanwhile. Every preface is checked byte
//    for byte upstream, and the activator must be back at 0 open connections between cycles.
// 3. bulk while spliced: BENCH_BULK_MIB (1024) MiB over BENCH_BULK_CONNECTIONS (4) connections at
//    once, client -> upstream ("up"; the upstream acknowledges with one byte per connection) and
//    upstream -> client ("down"), through the activator (a target in forward mode) and directly to
//    the same upstream server, alternated per round, after one 256 MiB warm-up of each; ratios
//    are taken per round. CPU: the activator process's user+sys (process.cpuUsage in the child,
//    read over IPC just before and after each transfer) per GiB moved, and this process's own
//    for reference; the activator's bytes per read and write system call from /proc/<pid>/io.
// BENCH_ROUNDS (3) rounds of each; medians reported.
//
// The child runs with the controller's process settings (CONTROLLER_NODE_OPTIONS and
// CONTROLLER_ENV: in production the activator lives in the controller's process);
// BENCH_ACTIVATOR_NODE_FLAGS replaces the node flags (an empty value for V8's defaults). It runs
// the TypeScript sources through Node's type stripping, which costs RSS of its own but nothing per
// connection. CPU placement as in the sidecar benchmark: this process on core 0 and the activator
// on core 1 (BENCH_PIN=0: unpinned). One Node event loop here drives both ends of every
// transfer, so "direct" is this process's limit, not the kernel's.
import { execFileSync, fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';

import type { ActivatorTarget } from '../../activator/index.ts';
import { CONTROLLER_ENV, CONTROLLER_NODE_OPTIONS } from '../../controller/options.ts';
import type { DriverCommand, DriverReply, DriverRequest, DriverUsage } from './activator-process.ts';
import { median, percentile, sleep, table, writeResult } from './lib.ts';
import { connectClient, type Client } from './sidecar-load.ts';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const HELD = Number(process.env['BENCH_HELD'] ?? 1000);
const STREAMS = Number(process.env['BENCH_BULK_CONNECTIONS'] ?? 4);
const BULK_PER_STREAM = Math.floor((Number(process.env['BENCH_BULK_MIB'] ?? 1024) * 2 ** 20) / STREAMS);
const BULK = BULK_PER_STREAM * STREAMS;
const PIN = process.env['BENCH_PIN'] !== '0' && availableParallelism() >= 2;
const NODE_FLAGS = (process.env['BENCH_ACTIVATOR_NODE_FLAGS'] ?? CONTROLLER_NODE_OPTIONS)
  .split(' ')
  .filter(Boolean);
const GB = 1e9;
const GIB = 2 ** 30;
const MIB = 2 ** 20;
/** connects in flight at once while filling the hold queue (the activator's backlog is 1024) */
const CONNECT_BATCH = 100;
const HELD_KEY = 'bench/held';
const BULK_KEY = 'bench/bulk';

// --- the activator process ----------------------------------------------------------------------

interface Driver {
  pid: number;
  usage(gc?: boolean): Promise<DriverUsage>;
  setTargets(targets: ActivatorTarget[]): Promise<void>;
  close(): Promise<void>;
}

async function startDriver(): Promise<Driver> {
  const child: ChildProcess = fork(
    fileURLToPath(new URL('./activator-process.ts', import.meta.url)),
    HELD > 1000 ? [String(HELD)] : [],
    {
      execArgv: [...NODE_FLAGS, '--expose-gc'],
      env: { ...process.env, ...CONTROLLER_ENV },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    },
  );
  const pending = new Map<number, { resolve(u: DriverUsage | undefined): void; reject(e: Error): void }>();
  let nextId = 1;
  let ready: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (ready = resolve));
  child.on('message', (reply: DriverReply) => {
    if ('type' in reply) return ready();
    const waiter = pending.get(reply.id);
    pending.delete(reply.id);
    if (reply.ok) waiter?.resolve(reply.result);
    else waiter?.reject(new Error(`activator process: ${reply.error}`));
  });
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code, signal) => {
      const error = new Error(`activator process exited (${code ?? signal})`);
      pending.forEach((w) => w.reject(error));
      reject(error);
    }),
  );
  exited.catch(() => undefined);
  await Promise.race([started, exited]);
  const call = (command: DriverRequest) =>
    new Promise<DriverUsage | undefined>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      child.send({ ...command, id } as DriverCommand);
    });
  if (PIN) execFileSync('taskset', ['-a', '-p', '-c', '1', String(child.pid)], { stdio: 'ignore' });
  return {
    pid: child.pid!,
    usage: async (gc = false) => (await call({ type: 'usage', gc }))!,
    setTargets: async (targets) => void (await call({ type: 'setTargets', targets })),
    close: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((resolve) => child.once('exit', resolve));
      await call({ type: 'close' }).catch(() => undefined);
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    },
  };
}

const cpuSeconds = (cpu: NodeJS.CpuUsage) => (cpu.user + cpu.system) / 1e6;

// --- the upstream server (this process) --------------------------------------------------------
//
// Its protocol is chosen by the first byte a connection sends:
//   'P' (an HTTP/2 preface)  release test: records when the first bytes arrived, then checks the
//                            whole PREFACE_BYTES against the preface of the index in its PING
//   'S' + u64 length         sink: reads `length` bytes, then answers one byte
//   'R' + u64 length         source: sends `length` bytes
// A FIN is answered with a FIN.

const CHUNK = Buffer.alloc(MIB, 0x61);
const HEADER = 9;

function frame(type: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  return Buffer.concat([head, payload]);
}

/** What a gRPC client sends before it waits for the server: 99 bytes, unique per index. */
function preface(index: number): Buffer {
  const settings = Buffer.alloc(36);
  [
    [0x1, 4096], // HEADER_TABLE_SIZE
    [0x2, 0], // ENABLE_PUSH
    [0x3, 100], // MAX_CONCURRENT_STREAMS
    [0x4, 4 * MIB], // INITIAL_WINDOW_SIZE
    [0x5, 16384], // MAX_FRAME_SIZE
    [0x6, 8192], // MAX_HEADER_LIST_SIZE
  ].forEach(([id, value], i) => {
    settings.writeUInt16BE(id!, i * 6);
    settings.writeUInt32BE(value!, i * 6 + 2);
  });
  const increment = Buffer.alloc(4);
  increment.writeUInt32BE(4 * MIB);
  const ping = Buffer.alloc(8);
  ping.writeBigUInt64BE(BigInt(index));
  return Buffer.concat([
    Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
    frame(0x4, settings),
    frame(0x8, increment),
    frame(0x6, ping),
  ]);
}
const PREFACE_BYTES = preface(0).length;

/** Writes `length` bytes of CHUNK with backpressure. */
function sendBytes(socket: net.Socket, length: number): void {
  let left = length;
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, CHUNK.length);
      left -= n;
      if (!socket.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n)) && left > 0) {
        socket.once('drain', pump);
        return;
      }
    }
  };
  pump();
}

interface Arrival {
  /** performance.now() when its first bytes arrived */
  first: number;
  /** all PREFACE_BYTES arrived and equal the preface of its index */
  intact: boolean;
}

interface UpstreamServer {
  port: number;
  /** prefaces received (by client index) since the last reset */
  arrivals: Map<number, Arrival>;
  /** resolves once `count` prefaces have fully arrived */
  whenPrefaces(count: number): Promise<void>;
  close(): Promise<void>;
}

async function startUpstream(): Promise<UpstreamServer> {
  const sockets = new Set<net.Socket>();
  const arrivals = new Map<number, Arrival>();
  let waiting: { count: number; resolve: () => void } | undefined;
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.on('end', () => socket.end());
    let first = 0;
    let head: Buffer | undefined;
    const onHead = (chunk: Buffer): void => {
      if (!head) first = performance.now();
      head = head ? Buffer.concat([head, chunk]) : chunk;
      if (head[0] === 0x50) {
        if (head.length < PREFACE_BYTES) return;
        socket.off('data', onHead);
        const index = Number(head.readBigUInt64BE(PREFACE_BYTES - 8));
        arrivals.set(index, { first, intact: head.length === PREFACE_BYTES && head.equals(preface(index)) });
        if (waiting && arrivals.size >= waiting.count) waiting.resolve();
        return;
      }
      if (head.length < HEADER) return;
      socket.off('data', onHead);
      const length = Number(head.readBigUInt64BE(1));
      if (head[0] === 0x52) return sendBytes(socket, length);
      let received = head.length - HEADER;
      const ack = () => socket.write(CHUNK.subarray(0, 1));
      if (received >= length) return void ack();
      socket.on('data', (c: Buffer) => {
        received += c.length;
        if (received === length) ack();
      });
    };
    socket.on('data', onHead);
  });
  server.maxConnections = 100_000;
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve));
  return {
    port: (server.address() as AddressInfo).port,
    arrivals,
    whenPrefaces: (count) =>
      arrivals.size >= count
        ? Promise.resolve()
        : new Promise((resolve) => (waiting = { count, resolve: () => ((waiting = undefined), resolve()) })),
    close: () => {
      sockets.forEach((s) => s.destroy());
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

// --- clients (this process) ---------------------------------------------------------------------

async function closeAll(clients: Client[]): Promise<void> {
  for (const c of clients) c.socket.end();
  await Promise.all(clients.map((c) => c.closed));
}

async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`activator bench: ${what} took longer than ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function until(what: string, check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`activator bench: ${what} not reached within ${ms} ms`);
    await sleep(20);
  }
}

// --- the measurements ---------------------------------------------------------------------------

interface Ports {
  held: number;
  bulk: number;
  upstream: number;
}

const targets = (ports: Ports, heldMode: 'hold' | 'forward'): ActivatorTarget[] => {
  const upstream = { host: '127.0.0.1', port: ports.upstream };
  return [
    {
      key: HELD_KEY,
      port: ports.held,
      mode: heldMode === 'hold' ? { kind: 'hold' } : { kind: 'forward', upstream },
    },
    { key: BULK_KEY, port: ports.bulk, mode: { kind: 'forward', upstream } },
  ];
};

interface Cycle {
  rssBeforeMiB: number;
  rssHeldMiB: number;
  rssBytesPerHeld: number;
  heapBytesPerHeld: number;
  releaseP50Ms: number;
  releaseP90Ms: number;
  releaseTotalMs: number;
  /** until the child answered the setTargets that released them */
  switchMs: number;
  /** activator CPU (user+sys) from the switch until every preface arrived, ms */
  releaseCpuMs: number;
  /** this process's CPU (clients, upstream accepting) over the same time, ms */
  releaseBenchCpuMs: number;
}

/** Holds HELD connections, releases them, closes them; the activator is back at 0 open after. */
async function holdAndRelease(driver: Driver, upstream: UpstreamServer, ports: Ports): Promise<Cycle> {
  await driver.setTargets(targets(ports, 'hold'));
  await until('an empty activator', async () => (await driver.usage()).stats.open === 0);
  upstream.arrivals.clear();
  const before = await driver.usage(true);
  const clients: Client[] = [];
  for (let i = 0; i < HELD; i += CONNECT_BATCH) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(CONNECT_BATCH, HELD - i) }, async (_, j) => {
        const client = await connectClient(ports.held);
        client.socket.write(preface(i + j));
        return client;
      }),
    );
    clients.push(...batch);
  }
  await until(`${HELD} held connections with their prefaces read`, async () => {
    const { stats } = await driver.usage();
    return stats.held === HELD && stats.bufferedBytes === HELD * PREFACE_BYTES;
  });
  const held = await driver.usage(true);
  if (held.stats.held !== HELD) throw new Error(`activator bench: ${held.stats.held} held, not ${HELD}`);

  const delivered = upstream.whenPrefaces(HELD);
  const selfBefore = process.cpuUsage();
  const t0 = performance.now();
  await driver.setTargets(targets(ports, 'forward'));
  const switchMs = performance.now() - t0;
  await within(30_000, `delivering ${HELD} released prefaces`, delivered);
  const releaseBenchCpuMs = cpuSeconds(process.cpuUsage(selfBefore)) * 1000;
  const after = await driver.usage();
  const latencies = [...upstream.arrivals.values()].map((a) => a.first - t0).sort((a, b) => a - b);
  const broken = [...upstream.arrivals.values()].filter((a) => !a.intact).length;
  if (upstream.arrivals.size !== HELD || broken) {
    throw new Error(`activator bench: ${upstream.arrivals.size} prefaces arrived, ${broken} not intact`);
  }
  await within(30_000, 'closing the released connections', closeAll(clients));
  return {
    rssBeforeMiB: before.rss / MIB,
    rssHeldMiB: held.rss / MIB,
    rssBytesPerHeld: (held.rss - before.rss) / HELD,
    heapBytesPerHeld: (held.heapUsed - before.heapUsed) / HELD,
    releaseP50Ms: percentile(latencies, 50),
    releaseP90Ms: percentile(latencies, 90),
    releaseTotalMs: latencies[latencies.length - 1]!,
    switchMs,
    releaseCpuMs: (cpuSeconds(after.cpu) - cpuSeconds(held.cpu)) * 1000,
    releaseBenchCpuMs,
  };
}

type Direction = 'up' | 'down';
type PathName = 'direct' | 'activator';

interface BulkSample {
  GBps: number;
  /** the activator process's user+sys per GiB moved */
  activatorCpuPerGiB: number;
  /** the same, user and sys apart */
  activatorUserPerGiB: number;
  activatorSysPerGiB: number;
  /** the activator's CPU seconds per second of the transfer (1.0: one core busy) */
  activatorCores: number;
  /** this process's user+sys per GiB moved */
  benchCpuPerGiB: number;
  /** the activator's average read and write system call, KiB (/proc/<pid>/io; NaN elsewhere) */
  activatorReadKiB: number;
  activatorWriteKiB: number;
}

interface Io {
  rchar: number;
  wchar: number;
  syscr: number;
  syscw: number;
}

/** A process's read/write system calls and bytes so far (Linux), sockets included. */
function ioOf(pid: number): Io | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/io`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)`, 'm').exec(text)?.[1]);
    return { rchar: field('rchar'), wchar: field('wchar'), syscr: field('syscr'), syscw: field('syscw') };
  } catch {
    return undefined;
  }
}

/** BULK bytes over STREAMS connections at once, one direction; CPU read around the transfer only. */
async function bulk(driver: Driver, port: number, direction: Direction, total = BULK): Promise<BulkSample> {
  const per = Math.floor(total / STREAMS);
  const clients = await Promise.all(Array.from({ length: STREAMS }, () => connectClient(port)));
  const head = Buffer.alloc(HEADER);
  head.write(direction === 'up' ? 'S' : 'R', 0);
  head.writeBigUInt64BE(BigInt(per), 1);
  const childBefore = await driver.usage();
  const ioBefore = ioOf(driver.pid);
  const selfBefore = process.cpuUsage();
  const start = performance.now();
  await within(
    120_000,
    `bulk ${direction} to ${port}`,
    Promise.all(
      clients.map(async (c) => {
        const done = c.receive(direction === 'up' ? 1 : per);
        c.socket.write(head);
        if (direction === 'up') sendBytes(c.socket, per);
        await done;
      }),
    ),
  );
  const seconds = (performance.now() - start) / 1000;
  const self = cpuSeconds(process.cpuUsage(selfBefore));
  const ioAfter = ioOf(driver.pid);
  const childAfter = await driver.usage();
  await closeAll(clients);
  const perCall = (bytes: 'rchar' | 'wchar', calls: 'syscr' | 'syscw') =>
    ioBefore && ioAfter
      ? (ioAfter[bytes] - ioBefore[bytes]) / (ioAfter[calls] - ioBefore[calls]) / 1024
      : NaN;
  const gib = (per * STREAMS) / GIB;
  return {
    GBps: (per * STREAMS) / seconds / GB,
    activatorCpuPerGiB: (cpuSeconds(childAfter.cpu) - cpuSeconds(childBefore.cpu)) / gib,
    activatorUserPerGiB: (childAfter.cpu.user - childBefore.cpu.user) / 1e6 / gib,
    activatorSysPerGiB: (childAfter.cpu.system - childBefore.cpu.system) / 1e6 / gib,
    activatorCores: (cpuSeconds(childAfter.cpu) - cpuSeconds(childBefore.cpu)) / seconds,
    benchCpuPerGiB: self / gib,
    activatorReadKiB: perCall('rchar', 'syscr'),
    activatorWriteKiB: perCall('wchar', 'syscw'),
  };
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const BULK_KEYS = ['direct up', 'activator up', 'direct down', 'activator down'] as const;
type BulkKey = (typeof BULK_KEYS)[number];
const DIRECTIONS = ['up', 'down'] as const;

/** One round of the memory and release measurement, in an activator process of its own. */
interface HoldRound {
  /** RSS right after start (targets set, a full GC) */
  startRssMiB: number;
  /** the first hold and release in the fresh process: what holding costs in memory */
  fresh: Cycle;
  /** the same again in that process: the steady state of a long-lived activator */
  again: Cycle;
}

const CYCLES = ['fresh', 'again'] as const;

interface ActivatorProcessRss {
  /** the bulk activator's RSS after start and after the bulk rounds, MiB */
  startMiB: number;
  endMiB: number;
}

export async function run(): Promise<void> {
  if (PIN) execFileSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
  const upstream = await startUpstream();
  const drivers = new Set<Driver>();
  const start = async () => {
    const driver = await startDriver();
    drivers.add(driver);
    return driver;
  };
  const stop = async (driver: Driver) => {
    await driver.close();
    drivers.delete(driver);
  };
  try {
    const ports: Ports = { held: await freePort(), bulk: await freePort(), upstream: upstream.port };

    // 1 and 2: memory and release, a fresh activator process per round, after a warm-up of this
    // process (its clients and upstream) with a throwaway one
    const warm = await start();
    await holdAndRelease(warm, upstream, ports);
    await stop(warm);
    const hold: HoldRound[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const driver = await start();
      await driver.setTargets(targets(ports, 'hold'));
      const startRssMiB = (await driver.usage(true)).rss / MIB;
      const fresh = await holdAndRelease(driver, upstream, ports);
      const again = await holdAndRelease(driver, upstream, ports);
      await stop(driver);
      hold.push({ startRssMiB, fresh, again });
      const line = (c: Cycle) =>
        `RSS ${c.rssBeforeMiB.toFixed(1)} -> ${c.rssHeldMiB.toFixed(1)} MiB ` +
        `(${(c.rssBytesPerHeld / 1024).toFixed(2)} KiB each, heap ${(c.heapBytesPerHeld / 1024).toFixed(2)} KiB), ` +
        `release p50 ${c.releaseP50Ms.toFixed(1)} p90 ${c.releaseP90Ms.toFixed(1)} all ${c.releaseTotalMs.toFixed(1)} ms`;
      console.log(
        `hold ${round + 1}/${ROUNDS}, ${HELD} held: fresh process ${line(fresh)} | again ${line(again)}`,
      );
    }

    // 3: bulk through one activator process, against direct, after a warm-up of each
    const driver = await start();
    await driver.setTargets(targets(ports, 'hold'));
    const startMiB = (await driver.usage(true)).rss / MIB;
    const paths: Record<PathName, number> = { direct: upstream.port, activator: ports.bulk };
    for (const direction of DIRECTIONS) {
      for (const path of ['direct', 'activator'] as const) {
        await bulk(driver, paths[path], direction, Math.min(BULK, 256 * MIB));
      }
    }
    const samples = Object.fromEntries(BULK_KEYS.map((k) => [k, [] as BulkSample[]])) as Record<
      BulkKey,
      BulkSample[]
    >;
    for (let round = 0; round < ROUNDS; round++) {
      // alternate which path goes first so neither always runs first or last
      const order: PathName[] = round % 2 ? ['activator', 'direct'] : ['direct', 'activator'];
      for (const direction of DIRECTIONS) {
        for (const path of order) {
          samples[`${path} ${direction}`].push(await bulk(driver, paths[path], direction));
        }
      }
      const line = (k: BulkKey) => {
        const s = samples[k][round]!;
        return (
          `${k} ${s.GBps.toFixed(2)} GB/s` +
          (k.startsWith('activator') ? ` (${s.activatorCpuPerGiB.toFixed(2)} s/GiB)` : '')
        );
      };
      console.log(`bulk ${round + 1}/${ROUNDS}: ${BULK_KEYS.map(line).join(' | ')}`);
    }
    const endMiB = (await driver.usage(true)).rss / MIB;
    report(hold, samples, { startMiB, endMiB });
  } finally {
    for (const driver of drivers) await driver.close();
    await upstream.close();
  }
}

function report(
  hold: HoldRound[],
  samples: Record<BulkKey, BulkSample[]>,
  bulkProcess: ActivatorProcessRss,
): void {
  const holdMedian = (cycle: 'fresh' | 'again', m: keyof Cycle) => median(hold.map((r) => r[cycle][m]));
  const bulkMedian = (k: BulkKey, m: keyof BulkSample) => median(samples[k].map((s) => s[m]));
  // per-round ratios (both paths measured back to back) cancel most of the machine's drift
  const ratio = (d: Direction) =>
    median(samples[`activator ${d}`].map((s, i) => s.GBps / samples[`direct ${d}`][i]!.GBps));
  const cycleMetrics = Object.keys(hold[0]!.fresh) as (keyof Cycle)[];
  const bulkMetrics = Object.keys(samples['direct up'][0]!) as (keyof BulkSample)[];
  const summary = {
    config: {
      rounds: ROUNDS,
      held: HELD,
      prefaceBytes: PREFACE_BYTES,
      bulkBytes: BULK,
      bulkConnections: STREAMS,
      pinned: PIN ? 'clients and upstream (this process) on core 0, activator on core 1' : 'no',
      activatorNodeFlags: NODE_FLAGS,
      activatorEnv: CONTROLLER_ENV,
      node: process.version,
      metrics: {
        fresh: 'the first hold and release in a freshly started activator process (one per round)',
        again: 'the second, in the same process',
        rssBeforeMiB: 'activator RSS after a full GC, holding nothing',
        rssHeldMiB: `activator RSS after a full GC, holding ${HELD}`,
        rssBytesPerHeld: '(rssHeld - rssBefore) / held',
        heapBytesPerHeld: 'the same for the V8 heap in use',
        releaseP50Ms:
          'ms from sending the switch to forward until a connection’s first bytes reached the upstream',
        releaseTotalMs: 'the same for the last of them',
        switchMs: 'ms until the activator process answered the setTargets that released them',
        releaseCpuMs: 'activator user+sys ms from the switch until every preface arrived',
        releaseBenchCpuMs: 'this process (clients, upstream) user+sys ms over the same time',
        GBps: `GB/s (1e9 bytes), ${BULK} bytes over ${STREAMS} connections at once`,
        activatorCpuPerGiB: 'activator process user+sys seconds per GiB moved',
        activatorUserPerGiB: 'the same, user only',
        activatorSysPerGiB: 'the same, sys only',
        activatorCores: 'activator CPU seconds per second of transfer (1: one core busy)',
        benchCpuPerGiB: 'this process (clients and upstream) user+sys seconds per GiB moved',
        activatorReadKiB: 'bytes per read system call of the activator process (/proc/<pid>/io), KiB',
        activatorWriteKiB: 'bytes per write system call of the activator process, KiB',
      },
    },
    medians: {
      startRssMiB: median(hold.map((r) => r.startRssMiB)),
      ...Object.fromEntries(
        CYCLES.map((c) => [c, Object.fromEntries(cycleMetrics.map((m) => [m, holdMedian(c, m)]))]),
      ),
      bulk: Object.fromEntries(
        BULK_KEYS.map((k) => [k, Object.fromEntries(bulkMetrics.map((m) => [m, bulkMedian(k, m)]))]),
      ),
    },
    ratios: { activatorOverDirect: { up: ratio('up'), down: ratio('down') } },
    bulkActivatorRssMiB: bulkProcess,
    rounds: { hold, bulk: samples },
  };
  console.log(
    `\nactivator: loopback (${ROUNDS} rounds, medians; ` +
      `${PIN ? 'activator on core 1, clients and upstream on core 0' : 'unpinned'}; ` +
      `activator node flags: ${NODE_FLAGS.join(' ') || "V8's defaults"})`,
  );
  const kib = (bytes: number) => bytes / 1024;
  const cycleRow = (label: string, c: (m: keyof Cycle) => number): (string | number)[] => [
    label,
    c('rssBeforeMiB'),
    c('rssHeldMiB'),
    kib(c('rssBytesPerHeld')),
    kib(c('heapBytesPerHeld')),
    c('releaseP50Ms'),
    c('releaseP90Ms'),
    c('releaseTotalMs'),
    c('releaseCpuMs'),
    c('releaseBenchCpuMs'),
  ];
  console.log(
    table(
      [
        `${HELD} held, ${PREFACE_BYTES} B each`,
        'RSS 0 held MiB',
        `RSS ${HELD} held MiB`,
        'KiB RSS / held',
        'KiB heap / held',
        'release p50 ms',
        'p90 ms',
        'all ms',
        'activator CPU ms',
        'bench CPU ms',
      ],
      [
        ...hold.flatMap((r, i) => CYCLES.map((c) => cycleRow(`round ${i + 1} ${c}`, (m) => r[c][m]))),
        ...CYCLES.map((c) => cycleRow(`median ${c}`, (m) => holdMedian(c, m))),
      ],
    ),
  );
  console.log('');
  console.log(
    table(
      [
        `${BULK / MIB} MiB over ${STREAMS} conns`,
        'direct GB/s',
        'activator GB/s',
        'activator/direct',
        'activator CPU s/GiB',
        'user / sys',
        'activator cores',
        'read/write KiB',
        'bench CPU s/GiB direct',
        'via activator',
      ],
      DIRECTIONS.map((d) => [
        d === 'up' ? 'client -> upstream' : 'upstream -> client',
        bulkMedian(`direct ${d}`, 'GBps'),
        bulkMedian(`activator ${d}`, 'GBps'),
        ratio(d),
        bulkMedian(`activator ${d}`, 'activatorCpuPerGiB'),
        `${bulkMedian(`activator ${d}`, 'activatorUserPerGiB').toFixed(2)} / ${bulkMedian(`activator ${d}`, 'activatorSysPerGiB').toFixed(2)}`,
        bulkMedian(`activator ${d}`, 'activatorCores'),
        `${bulkMedian(`activator ${d}`, 'activatorReadKiB').toFixed(1)} / ${bulkMedian(`activator ${d}`, 'activatorWriteKiB').toFixed(1)}`,
        bulkMedian(`direct ${d}`, 'benchCpuPerGiB'),
        bulkMedian(`activator ${d}`, 'benchCpuPerGiB'),
      ]),
    ),
  );
  console.log(
    `activator process RSS: ${median(hold.map((r) => r.startRssMiB)).toFixed(1)} MiB after start (median); ` +
      `the bulk one ${bulkProcess.startMiB.toFixed(1)} MiB before the bulk rounds, ${bulkProcess.endMiB.toFixed(1)} MiB after`,
  );
  console.log(`results: ${writeResult('activator', summary)}`);
}
