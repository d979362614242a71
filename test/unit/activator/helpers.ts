// Shared by the activator tests: real sockets on 127.0.0.1, an activator whose log lines and wake
// calls the test reads, upstream servers that record the order they accept in, metric readers.
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { Registry } from 'prom-client';

import { createActivator } from '../../../activator/index.ts';
import type { Activator, ActivatorOptions } from '../../../activator/index.ts';

/** Pushed by a test, run newest first after it (afterEach(runCleanups)). */
export const cleanups: (() => unknown)[] = [];

export async function runCleanups(): Promise<void> {
  while (cleanups.length) await cleanups.pop()!();
}

export type LogLine = Record<string, unknown> & { level: number; msg: string };

export interface Harness {
  activator: Activator;
  registry: Registry;
  /** every log line, parsed */
  logs: LogLine[];
  /** the keys onWake was called with, in order */
  wakes: string[];
  /** resolves with the first line (already logged or to come) with `msg` that matches `fields` */
  logged(msg: string, fields?: Record<string, unknown>): Promise<LogLine>;
}

export const WARN = 40;

export function startActivator(options: Partial<ActivatorOptions> = {}): Harness {
  const logs: LogLine[] = [];
  const waiters = new Set<() => void>();
  const logger = pino(
    { level: 'debug' },
    {
      write(line: string) {
        logs.push(JSON.parse(line) as LogLine);
        waiters.forEach((w) => w());
      },
    },
  );
  const registry = new Registry();
  const wakes: string[] = [];
  const activator = createActivator({
    logger,
    registry,
    listenHost: '127.0.0.1',
    onWake: (key) => wakes.push(key),
    ...options,
  });
  cleanups.push(() => activator.close());
  const matches = (line: LogLine, msg: string, fields: Record<string, unknown>) =>
    line.msg === msg && Object.entries(fields).every(([k, v]) => line[k] === v);
  const logged = (msg: string, fields: Record<string, unknown> = {}) =>
    new Promise<LogLine>((resolve) => {
      const check = () => {
        const line = logs.find((l) => matches(l, msg, fields));
        if (!line) return;
        waiters.delete(check);
        resolve(line);
      };
      waiters.add(check);
      check();
    });
  return { activator, registry, logs, wakes, logged };
}

/** A port nothing listens on right now (the kernel's pick for an ephemeral bind). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface Upstream {
  host: string;
  port: number;
  /** sockets in the order the server accepted them */
  accepted: net.Socket[];
  close(): Promise<void>;
}

/** A TCP server on 127.0.0.1 (allowHalfOpen), echoing by default; on `port` when given. */
export async function upstreamServer(
  onConnection: (socket: net.Socket, index: number) => void = (socket) => socket.pipe(socket),
  port = 0,
): Promise<Upstream> {
  const accepted: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => undefined);
    accepted.push(socket);
    onConnection(socket, accepted.length - 1);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    accepted.forEach((s) => s.destroy());
    await new Promise((resolve) => server.close(resolve));
  };
  cleanups.push(close);
  return { host: '127.0.0.1', port: (server.address() as AddressInfo).port, accepted, close };
}

/** A client connection to 127.0.0.1:`port` (allowHalfOpen), destroyed after the test. */
export function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => resolve(socket));
    socket.once('error', reject);
    cleanups.push(() => socket.destroy());
  });
}

/** How a socket's stream ends: 'clean end' (FIN), an error code (ECONNRESET), or 'closed'. */
export function outcomeOf(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    socket.once('end', () => resolve('clean end'));
    socket.once('close', () => resolve('closed'));
    socket.resume();
  });
}

/**
 * Dials `port` and resolves with how the connection ends, like outcomeOf: for connections the
 * activator resets at once, whose reset can beat the client's own connect callback.
 */
export function dialOutcome(port: number): Promise<string> {
  const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  cleanups.push(() => socket.destroy());
  return outcomeOf(socket);
}

export { receiveAll, sha } from '../../support/streams.ts';

/** Sends `text` and resolves with what comes back until `text.length` bytes arrived. */
export function roundTrip(socket: net.Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (chunk: Buffer) => {
      got += chunk.toString();
      if (got.length < text.length) return;
      socket.off('data', onData);
      socket.off('error', reject);
      resolve(got);
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(text);
  });
}

/** Resolves once `predicate` holds (polled); fails after timeoutMs naming `what`. */
export async function until(what: string, predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/**
 * The sum of the series of metric `name` that carry `labels` (0 when there are none); `sample`
 * picks a histogram's `_count` or `_sum`.
 */
export async function metric(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
  sample?: '_count' | '_sum',
): Promise<number> {
  const found = registry.getSingleMetric(name);
  if (!found) throw new Error(`no metric ${name}`);
  const { values } = await found.get();
  const wanted = sample ? `${name}${sample}` : undefined;
  return values
    .filter((v) => (v as { metricName?: string }).metricName === wanted)
    .filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
    .reduce((sum, v) => sum + v.value, 0);
}

/** connections_total of `target` by outcome, only the outcomes that occurred. */
export async function outcomes(registry: Registry, target: string): Promise<Record<string, number>> {
  const found = registry.getSingleMetric('buildkit_fleet_activator_connections_total')!;
  const { values } = await found.get();
  const result: Record<string, number> = {};
  for (const v of values) {
    if (v.labels.target === target && v.value > 0) result[String(v.labels.outcome)] = v.value;
  }
  return result;
}

/** `count` clients, connected one after the other, each held before the next dials. */
export async function heldClients(
  harness: Harness,
  key: string,
  port: number,
  count: number,
): Promise<net.Socket[]> {
  const clients: net.Socket[] = [];
  const before = harness.activator.held(key);
  for (let i = 0; i < count; i++) {
    clients.push(await connect(port));
    await until(`client ${i} held`, () => harness.activator.held(key) === before + i + 1);
  }
  return clients;
}
