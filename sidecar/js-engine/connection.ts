// One client connection of the JavaScript data path, spliced to its own upstream connection with
// net.Socket, and how it keeps each rule listed at the top of ../proxy.ts:
// - Both sockets are allowHalfOpen: an 'end' from one peer becomes end() towards the other, which
//   Node turns into a shutdown (FIN) after everything written before it (and, for an upstream still
//   connecting, after the connect). Once a socket has both read and sent its end of stream, Node
//   closes it; the connection is closed when both sockets are.
// - An 'error' on either socket fails the connection: the other socket is closed with an RST
//   (resetAndDestroy) so its peer sees a reset, not a clean end of stream. See reset() for the two
//   cases where Node cannot send one.
// - Backpressure: every socket has a highWaterMark of one byte (HOLD_ONE), so write() returns false
//   exactly when the destination's kernel buffer did not take the whole read at once. The source is
//   then paused until the destination's 'drain', when that write has completed. A paused socket
//   stops reading once it holds one read, so a direction holds at most two reads (one being
//   written, one waiting), whatever the peers do: a slow reader throttles the writer.
// - The client is read from the moment it is accepted: its first bytes are written to the upstream
//   while it connects, where they wait (so the client is paused: nothing piles up here).
// - Counting is two additions and a Date.now() per read, like the native engine's.
import net from 'node:net';
import type { Logger } from 'pino';

import type { HostPort } from '../../flags/options.ts';
import type { AcceptTrouble } from '../accept-trouble.ts';
import { isOutOfResources } from '../accept-trouble.ts';
import type { ProxyCounters } from '../proxy.ts';

/**
 * The highWaterMark of every socket of the data path: holding a single byte counts as full, which
 * turns write()'s answer into "did the kernel take it all" and stops a paused socket after one read.
 */
export const HOLD_ONE = 1;

/**
 * net.Socket is a stream.Duplex and passes its options on to it (net.createServer has the same
 * highWaterMark option for the sockets it accepts); @types/node lists only the socket's own options.
 */
const STREAM_OPTIONS: { highWaterMark: number } = { highWaterMark: HOLD_ONE };

/** What every connection of one proxy shares. */
export interface ProxyState {
  readonly counters: ProxyCounters;
  readonly logger: Logger;
  /** every connection not yet closed */
  readonly connections: Set<Connection>;
  /** the connections whose upstream connect is in progress (for the connect timeout) */
  readonly connecting: Set<Connection>;
  /** out of descriptors: logged once per episode, not per failed connection */
  readonly acceptTrouble: AcceptTrouble;
  /** called whenever a close brings the open count to zero */
  readonly drained: () => void;
}

type SideName = 'client' | 'upstream';

export class Connection {
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  readonly started = Date.now();
  private readonly state: ProxyState;
  private connected = false;
  /** the connection is being reset: nothing more is forwarded */
  private failing = false;
  private failure: string | undefined;
  /** the upstream could not be reached (connect error or timeout): counted and logged as such */
  private upstreamUnreachable = false;
  /** sockets that have not emitted 'close' yet */
  private sockets = 2;
  private peer: string | undefined;
  private bytesIn = 0;
  private bytesOut = 0;

  constructor(state: ProxyState, client: net.Socket, target: HostPort) {
    this.state = state;
    this.client = client;
    // the peer's address is gone once the socket is closed; read it now only if a debug line needs it
    if (state.logger.isLevelEnabled('debug')) this.peer = peerOf(client);
    this.upstream = net.connect({
      ...STREAM_OPTIONS,
      host: target.host,
      port: target.port,
      allowHalfOpen: true,
      noDelay: true,
    });
    state.connections.add(this);
    state.connecting.add(this);
    this.upstream.once('connect', () => this.onConnect());
    this.splice('client', client, this.upstream);
    this.splice('upstream', this.upstream, client);
  }

  /** Forwards what `from` reads to `to`, counting it, with the backpressure rule above. */
  private splice(name: SideName, from: net.Socket, to: net.Socket): void {
    const counters = this.state.counters;
    const inbound = name === 'client';
    from.on('data', (chunk: Buffer) => {
      if (this.failing) return;
      const n = chunk.length;
      if (inbound) {
        this.bytesIn += n;
        counters.bytesIn += n;
      } else {
        this.bytesOut += n;
        counters.bytesOut += n;
      }
      counters.lastActivityMs = Date.now();
      if (!to.write(chunk)) from.pause();
    });
    to.on('drain', () => from.resume());
    from.on('end', () => {
      if (!this.failing) to.end();
    });
    from.on('error', (error: NodeJS.ErrnoException) => this.onError(name, error));
    from.on('close', () => this.onClose(name, from));
  }

  private onConnect(): void {
    this.connected = true;
    this.state.connecting.delete(this);
    this.state.acceptTrouble.recovered();
  }

  private onError(name: SideName, error: NodeJS.ErrnoException): void {
    const code = error.code ?? error.message;
    if (name === 'upstream' && !this.connected) {
      // the client took the last descriptor: it is reset, and the upstream is not blamed
      if (isOutOfResources(code)) {
        this.state.acceptTrouble.failed(code);
        return this.fail(`no descriptor for the upstream socket: ${code}`);
      }
      this.state.acceptTrouble.recovered();
      return this.failUpstream(`upstream connect ${code}`);
    }
    this.fail(`${name} ${error.syscall ? `${error.syscall} ` : ''}${code}`);
  }

  /** The upstream cannot be reached: the client is reset and the failure counted as the upstream's. */
  failUpstream(reason: string): void {
    if (this.failing) return;
    this.upstreamUnreachable = true;
    this.fail(reason);
  }

  /** Resets both sockets; the connection is counted closed when both have closed. */
  fail(reason: string): void {
    if (this.failing) return;
    this.failing = true;
    this.failure = reason;
    this.state.connecting.delete(this);
    this.peer ??= peerOf(this.client);
    reset(this.client);
    reset(this.upstream);
  }

  private onClose(name: SideName, socket: net.Socket): void {
    // Node closes a socket by itself only once it has read and sent its end of stream (or on an
    // error, which failed the connection already): anything else must not leave the other side open
    if (!this.failing && !(socket.readableEnded && socket.writableFinished)) this.fail(`${name} closed`);
    if (--this.sockets > 0) return;
    const { counters, logger, connections, connecting } = this.state;
    connecting.delete(this);
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
    if (counters.open === 0) this.state.drained();
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

/**
 * Closes `socket` with an RST where Node can send one. A socket still connecting is just closed:
 * there is no connection to reset, and resetAndDestroy() would wait for the connect. One whose FIN
 * is being sent (end() called, nothing left to write, not finished) is closed plainly too: libuv
 * refuses a reset while a shutdown is pending, and Node then never closes the socket (the kernel
 * still resets it if unread data is left).
 */
export function reset(socket: net.Socket): void {
  if (socket.destroyed) return;
  const shutting = socket.writableEnded && !socket.writableFinished && socket.writableLength === 0;
  if (socket.connecting || shutting) socket.destroy();
  else socket.resetAndDestroy();
}

function peerOf(socket: net.Socket): string | undefined {
  return socket.remoteAddress === undefined ? undefined : `${socket.remoteAddress}:${socket.remotePort}`;
}
