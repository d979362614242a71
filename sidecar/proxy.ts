// The L4 proxy in front of buildkitd: every accepted connection is spliced to the upstream
// address byte for byte. It never parses the stream, so gRPC over HTTP/2, TLS or anything else
// passes through untouched, and it counts what the controller needs to decide idleness.
//
// Why the socket handling looks the way it does:
// - allowHalfOpen on both sides and pipe()'s default `end: true`: a FIN from one peer becomes a FIN
//   to the other while the opposite direction keeps flowing (gRPC clients and `nc -q` half-close).
// - pipe() gives backpressure: a slow reader stops the proxy reading from the fast writer, so the
//   proxy never holds more than about one highWaterMark per direction.
// - A connection that ends abnormally (error, RST, destroy) is reset on the other side too, so the
//   peer sees the failure instead of a clean EOF that could pass for a complete response.
// - Byte counting uses an extra 'data' listener next to pipe()'s own: one closure call and two
//   additions per chunk (chunks are up to 64 KiB), no copies.
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';

import type { HostPort } from '../cli/options.ts';

export interface ProxyCounters {
  /** connections accepted and not yet fully closed (both sockets) */
  open: number;
  /** connections accepted since start, monotonic */
  opened: number;
  /** connections fully closed since start, monotonic; open === opened - closed */
  closed: number;
  /** bytes received from clients (forwarded to upstream) */
  bytesIn: number;
  /** bytes received from upstream (forwarded to clients) */
  bytesOut: number;
  /** epoch ms of the last byte in either direction; null until the first byte */
  lastActivityMs: number | null;
  /** connections closed because the upstream could not be reached */
  upstreamFailures: number;
}

export interface ProxyOptions {
  upstream: HostPort;
  logger: Logger;
  /** called synchronously for every accepted connection, before any byte moves (the fence hook) */
  onAccept?: () => void;
  /** give up on an upstream connect after this long; default 10 s */
  connectTimeoutMs?: number;
  /** TCP keepalive on client sockets so vanished clients do not stay "open" forever; default 15 s */
  keepAliveInitialDelayMs?: number;
}

export interface Proxy {
  readonly bootId: string;
  readonly startedAt: Date;
  /** live counters; read-only for callers */
  readonly counters: Readonly<ProxyCounters>;
  listen(host: string, port: number): Promise<AddressInfo>;
  /** closes the listener: new connections are refused, open ones keep flowing */
  stopAccepting(): Promise<void>;
  /** resolves true once open === 0, false if timeoutMs passes first */
  waitForDrain(timeoutMs: number): Promise<boolean>;
  /** resets every open connection (end of the grace period) */
  destroyAll(): void;
  /** bytes queued in the proxy's own socket write buffers (backpressure checks) */
  bufferedBytes(): number;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
}

/** A socket closed cleanly when both its directions ended; anything else is a failure to pass on. */
function closedCleanly(socket: net.Socket): boolean {
  return socket.readableEnded && socket.writableFinished;
}

function reset(socket: net.Socket): void {
  if (socket.destroyed) return;
  // resetAndDestroy sends an RST; on a socket still connecting it would wait for the connection
  if (socket.connecting) socket.destroy();
  else socket.resetAndDestroy();
  if (!socket.destroyed) socket.destroy();
}

export function createProxy(options: ProxyOptions): Proxy {
  const { upstream: target, logger } = options;
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  const counters: ProxyCounters = {
    open: 0,
    opened: 0,
    closed: 0,
    bytesIn: 0,
    bytesOut: 0,
    lastActivityMs: null,
    upstreamFailures: 0,
  };
  const pairs = new Set<Pair>();
  const events = new EventEmitter();

  const server = net.createServer(
    {
      allowHalfOpen: true,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: options.keepAliveInitialDelayMs ?? 15_000,
    },
    (client) => handle(client),
  );
  // accept errors (EMFILE, ...) must not kill the process and its open connections
  server.on('error', (error) => logger.error({ err: error.message }, 'proxy listener error'));

  function handle(client: net.Socket): void {
    counters.opened++;
    counters.open++;
    options.onAccept?.();
    const started = Date.now();
    const peer = `${client.remoteAddress}:${client.remotePort}`;
    const upstream = net.connect({
      host: target.host,
      port: target.port,
      allowHalfOpen: true,
      noDelay: true,
    });
    const pair: Pair = { client, upstream };
    pairs.add(pair);
    let connected = false;
    let clientClosed = false;
    let upstreamClosed = false;
    let failure: string | undefined;

    const connectTimer = setTimeout(() => {
      failure = 'connect timeout';
      upstream.destroy();
    }, connectTimeoutMs);
    upstream.once('connect', () => {
      connected = true;
      clearTimeout(connectTimer);
    });

    client.on('data', (chunk: Buffer) => {
      counters.bytesIn += chunk.length;
      counters.lastActivityMs = Date.now();
    });
    upstream.on('data', (chunk: Buffer) => {
      counters.bytesOut += chunk.length;
      counters.lastActivityMs = Date.now();
    });
    client.pipe(upstream);
    upstream.pipe(client);

    client.on('error', (error: NodeJS.ErrnoException) => {
      failure ??= `client ${error.code ?? error.message}`;
    });
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      failure ??= connected
        ? `upstream ${error.code ?? error.message}`
        : `upstream connect ${error.code ?? error.message}`;
    });

    const finish = () => {
      if (!clientClosed || !upstreamClosed) return;
      clearTimeout(connectTimer);
      pairs.delete(pair);
      counters.closed++;
      counters.open--;
      const fields = {
        peer,
        ms: Date.now() - started,
        bytesIn: client.bytesRead,
        bytesOut: client.bytesWritten,
        open: counters.open,
      };
      if (!connected) {
        counters.upstreamFailures++;
        logger.warn({ ...fields, reason: failure }, 'upstream unreachable, client connection reset');
      } else if (failure) logger.debug({ ...fields, reason: failure }, 'connection reset');
      else logger.debug(fields, 'connection closed');
      if (counters.open === 0) events.emit('drained');
    };
    client.on('close', () => {
      clientClosed = true;
      if (!closedCleanly(client)) reset(upstream);
      finish();
    });
    upstream.on('close', () => {
      upstreamClosed = true;
      if (!closedCleanly(upstream)) reset(client);
      finish();
    });
  }

  return {
    bootId: randomUUID(),
    startedAt: new Date(),
    counters,
    listen(host, port) {
      return new Promise((resolve, reject) => {
        const onError = (error: Error) => reject(error);
        server.once('error', onError);
        server.listen({ host, port, backlog: 1024 }, () => {
          server.off('error', onError);
          resolve(server.address() as AddressInfo);
        });
      });
    },
    stopAccepting() {
      // server.close's callback waits for every connection; only the listener matters here
      return new Promise((resolve) => {
        if (!server.listening) return resolve();
        server.close();
        setImmediate(resolve);
      });
    },
    waitForDrain(timeoutMs) {
      if (counters.open === 0) return Promise.resolve(true);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          events.off('drained', onDrained);
          resolve(false);
        }, timeoutMs);
        const onDrained = () => {
          clearTimeout(timer);
          resolve(true);
        };
        events.once('drained', onDrained);
      });
    },
    destroyAll() {
      for (const { client, upstream } of pairs) {
        reset(client);
        reset(upstream);
      }
    },
    bufferedBytes() {
      let total = 0;
      for (const { client, upstream } of pairs) total += client.writableLength + upstream.writableLength;
      return total;
    },
  };
}

/** Connects to `target` and hangs up without sending a byte: buildkitd itself accepts connections. */
export function checkUpstream(target: HostPort, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: target.host, port: target.port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}
