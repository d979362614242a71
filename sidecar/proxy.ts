// The L4 proxy in front of buildkitd: every accepted connection is spliced to the upstream
// address byte for byte. It never parses the stream, so gRPC over HTTP/2, TLS or anything else
// passes through untouched, and it counts what the controller needs to decide idleness.
//
// This module holds what both data paths share (the Proxy interface, the settings, name
// resolution) and the JavaScript data path's listener; js-engine/connection.ts splices one
// connection, on public net.Socket APIs only (no process.binding: DEP0111 internals can change in
// any Node release). The native data path is native-proxy.ts. The rules both keep:
// - Half-close: end of stream from one peer becomes a shutdown (FIN) towards the other, after
//   everything read before it is written; the opposite direction keeps flowing (gRPC clients and
//   `nc -q` half-close). A connection closes cleanly once both directions have ended.
// - Anything else (a read or write error, a reset, an upstream that cannot be reached, the end of
//   the grace period) resets both sides, so each peer sees the failure instead of a clean end of
//   stream that could pass for a complete response.
// - Backpressure: a direction whose destination does not take what was read stops reading until
//   it has, so the proxy holds a bounded amount per direction (a read or two of READ_BUFFER_BYTES),
//   whatever the peers do.
// - The client is read from the moment it is accepted; what it sends before the upstream is
//   connected waits for the connect, and the client is not read further meanwhile.
// - Counters: a connection is counted opened when it is accepted, before a byte of it moves (the
//   fence relies on that), and closed once both of its sockets are closed or reset; bytes and the
//   time of the last byte are counted per read, so an idle connection or a bare FIN is no activity.
// - An upstream connect that fails or takes longer than connectTimeoutMs resets the client and
//   counts an upstream failure, unless the proxy itself had no descriptor left (accept-trouble.ts).
import { randomUUID } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';

import type { HostPort } from '../flags/options.ts';
import { AcceptTrouble } from './accept-trouble.ts';
import { connectTimeouts } from './js-engine/connect-timeouts.ts';
import type { ProxyState } from './js-engine/connection.ts';
import { Connection, HOLD_ONE } from './js-engine/connection.ts';

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
  /** buildkitd's private address; the host must be an IP address (see resolveHostPort) */
  upstream: HostPort;
  logger: Logger;
  /** give up on an upstream connect after this long; default 10 s */
  connectTimeoutMs?: number;
  /** TCP keepalive on client sockets so vanished clients do not stay "open" forever; default 15 s */
  keepAliveInitialDelayMs?: number;
}

/** The read buffers an engine pools itself (the JavaScript one has none: Node allocates each read). */
export interface ReadBufferCounts {
  /** pooled read buffers held by open connections */
  inUse: number;
  /** pooled read buffers kept for the next connection that needs one */
  idle: number;
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
  readBuffers(): ReadBufferCounts;
}

/** The most one read takes (libuv reads up to 64 KiB at once): the unit of the buffering bounds. */
export const READ_BUFFER_BYTES = 64 * 1024;
export const LISTEN_BACKLOG = 1024;

/** The options both engines apply, with their defaults; throws when the upstream is not an IP. */
export function proxySettings(options: ProxyOptions): {
  v6: boolean;
  connectTimeoutMs: number;
  keepAliveSeconds: number;
} {
  const host = options.upstream.host;
  const v6 = net.isIPv6(host);
  if (!v6 && !net.isIPv4(host)) {
    throw new Error(`proxy upstream ${host}: an IP address is needed (resolve names first)`);
  }
  return {
    v6,
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    keepAliveSeconds: Math.max(1, Math.round((options.keepAliveInitialDelayMs ?? 15_000) / 1000)),
  };
}

/** The JavaScript data path (`--engine js`): needs nothing built, and runs on the main thread. */
export function createProxy(options: ProxyOptions): Proxy {
  const { upstream: target, logger } = options;
  const { connectTimeoutMs, keepAliveSeconds } = proxySettings(options);
  const events = new EventEmitter();
  const state: ProxyState = {
    counters: {
      open: 0,
      opened: 0,
      closed: 0,
      bytesIn: 0,
      bytesOut: 0,
      lastActivityMs: null,
      upstreamFailures: 0,
    },
    logger,
    connections: new Set(),
    connecting: new Set(),
    acceptTrouble: new AcceptTrouble(logger),
    drained: () => events.emit('drained'),
  };
  const { counters, connections } = state;
  const timeouts = connectTimeouts(state.connecting, connectTimeoutMs);

  const accept = (client: net.Socket) => {
    counters.opened++;
    counters.open++;
    new Connection(state, client, target);
    timeouts.watch();
  };

  let server: net.Server | undefined;
  return {
    bootId: randomUUID(),
    startedAt: new Date(),
    counters,
    async listen(host, port) {
      if (server) throw new Error('proxy is already listening');
      const { host: ip } = await resolveHostPort({ host, port });
      if (server) throw new Error('proxy is already listening');
      const listener = net.createServer(
        {
          allowHalfOpen: true,
          highWaterMark: HOLD_ONE,
          noDelay: true,
          keepAlive: true,
          keepAliveInitialDelay: keepAliveSeconds * 1000,
        },
        accept,
      );
      server = listener;
      try {
        await new Promise<void>((resolve, reject) => {
          listener.once('error', reject);
          listener.listen({ host: ip, port, backlog: LISTEN_BACKLOG }, () => {
            listener.off('error', reject);
            resolve();
          });
        });
      } catch (error) {
        server = undefined;
        throw error;
      }
      // from now on an error is a failed accept (EMFILE and the like): the listener stays up and
      // open connections keep flowing. On EMFILE libuv first closes the clients waiting in the
      // backlog with a reserve descriptor, silently, and reports only when even that failed;
      // either way it does not spin on the listener.
      listener.on('error', (error: NodeJS.ErrnoException) =>
        state.acceptTrouble.failed(error.code ?? error.message),
      );
      return listener.address() as AddressInfo;
    },
    stopAccepting() {
      // close() shuts the listening socket at once (new clients are refused from here on); its
      // callback would wait for every open connection, which is waitForDrain's job
      server?.close();
      server = undefined;
      return Promise.resolve();
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
      for (const connection of connections) connection.fail('reset by the proxy (grace period over)');
    },
    bufferedBytes() {
      let total = 0;
      for (const { client, upstream } of connections)
        total += client.writableLength + upstream.writableLength;
      return total;
    },
    readBuffers: () => ({ inUse: 0, idle: 0 }),
  };
}

/** The host as an IP address (names are looked up once, e.g. localhost); throws ENOTFOUND & co. */
export async function resolveHostPort(address: HostPort): Promise<HostPort> {
  if (net.isIP(address.host)) return address;
  // IPv4 first: `localhost` should reach a buildkitd listening on 127.0.0.1 even where the
  // hosts file lists ::1 first
  return { host: (await lookup(address.host, { order: 'ipv4first' })).address, port: address.port };
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
