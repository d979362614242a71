// The L4 proxy in front of buildkitd: every accepted connection is spliced to the upstream
// address byte for byte. It never parses the stream, so gRPC over HTTP/2, TLS or anything else
// passes through untouched, and it counts what the controller needs to decide idleness.
//
// Why the socket handling looks the way it does:
// - allowHalfOpen on both sides, and a FIN from one peer becomes end() to the other while the
//   opposite direction keeps flowing (gRPC clients and `nc -q` half-close).
// - A connection that ends abnormally (error, RST, destroy) is reset on the other side too, so the
//   peer sees the failure instead of a clean EOF that could pass for a complete response.
// - Each direction is a hand-written relay instead of pipe(): every socket reads into one buffer
//   of its own (`onread`), reused for every read, instead of a fresh 64 KiB allocation per read.
//   Profiling the pipe() version under bulk load (test/bench/sidecar.ts) showed ~40% of the
//   sidecar's CPU in V8 major GCs triggered by those allocations, and page faults on the fresh
//   memory; the stream machinery itself was small next to that.
// - Backpressure and the safety of reusing the buffer come from one rule: after forwarding a chunk,
//   if the destination did not take it synchronously (writableLength > 0: its kernel buffer is
//   full, or it is still connecting), the source stops reading until the write completes. The
//   queued chunk still points into the read buffer, and no read can overwrite it while paused. So
//   the proxy holds at most one read buffer of data per direction.
// - Accepted sockets: net.Server has no `onread` option, so the same two fields that
//   `new net.Socket({ onread })` sets are set on the accepted socket (found by their symbol names)
//   before it starts reading. If a future Node lacks them, the relay falls back to 'data' events
//   (same rule, one allocation per read); a unit test says which path is in use.
// - Counting is two additions and a Date.now() per read, in the relay itself.
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

/** Bytes each socket reads at most at once; one such buffer per socket, allocated at accept. */
export const READ_BUFFER_BYTES = 64 * 1024;

type OnRead = (nread: number, buffer: Buffer) => boolean;

/** The internals behind `new net.Socket({ onread })`, so accepted sockets can read that way too. */
const onreadFields = (() => {
  const probe = new net.Socket({ onread: { buffer: Buffer.alloc(1), callback: () => true } });
  const symbols = Object.getOwnPropertySymbols(probe);
  const field = (name: string) => symbols.find((s) => s.description === name);
  const buffer = field('kBuffer');
  const callback = field('kBufferCb');
  const fields = probe as unknown as Record<symbol, unknown>;
  const usable =
    buffer && callback && Buffer.isBuffer(fields[buffer]) && typeof fields[callback] === 'function';
  probe.destroy();
  return usable ? { buffer, callback } : undefined;
})();

/**
 * Makes a paused accepted socket read into `buffer` and hand each read to `onRead`, like
 * `onread` does for a connecting socket. False if this Node does not allow it.
 */
function readIntoBuffer(socket: net.Socket, buffer: Buffer, onRead: OnRead): boolean {
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (b: Uint8Array) => void } })._handle;
  if (!onreadFields || typeof handle?.useUserBuffer !== 'function') return false;
  const fields = socket as unknown as Record<symbol, unknown>;
  fields[onreadFields.buffer] = buffer;
  fields[onreadFields.callback] = onRead;
  handle.useUserBuffer(buffer);
  return true;
}

/** True when accepted sockets read into their own reused buffer (see readIntoBuffer). */
export const acceptedSocketsReuseBuffers = onreadFields !== undefined;

/**
 * One direction of a connection: forwards each read of `from` to `to`, and stops reading `from`
 * while `to` still holds a chunk (see the rule at the top of this file).
 */
function relay(from: net.Socket, to: net.Socket, count: (n: number) => void): OnRead {
  let waiting = false;
  const written = () => {
    if (!waiting) return;
    waiting = false;
    if (!to.destroyed && !from.destroyed) from.resume();
  };
  return (nread, buffer) => {
    count(nread);
    to.write(nread === buffer.length ? buffer : buffer.subarray(0, nread), written);
    if (to.writableLength === 0) return true;
    waiting = true;
    from.pause();
    return false;
  };
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
  const countIn = (n: number) => {
    counters.bytesIn += n;
    counters.lastActivityMs = Date.now();
  };
  const countOut = (n: number) => {
    counters.bytesOut += n;
    counters.lastActivityMs = Date.now();
  };
  const events = new EventEmitter();

  const server = net.createServer(
    {
      allowHalfOpen: true,
      // reading starts once the relay is set up (handle)
      pauseOnConnect: true,
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
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
        callback: (nread: number, buffer: Buffer) => toClient(nread, buffer),
      },
    });
    // called by upstream reads only, which start after this line (once connected)
    const toClient = relay(upstream, client, countOut);
    const toUpstream = relay(client, upstream, countIn);
    if (!readIntoBuffer(client, Buffer.allocUnsafe(READ_BUFFER_BYTES), toUpstream)) {
      client.on('data', (chunk: Buffer) => toUpstream(chunk.length, chunk));
    }
    client.resume();
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
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
