// Load generators and peer servers of the sidecar benchmark, identical for every path (direct,
// through the sidecar, through HAProxy):
// - iperf3 (native, its own processes) for bulk throughput: one Node event loop cannot push
//   much more than 1.25 GB/s through loopback, so with the Node generator "direct" itself, and
//   any proxy, would top out there;
// - the Node generator and peer (the benchmark's own process) for bulk too, and for what iperf3
//   does not measure: ping-pong latency, connection churn and idle connections.
//
// The peer speaks a tiny protocol chosen by the first byte the client sends:
//   'S' + u64 length  sink: reads `length` bytes, then answers one byte (all data arrived)
//   'B' + u64 length  both ways: sends `length` bytes while reading `length`, then one byte
//   anything else     echo: every byte is sent back (ping-pong and connection churn)
// Sending reuses one 1 MiB buffer (content does not matter here; the unit tests check content),
// and client sockets read into one reused 1 MiB buffer (`onread`), so the generator allocates
// nothing per chunk. Server-side sockets cannot take `onread` (net.Server has no such option):
// they read 64 KiB chunks like any Node server.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';

const CHUNK = Buffer.alloc(1 << 20, 0x61);
// every client reads into this one buffer: the callback only counts, so sharing it is safe
const RECEIVE = Buffer.allocUnsafe(1 << 20);
const HEADER = 9;

export interface Peer {
  port: number;
  /** server-side sockets open now */
  connections(): number;
  close(): Promise<void>;
}

/** Writes `length` bytes of CHUNK with backpressure; `done` once all are handed to the kernel. */
function sendBytes(socket: net.Socket, length: number, done: () => void): void {
  let left = length;
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, CHUNK.length);
      left -= n;
      const ok = socket.write(
        n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n),
        left === 0 ? done : undefined,
      );
      if (!ok && left > 0) {
        socket.once('drain', pump);
        return;
      }
    }
  };
  pump();
}

export async function startPeer(): Promise<Peer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.on('end', () => socket.end());
    let header: Buffer | undefined;
    const onHeader = (chunk: Buffer): void => {
      header = header ? Buffer.concat([header, chunk]) : chunk;
      const mode = header[0];
      if (mode !== 0x53 && mode !== 0x42) {
        // echo
        socket.off('data', onHeader);
        socket.on('data', (c: Buffer) => socket.write(c));
        socket.write(header);
        return;
      }
      if (header.length < HEADER) return;
      socket.off('data', onHeader);
      const length = Number(header.readBigUInt64BE(1));
      let received = header.length - HEADER;
      let sent = mode === 0x53;
      const maybeAck = (): void => {
        if (sent && received === length) socket.write(CHUNK.subarray(0, 1));
      };
      socket.on('data', (c: Buffer) => {
        received += c.length;
        if (received === length) maybeAck();
      });
      if (mode === 0x42) {
        sendBytes(socket, length, () => {
          sent = true;
          maybeAck();
        });
      } else maybeAck();
    };
    socket.on('data', onHeader);
  });
  server.maxConnections = 100_000;
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => sockets.size,
    close: () => {
      sockets.forEach((s) => s.destroy());
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

export interface Client {
  socket: net.Socket;
  /** resolves once `bytes` more bytes have arrived (counted from the call) */
  receive(bytes: number): Promise<void>;
  closed: Promise<void>;
}

/** A client socket reading into a reused buffer; only byte counts are kept. */
export function connectClient(port: number): Promise<Client> {
  let received = 0;
  let target = Infinity;
  let wake: (() => void) | undefined;
  let fail: ((error: Error) => void) | undefined;
  return new Promise((resolve, reject) => {
    const socket = net.connect({
      host: '127.0.0.1',
      port,
      noDelay: true,
      allowHalfOpen: true,
      onread: {
        buffer: RECEIVE,
        callback: (n: number) => {
          received += n;
          if (received >= target && wake) {
            const w = wake;
            wake = fail = undefined;
            w();
          }
          return true;
        },
      },
    });
    const closed = new Promise<void>((r) =>
      socket.once('close', () => {
        fail?.(new Error(`connection closed after ${received}/${target} bytes`));
        r();
      }),
    );
    socket.once('error', reject);
    socket.once('connect', () =>
      resolve({
        socket,
        closed,
        receive(bytes) {
          target = received + bytes;
          if (received >= target) return Promise.resolve();
          return new Promise<void>((r, j) => {
            wake = r;
            fail = j;
          });
        },
      }),
    );
  });
}

function header(mode: 'S' | 'B', length: number): Buffer {
  const h = Buffer.alloc(HEADER);
  h.write(mode, 0);
  h.writeBigUInt64BE(BigInt(length), 1);
  return h;
}

/**
 * Seconds for one peer exchange: 'S' sends `length` bytes and waits for the peer's 1-byte receipt;
 * 'B' also receives `length` bytes from the peer at the same time.
 */
async function timedBulk(port: number, mode: 'S' | 'B', length: number): Promise<number> {
  const client = await connectClient(port);
  const start = performance.now();
  const done = client.receive(mode === 'B' ? length + 1 : 1);
  client.socket.write(header(mode, length));
  sendBytes(client.socket, length, () => undefined);
  await done;
  const seconds = (performance.now() - start) / 1000;
  client.socket.end();
  await client.closed;
  return seconds;
}

/** Seconds to move `length` bytes one way (client to peer) and get the peer's receipt. */
export const bulkOneWay = (port: number, length: number): Promise<number> => timedBulk(port, 'S', length);

/** Seconds to move `length` bytes each way at once over one connection. */
export const bulkBothWays = (port: number, length: number): Promise<number> => timedBulk(port, 'B', length);

/** Round-trip times in microseconds of `size`-byte messages, one in flight, for `seconds`. */
export async function pingPong(port: number, size: number, seconds: number): Promise<number[]> {
  const client = await connectClient(port);
  const message = Buffer.alloc(size, 0x65);
  const samples: number[] = [];
  // warm the path (JIT in every process on it) before recording
  for (let i = 0; i < 200; i++) {
    const back = client.receive(size);
    client.socket.write(message);
    await back;
  }
  const end = performance.now() + seconds * 1000;
  for (;;) {
    const t0 = performance.now();
    if (t0 > end) break;
    const back = client.receive(size);
    client.socket.write(message);
    await back;
    samples.push((performance.now() - t0) * 1000);
  }
  client.socket.end();
  await client.closed;
  return samples.sort((a, b) => a - b);
}

/** Connections per second: connect, send a byte, get it back, close; `loops` in parallel. */
export async function churn(port: number, loops: number, seconds: number): Promise<number> {
  const { connections, elapsedSeconds } = await churnCounted(port, loops, seconds);
  return connections / elapsedSeconds;
}

/** As churn, with how many connections it made and in how long (for CPU per connection). */
export async function churnCounted(
  port: number,
  loops: number,
  seconds: number,
): Promise<{ connections: number; elapsedSeconds: number }> {
  const one = Buffer.from('e');
  let done = 0;
  const end = performance.now() + seconds * 1000;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: loops }, async () => {
      while (performance.now() < end) {
        const client = await connectClient(port);
        const back = client.receive(1);
        client.socket.write(one);
        await back;
        client.socket.end();
        await client.closed;
        done++;
      }
    }),
  );
  return { connections: done, elapsedSeconds: (performance.now() - start) / 1000 };
}

/** Opens `count` connections that each completed one echo (so the far side is connected too). */
export async function openIdle(port: number, count: number): Promise<() => Promise<void>> {
  const clients: Client[] = [];
  const one = Buffer.from('e');
  const BATCH = 100;
  for (let i = 0; i < count; i += BATCH) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(BATCH, count - i) }, async () => {
        const client = await connectClient(port);
        const back = client.receive(1);
        client.socket.write(one);
        await back;
        return client;
      }),
    );
    clients.push(...batch);
  }
  return async () => {
    for (const c of clients) c.socket.end();
    await Promise.all(clients.map((c) => c.closed));
  };
}

// --- iperf3 -----------------------------------------------------------------------------------

/** Wraps a command, e.g. in `taskset -c 0`. */
export type Launcher = (command: string, args: string[]) => [string, string[]];

/** iperf3's version, or undefined when it is not installed. */
export function iperfVersion(): string | undefined {
  const result = spawnSync('iperf3', ['--version'], { encoding: 'utf8' });
  if (result.error) return undefined;
  return /iperf (\S+)/.exec(result.stdout)?.[1] ?? 'unknown';
}

export interface IperfServer {
  port: number;
  child: ChildProcess;
  close(): void;
}

/** `iperf3 -s` on 127.0.0.1:`port`, serving one test after another; resolves once it listens. */
export async function startIperfServer(port: number, launch: Launcher): Promise<IperfServer> {
  const [command, args] = launch('iperf3', [
    '--server',
    '--bind',
    '127.0.0.1',
    '--port',
    String(port),
    '--forceflush',
  ]);
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  // Expected noise: a proxy's readiness check connects through to the server and hangs up during
  // iperf3's handshake ("unable to receive cookie" or "parameters"), and the server's own exit
  // ("interrupt"). A failed test shows in the client's report (iperfBulk throws).
  createInterface({ input: child.stderr! }).on('line', (line) => {
    if (!/unable to receive (cookie|parameters)|interrupt - the server has terminated/.test(line)) {
      console.error(line);
    }
  });
  const lines = createInterface({ input: child.stdout! });
  for await (const line of lines) {
    if (line.startsWith('Server listening on')) {
      // keep draining its report lines so it never blocks on a full pipe
      lines.on('line', () => undefined);
      return { port, child, close: () => void child.kill() };
    }
  }
  throw new Error(`iperf3 server exited with ${child.exitCode} before listening on ${port}`);
}

export interface IperfResult {
  /** bytes the receiving side(s) got, both directions added for --bidir */
  bytes: number;
  /** the receivers' seconds (the longer one for --bidir) */
  seconds: number;
  /** receiver-side rate, both directions added for --bidir */
  bytesPerSecond: number;
}

interface IperfSum {
  bytes: number;
  seconds: number;
  bits_per_second: number;
}

/**
 * One iperf3 test against 127.0.0.1:`port`: `bytes` one way (client to server), or with `bidir`
 * both ways at once. iperf3 ends a --bidir test when the client has sent `bytes`, so the reverse
 * direction moves about as much in the same time, not exactly `bytes`. Rates are the receivers'
 * (`-J`: end.sum_received and end.sum_received_bidir_reverse).
 */
export async function iperfBulk(
  port: number,
  bytes: number,
  bidir: boolean,
  launch: Launcher,
): Promise<IperfResult> {
  // iperf3's server takes a moment to wind up the previous test, and refuses a client meanwhile
  for (let attempt = 1; ; attempt++) {
    try {
      return await iperfBulkOnce(port, bytes, bidir, launch);
    } catch (error) {
      if (attempt >= 10 || !String(error).includes('the server is busy')) throw error;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  }
}

async function iperfBulkOnce(
  port: number,
  bytes: number,
  bidir: boolean,
  launch: Launcher,
): Promise<IperfResult> {
  const [command, args] = launch('iperf3', [
    '--client',
    '127.0.0.1',
    '--port',
    String(port),
    '--bytes',
    String(bytes),
    '--interval',
    '0',
    '--connect-timeout',
    '5000',
    '--json',
    ...(bidir ? ['--bidir'] : []),
  ]);
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const timer = setTimeout(() => child.kill(), 120_000);
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  clearTimeout(timer);
  let report: { error?: string; end?: Record<string, IperfSum | undefined> };
  try {
    report = JSON.parse(out) as typeof report;
  } catch {
    throw new Error(`iperf3 client to ${port} exited with ${code} without a JSON report`);
  }
  if (report.error || code !== 0)
    throw new Error(`iperf3 client to ${port}: ${report.error ?? `exit ${code}`}`);
  const sums = [report.end?.['sum_received'], ...(bidir ? [report.end?.['sum_received_bidir_reverse']] : [])];
  if (sums.some((sum) => !sum || !(sum.seconds > 0))) {
    throw new Error(`iperf3 client to ${port}: no receiver summary in its report`);
  }
  const got = sums as IperfSum[];
  return {
    bytes: got.reduce((total, sum) => total + sum.bytes, 0),
    seconds: Math.max(...got.map((sum) => sum.seconds)),
    bytesPerSecond: got.reduce((total, sum) => total + sum.bits_per_second / 8, 0),
  };
}
