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
// - Stopping accepting takes the clients the kernel has already queued in the listen backlog
//   before the listener closes: closing a listening socket resets every client still queued, and
//   those clients had connected.
// - handOff(): new connections go to another address from then on (the stopping sidecar's late
//   clients, handoff.ts), counted in handedOff as well as in opened.
import { randomUUID } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';

import type { HostPort } from '../flags/options.ts';
import { AcceptTrouble } from './accept-trouble.ts';
import type { BacklogReader } from './listen-backlog.ts';
import { backlogReader } from './listen-backlog.ts';
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
  /** connections of `opened` that were proxied to the handoff address instead of the upstream */
  handedOff: number;
  /**
   * bytes of bytesIn and bytesOut that passed through a pipe (splice) instead of being copied
   * through the proxy's memory: the native engine's bulk path; always 0 in the JavaScript one
   */
  splicedBytes: number;
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

/** One reading of the connection counts (Proxy.counts). */
export interface ProxyCounts {
  open: number;
  opened: number;
  closed: number;
  /** clients connected by the kernel and waiting in the listen backlog to be accepted */
  backlog: number;
}

/**
 * The read buffers, or the pipes of bulk directions, an engine pools itself (the JavaScript one
 * has neither: Node allocates each read).
 */
export interface PoolCounts {
  /** held by open connections */
  inUse: number;
  /** kept for the next connection that needs one */
  idle: number;
}

export interface Proxy {
  readonly bootId: string;
  readonly startedAt: Date;
  /** live counters; read-only for callers */
  readonly counters: Readonly<ProxyCounters>;
  listen(host: string, port: number): Promise<AddressInfo>;
  /**
   * Closes the listener once the clients already queued in its backlog are accepted (they are
   * served, not reset): new connections are refused from then on, open ones keep flowing.
   */
  stopAccepting(): Promise<void>;
  /**
   * open, opened and closed with the clients whose connection the kernel completed and the proxy
   * has not accepted yet (`backlog`), read together: a client moving from the backlog to open
   * while they are read is never missed (it may show in both).
   */
  counts(): ProxyCounts;
  /**
   * From now on new connections go to `to` (an IP address) instead of the upstream, and count in
   * handedOff; open ones keep their upstream.
   */
  handOff(to: HostPort): void;
  /** resolves true once open === 0, false if timeoutMs passes first */
  waitForDrain(timeoutMs: number): Promise<boolean>;
  /** resets every open connection (end of the grace period) */
  destroyAll(): void;
  /** bytes queued in the proxy's own socket write buffers (backpressure checks) */
  bufferedBytes(): number;
  readBuffers(): PoolCounts;
  /** the pipes bulk directions move through (splice); each holds two descriptors */
  pipes(): PoolCounts;
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

/** When stopping, the JavaScript engine closes its listener once nobody arrived for this long... */
const STOP_QUIET_MS = 50;
/** ...or once it has been stopping for this long, whatever arrives. */
const STOP_DRAIN_MS = 500;
const STOP_POLL_MS = 10;

/** A setImmediate turn of the event loop. */
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** The JavaScript data path (`--engine js`): needs nothing built, and runs on the main thread. */
export function createProxy(options: ProxyOptions): Proxy {
  const { logger } = options;
  let target = options.upstream;
  let handingOff = false;
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
      handedOff: 0,
      splicedBytes: 0,
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
    if (handingOff) counters.handedOff++;
    new Connection(state, client, target);
    timeouts.watch();
  };

  let server: net.Server | undefined;
  let backlog: BacklogReader | undefined;
  let stopping: Promise<void> | undefined;

  /**
   * Closes the listener once nobody has arrived for STOP_QUIET_MS and an event-loop turn has
   * polled it and found nobody to accept. libuv accepts every queued client when its poll phase
   * finds the listener readable, and each accepted client counts in `opened` before the callback
   * returns; so when `opened` stands still across two turns (a poll phase in between), the backlog
   * was empty at that poll, and the listener closes right after it, in the same turn. The quiet
   * period lets the handshakes under way complete first (one answered but not yet acknowledged
   * would be reset by the close). Clients keep being accepted, and served, meanwhile, for at most
   * STOP_DRAIN_MS: a stream of new clients must not keep the listener open. What is left is a
   * client whose handshake starts in the last moment before the close, after a quiet period; the
   * native engine refuses new handshakes first and has not even that (native/epoll-loop.cc).
   */
  async function closeWhenBacklogEmpty(listener: net.Server): Promise<void> {
    const started = Date.now();
    let seen = counters.opened;
    let quietSince = started;
    for (;;) {
      const now = Date.now();
      if (counters.opened !== seen) {
        seen = counters.opened;
        quietSince = now;
      }
      if (now - started >= STOP_DRAIN_MS) break;
      if (now - quietSince < STOP_QUIET_MS) {
        await sleep(Math.min(STOP_POLL_MS, STOP_QUIET_MS - (now - quietSince)));
        continue;
      }
      await nextTurn();
      await nextTurn();
      if (counters.opened === seen) break;
    }
    // close() shuts the listening socket at once (new clients are refused from here on); its
    // callback would wait for every open connection, which is waitForDrain's job
    listener.close();
    backlog?.close();
    backlog = undefined;
  }
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
      const bound = listener.address() as AddressInfo;
      backlog = backlogReader(bound.address, bound.port);
      if (backlog.unavailable) {
        logger.warn({ reason: backlog.unavailable }, 'listen backlog unknown: reported as 0');
      }
      return bound;
    },
    stopAccepting() {
      if (stopping) return stopping;
      const listener = server;
      if (!listener) return Promise.resolve();
      return (stopping = closeWhenBacklogEmpty(listener).finally(() => (server = undefined)));
    },
    // accepts run on this thread: nothing moves between the reads
    counts: () => ({
      open: counters.open,
      opened: counters.opened,
      closed: counters.closed,
      backlog: backlog?.read() ?? 0,
    }),
    handOff(to) {
      if (!net.isIP(to.host)) throw new Error(`handoff ${to.host}: an IP address is needed`);
      target = to;
      handingOff = true;
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
    pipes: () => ({ inUse: 0, idle: 0 }),
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
