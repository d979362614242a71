// The L4 proxy in front of buildkitd: every accepted connection is spliced to the upstream
// address byte for byte. It never parses the stream, so gRPC over HTTP/2, TLS or anything else
// passes through untouched, and it counts what the controller needs to decide idleness.
//
// It drives Node's TCP handles directly (tcp-handles.ts says why: net.Socket's stream machinery
// was most of the cost per connection). The rules it keeps:
// - Half-close: end of stream from one peer becomes a shutdown (FIN) towards the other, after
//   everything read before it is written; the opposite direction keeps flowing (gRPC clients and
//   `nc -q` half-close). A connection closes cleanly once both directions have ended.
// - Anything else (a read or write error, a reset, an upstream that cannot be reached, the end of
//   the grace period) resets both sides, so each peer sees the failure instead of a clean end of
//   stream that could pass for a complete response.
// - Backpressure: after forwarding a read, if the destination did not take it at once (its kernel
//   buffer is full), the source stops reading until that write completes. So the proxy holds at
//   most one read of data per direction, whatever the peers do.
// - Reads: every socket reads into one buffer shared by the whole proxy, and each read is copied
//   out of it (a slice of Node's buffer pool for small reads) before it is written: a write the
//   kernel cannot take at once stays pending and points at its data, and the next read of any
//   socket would overwrite the shared buffer. Reading into a fresh allocation instead (libuv's
//   default in Node) costs a 64 KiB malloc, a second allocation and a copy per read, which
//   profiling of 1 KiB ping-pong showed as the largest user-space cost after Node's callback
//   machinery. An idle connection holds no buffer at all, which keeps 1,000 of them small.
// - Bulk: a direction that reads a large chunk (BULK_READ_BYTES) is moving bulk data; from then on
//   it reads into a 64 KiB buffer of its own from a small pool, and writes straight from it with
//   no copy (per-read allocation was ~40% of the CPU in GC under bulk load with net.Socket). The
//   rule above keeps it safe: the source reads nothing while its write is pending. The buffer goes
//   back to the pool when the connection closes, when nothing can read or write it any more.
// - The client is read from the moment it is accepted: its first bytes usually come with the
//   connection, and libuv sends them as soon as the upstream is connected (until then the write
//   is pending, so the client is not read further: nothing piles up here).
// - Counting is two additions and a Date.now() per read.
import { randomUUID } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';

import type { HostPort } from '../flags/options.ts';
import { AcceptTrouble, isOutOfResources } from './accept-trouble.ts';
import type { SocketName, TcpHandle, TcpServerHandle, WriteRequest } from './tcp-handles.ts';
import {
  UV_EOF,
  errnoError,
  errorName,
  lastReadResult,
  lastWriteWasAsync,
  newConnectRequest,
  newServerHandle,
  newShutdownRequest,
  newSocketHandle,
  newWriteRequest,
} from './tcp-handles.ts';

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

export interface ReadBufferCounts {
  /** pooled read buffers held by open connections (bulk directions) */
  inUse: number;
  /** pooled read buffers kept for the next bulk direction */
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

/** Size of a bulk direction's read buffer (libuv reads at most 64 KiB at once anyway). */
export const READ_BUFFER_BYTES = 64 * 1024;
/** A read at least this large makes its direction bulk (see the top of this file). */
export const BULK_READ_BYTES = 16 * 1024;
/** Pooled read buffers kept while unused (1 MiB); more are allocated when needed and dropped after. */
const IDLE_BUFFERS_KEPT = 16;
export const LISTEN_BACKLOG = 1024;

class BufferPool {
  private readonly idle: Buffer[] = [];
  inUse = 0;

  take(): Buffer {
    this.inUse++;
    return this.idle.pop() ?? Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
  }

  give(buffer: Buffer): void {
    this.inUse--;
    if (this.idle.length < IDLE_BUFFERS_KEPT) this.idle.push(buffer);
  }

  get idleCount(): number {
    return this.idle.length;
  }
}

/** What every connection shares. */
interface ProxyState {
  readonly counters: ProxyCounters;
  readonly logger: Logger;
  readonly pool: BufferPool;
  readonly connections: Set<Connection>;
  readonly connecting: Set<Connection>;
  readonly events: EventEmitter;
  /** out of descriptors: logged once per episode, not per failed accept */
  readonly acceptTrouble: AcceptTrouble;
  /** every socket not in bulk mode reads into this one buffer (see the top of this file) */
  readonly sharedRead: Buffer;
  /**
   * The write request every forward uses while writes complete at once (they almost always do):
   * only a write that stays pending keeps its request, and a new spare takes its place.
   */
  spareWrite: WriteRequest;
}

/** One socket of a connection, and the direction that reads from it. */
class Side {
  /** pooled buffer this side reads into once its direction is bulk */
  buffer: Buffer | undefined;
  /** end of stream read from this socket */
  ended = false;
  /** our shutdown (FIN) of this socket is queued in libuv and not done yet */
  shutting = false;
  /** our shutdown of this socket's sending direction completed */
  shut = false;
  other!: Side;
  readonly name: 'client' | 'upstream';
  readonly handle: TcpHandle;

  constructor(name: 'client' | 'upstream', handle: TcpHandle) {
    this.name = name;
    this.handle = handle;
  }
}

class Connection {
  readonly client: Side;
  readonly upstream: Side;
  readonly started = Date.now();
  connected = false;
  closing = false;
  failure: string | undefined;
  /** the upstream could not be reached (connect error or timeout): counted and logged as such */
  upstreamUnreachable = false;
  peer: string | undefined;
  bytesIn = 0;
  bytesOut = 0;
  private readonly state: ProxyState;

  constructor(state: ProxyState, clientHandle: TcpHandle) {
    this.state = state;
    this.client = new Side('client', clientHandle);
    this.upstream = new Side('upstream', newSocketHandle());
    this.client.other = this.upstream;
    this.upstream.other = this.client;
  }

  connect(target: HostPort, v6: boolean): void {
    const request = newConnectRequest();
    request.oncomplete = (status) => this.onConnect(status);
    const handle = this.upstream.handle;
    const error = v6
      ? handle.connect6(request, target.host, target.port)
      : handle.connect(request, target.host, target.port);
    if (error !== 0) {
      const name = errorName(error);
      if (!isOutOfResources(name)) return this.failUpstream(`upstream connect ${name}`);
      // the client took the last descriptor: it is reset, and the upstream is not blamed
      this.state.acceptTrouble.failed(name);
      return this.fail(`no descriptor for the upstream socket: ${name}`);
    }
    this.state.acceptTrouble.recovered();
    this.state.connecting.add(this);
    this.startReading(this.client);
  }

  private onConnect(status: number): void {
    this.state.connecting.delete(this);
    if (this.closing) return;
    if (status < 0) return this.failUpstream(`upstream connect ${errorName(status)}`);
    this.connected = true;
    this.upstream.handle.setNoDelay(true);
    this.startReading(this.upstream);
    if (this.client.ended) this.shutdown(this.upstream);
  }

  private startReading(side: Side): void {
    side.handle.useUserBuffer(this.state.sharedRead);
    side.handle.onread = () => this.read(side);
    const error = side.handle.readStart();
    if (error !== 0) this.fail(`${side.name} read ${errorName(error)}`);
  }

  /** Returns the buffer the socket's next read goes into when that changes (libuv takes it). */
  private read(from: Side): Buffer | undefined {
    const n = lastReadResult();
    if (n > 0) {
      const own = from.buffer;
      let data: Buffer;
      if (own) data = n === own.length ? own : own.subarray(0, n);
      else {
        // out of the shared buffer before the next read of any socket overwrites it
        data = Buffer.allocUnsafe(n);
        this.state.sharedRead.copy(data, 0, 0, n);
      }
      const counters = this.state.counters;
      if (from === this.client) {
        this.bytesIn += n;
        counters.bytesIn += n;
      } else {
        this.bytesOut += n;
        counters.bytesOut += n;
      }
      counters.lastActivityMs = Date.now();
      this.forward(from, data);
      if (own === undefined && n >= BULK_READ_BYTES && !this.closing) {
        from.buffer = this.state.pool.take();
        return from.buffer;
      }
    } else if (n === UV_EOF) {
      from.ended = true;
      const to = from.other;
      // the last direction to end: nothing is left to send either way, and close() sends the
      // FIN itself once the kernel has sent what it holds, one system call fewer than shutdown
      if (to.ended && from.shut && to.handle.writeQueueSize === 0) this.close(false);
      // a shutdown requested while connecting could be lost by libuv: onConnect sends it
      else if (to === this.client || this.connected) this.shutdown(to);
    } else if (n < 0) {
      this.fail(`${from.name} ${errorName(n)}`);
    }
    return undefined;
  }

  private forward(from: Side, data: Uint8Array): void {
    if (this.closing) return;
    const request = this.state.spareWrite;
    const error = from.other.handle.writeBuffer(request, data);
    if (error !== 0) return this.fail(`${from.other.name} write ${errorName(error)}`);
    if (!lastWriteWasAsync()) return;
    // the pending write points into `data` (possibly this side's read buffer): keep it alive and
    // read nothing more from this side until it is written
    this.state.spareWrite = newWriteRequest();
    request.buffer = data;
    request.oncomplete = (status) => {
      request.buffer = undefined;
      if (this.closing) return;
      if (status < 0) return this.fail(`${from.other.name} write ${errorName(status)}`);
      if (!from.ended) from.handle.readStart();
    };
    from.handle.readStop();
  }

  /** Sends FIN to `side` once everything queued for it is written. */
  private shutdown(side: Side): void {
    if (this.closing) return;
    const request = newShutdownRequest();
    request.oncomplete = (status) => {
      side.shutting = false;
      if (this.closing) return;
      if (status < 0) return this.fail(`${side.name} shutdown ${errorName(status)}`);
      side.shut = true;
      if (side.other.shut) this.close(false);
    };
    const error = side.handle.shutdown(request);
    if (error !== 0) this.fail(`${side.name} shutdown ${errorName(error)}`);
    else side.shutting = true;
  }

  /** The upstream cannot be reached: the client is reset and the failure counted as the upstream's. */
  failUpstream(reason: string): void {
    this.upstreamUnreachable = true;
    this.fail(reason);
  }

  fail(reason: string): void {
    if (this.closing) return;
    this.failure = reason;
    this.close(true);
  }

  /**
   * Closes both sockets, with an RST when `reset`, and counts the connection closed at once: after
   * close() the kernel no longer touches the read buffers and no callback reads them, and no close
   * callback is asked for (two calls into JavaScript fewer per connection).
   */
  private close(reset: boolean): void {
    this.closing = true;
    const { counters, pool, logger, connections, connecting, events } = this.state;
    connecting.delete(this);
    if (reset || logger.isLevelEnabled('debug')) this.peer ??= peerOf(this.client.handle);
    for (const side of [this.client, this.upstream]) {
      // libuv refuses a reset while a shutdown is queued, and Node then ignores a later close():
      // such a socket is closed plainly (the kernel still resets it if unread data is left)
      if (!reset || side.shutting || side.handle.reset(noop) !== 0) side.handle.close(noop);
    }
    if (this.client.buffer) pool.give(this.client.buffer);
    if (this.upstream.buffer) pool.give(this.upstream.buffer);
    connections.delete(this);
    counters.closed++;
    counters.open--;
    if (this.upstreamUnreachable) {
      counters.upstreamFailures++;
      logger.warn(
        { ...this.fields(), reason: this.failure },
        'upstream unreachable, client connection reset',
      );
    } else if (logger.isLevelEnabled('debug')) {
      if (this.failure) logger.debug({ ...this.fields(), reason: this.failure }, 'connection reset');
      else logger.debug(this.fields(), 'connection closed');
    }
    if (counters.open === 0) events.emit('drained');
  }

  private fields() {
    return {
      peer: this.peer,
      ms: Date.now() - this.started,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      open: this.state.counters.open,
    };
  }
}

const noop = () => undefined;

function peerOf(handle: TcpHandle): string | undefined {
  const out: SocketName = {};
  return handle.getpeername(out) === 0 ? `${out.address}:${out.port}` : undefined;
}

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

export function createProxy(options: ProxyOptions): Proxy {
  const { upstream: target, logger } = options;
  const { v6, connectTimeoutMs, keepAliveSeconds } = proxySettings(options);
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
    pool: new BufferPool(),
    connections: new Set(),
    connecting: new Set(),
    events: new EventEmitter(),
    acceptTrouble: new AcceptTrouble(logger),
    spareWrite: newWriteRequest(),
    sharedRead: Buffer.allocUnsafeSlow(READ_BUFFER_BYTES),
  };
  const { counters, connections, connecting } = state;

  // one timer for every pending upstream connect, running only while there are some
  let connectSweep: NodeJS.Timeout | undefined;
  const sweepConnecting = () => {
    const now = Date.now();
    for (const connection of connecting) {
      if (now - connection.started >= connectTimeoutMs) connection.failUpstream('upstream connect timeout');
    }
    if (connecting.size === 0) {
      clearInterval(connectSweep);
      connectSweep = undefined;
    }
  };

  function accept(status: number, clientHandle: TcpHandle | undefined): void {
    if (status < 0 || !clientHandle) {
      // EMFILE and the like: the listener stays up, open connections keep flowing. On EMFILE libuv
      // first closes the clients waiting in the backlog with a reserve descriptor, silently, and
      // calls back only when even that failed; either way it does not spin on the listener.
      state.acceptTrouble.failed(errorName(status));
      return;
    }
    counters.opened++;
    counters.open++;
    const connection = new Connection(state, clientHandle);
    connections.add(connection);
    connection.connect(target, v6);
    if (connecting.size > 0 && !connectSweep) {
      connectSweep = setInterval(sweepConnecting, Math.min(1000, Math.max(10, connectTimeoutMs / 4)));
    }
  }

  let server: TcpServerHandle | undefined;
  return {
    bootId: randomUUID(),
    startedAt: new Date(),
    counters,
    async listen(host, port) {
      if (server) throw new Error('proxy is already listening');
      const { host: ip } = await resolveHostPort({ host, port });
      const handle = newServerHandle();
      let error = net.isIPv6(ip) ? handle.bind6(ip, port, 0) : handle.bind(ip, port);
      if (error === 0) {
        // accepted sockets inherit both from the listening socket (Linux copies the socket at
        // accept), which saves five setsockopt calls on every connection
        handle.setNoDelay(true);
        handle.setKeepAlive(true, keepAliveSeconds);
        error = handle.listen(LISTEN_BACKLOG);
      }
      if (error !== 0) {
        handle.close(() => undefined);
        throw errnoError(error, 'listen', `${host}:${port}`);
      }
      handle.onconnection = accept;
      server = handle;
      const name: SocketName = {};
      handle.getsockname(name);
      return { address: name.address ?? ip, port: name.port ?? port, family: name.family ?? 'IPv4' };
    },
    stopAccepting() {
      return new Promise((resolve) => {
        if (!server) return resolve();
        server.close(() => resolve());
        server = undefined;
      });
    },
    waitForDrain(timeoutMs) {
      if (counters.open === 0) return Promise.resolve(true);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          state.events.off('drained', onDrained);
          resolve(false);
        }, timeoutMs);
        const onDrained = () => {
          clearTimeout(timer);
          resolve(true);
        };
        state.events.once('drained', onDrained);
      });
    },
    destroyAll() {
      for (const connection of connections) connection.fail('reset by the proxy (grace period over)');
    },
    bufferedBytes() {
      let total = 0;
      for (const { client, upstream } of connections) {
        total += client.handle.writeQueueSize + upstream.handle.writeQueueSize;
      }
      return total;
    },
    readBuffers() {
      return { inUse: state.pool.inUse, idle: state.pool.idleCount };
    },
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
