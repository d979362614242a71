// One client connection of the activator, from accept to close. It goes through up to three
// phases, and the rules of each (docs/activator.md):
// - held: the client is read into a bounded buffer (HOLD_BUFFER_BYTES; reading pauses beyond it),
//   so a client that gives up (FIN, RST) is seen at once and dropped (outcome gave_up); a
//   connection held longer than holdTimeoutMs is reset (bound_time).
// - connecting: released (or accepted in forward mode), it connects to the upstream, retrying with
//   a short backoff until connectTimeoutMs has passed; the client is still read into the buffer meanwhile
//   (nothing is written to an upstream socket before it is connected, so a failed attempt loses
//   nothing), and a FIN now is a half-close, kept for after the buffered bytes. All attempts failed:
//   the client is reset (upstream_failed). A forward -> hold switch puts it back into the hold queue.
// - spliced: the buffered bytes are written first, then both directions are piped with
//   backpressure (a write the destination does not take pauses the source until 'drain'). Both
//   sockets are allowHalfOpen: an end of stream becomes a FIN towards the other side after what
//   was read before it, and the other direction keeps flowing. An error or an unclean close on one
//   side resets the other (RST), so no peer takes a failure for a complete response.
// Every accepted connection counts exactly one outcome (metrics.ts).
import net from 'node:net';
import type { Logger } from 'pino';

import type { ActivatorMetrics, Outcome } from './metrics.ts';
import type { TargetMode, Upstream } from './types.ts';
import type { Settings } from './validate.ts';

/**
 * What a held (or connecting) connection reads before it stops reading: more than an HTTP/2
 * client may send before the server's first WINDOW_UPDATE (a 64 KiB connection window plus frame
 * headers) and far more than a TLS ClientHello, so for gRPC and TLS clients a FIN or RST is always
 * seen. One read (up to 64 KiB) may go past it.
 */
export const HOLD_BUFFER_BYTES = 128 * 1024;
/** The first retry of an upstream connect waits this long, each next one twice as long... */
export const FIRST_RETRY_MS = 50;
/** ...up to this. */
export const MAX_RETRY_MS = 1000;

/** One target as its connections see it; the activator owns it (activator.ts). */
export interface TargetState {
  readonly key: string;
  port: number;
  mode: TargetMode;
  server: net.Server | undefined;
  /** a wake was asked for in this hold episode (types.ts, onWake) */
  wakeRequested: boolean;
  /** the hold queue, in arrival order (a Set iterates in insertion order) */
  readonly held: Set<ClientConnection>;
  /** connections whose upstream connect is in progress */
  readonly connecting: Set<ClientConnection>;
  /** connections spliced to an upstream and not yet closed */
  spliced: number;
}

/** What every connection of one activator shares. */
export interface Shared {
  readonly logger: Logger;
  readonly metrics: ActivatorMetrics;
  readonly settings: Settings;
  /** every connection not yet closed */
  readonly open: Set<ClientConnection>;
  /** held connections over all targets */
  heldTotal: number;
  /** called after a connection left `open` */
  closed(): void;
}

type Phase = 'held' | 'connecting' | 'spliced' | 'dropped';

export class ClientConnection {
  readonly client: net.Socket;
  readonly target: TargetState;
  private readonly shared: Shared;
  private readonly arrived = Date.now();
  private readonly peer: string | undefined;
  private phase: Phase = 'connecting';
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** the client sent its FIN while the upstream was connecting: sent on after the buffered bytes */
  private clientEnded = false;
  private upstream: net.Socket | undefined;
  private address: Upstream | undefined;
  private attempts = 0;
  private deadline = 0;
  /** the hold timeout, a connect attempt's timeout or the wait before the next attempt */
  private timer: NodeJS.Timeout | undefined;
  private wasHeld = false;
  private wasSpliced = false;
  private settled = false;
  /** being reset: nothing more is forwarded */
  private failing = false;
  private clientClosed = false;
  private upstreamClosed = true;
  private finished = false;
  private bytesIn = 0;
  private bytesOut = 0;

  constructor(shared: Shared, target: TargetState, client: net.Socket) {
    this.shared = shared;
    this.target = target;
    this.client = client;
    this.peer = peerOf(client);
    shared.open.add(this);
    client.on('data', (chunk: Buffer) => this.onClientData(chunk));
    client.on('end', () => this.onClientEnd());
    client.on('error', (error: NodeJS.ErrnoException) => this.onClientError(error));
    client.on('close', () => this.onClientClose());
    client.on('drain', () => {
      if (this.phase === 'spliced') this.upstream?.resume();
    });
  }

  /** Puts the connection into its target's hold queue (a new one, or one taken back from connecting). */
  hold(): void {
    this.phase = 'held';
    this.wasHeld = true;
    this.target.held.add(this);
    this.shared.heldTotal++;
    const left = this.arrived + this.shared.settings.holdTimeoutMs - Date.now();
    this.timer = setTimeout(() => this.holdExpired(), Math.max(0, left));
  }

  /** Held -> connecting: the target is ready at `upstream`. */
  release(upstream: Upstream): void {
    if (this.phase !== 'held') return;
    this.leave();
    this.shared.metrics.held((Date.now() - this.arrived) / 1000);
    this.connect(upstream);
  }

  /** A connection accepted in forward mode: straight to connecting. */
  forward(upstream: Upstream): void {
    this.connect(upstream);
  }

  /** Connecting -> held: the target went back to hold before this connection reached it. */
  rehold(): void {
    if (this.phase !== 'connecting') return;
    this.leave();
    // a client that half-closed while connecting stays held: its FIN waits with its bytes
    this.hold();
  }

  /** Connecting to an old upstream: start over towards the new one, with a fresh budget. */
  retarget(upstream: Upstream): void {
    if (this.phase !== 'connecting') return;
    this.leave();
    this.connect(upstream);
  }

  /** The target is removed: a held or connecting connection is reset; a spliced one keeps flowing. */
  discard(reason: string): void {
    this.drop('target_removed', reason, 'debug');
  }

  /** The activator is closing: reset whatever phase the connection is in. */
  destroy(reason: string): void {
    if (this.phase === 'spliced') this.fail(reason);
    else this.drop('target_removed', reason, 'debug');
  }

  /** Bytes this connection holds in memory: its hold buffer and both sockets' write queues. */
  bufferedBytes(): number {
    return this.buffered + this.client.writableLength + (this.upstream?.writableLength ?? 0);
  }

  private connect(upstream: Upstream): void {
    this.phase = 'connecting';
    this.address = upstream;
    this.attempts = 0;
    this.deadline = Date.now() + this.shared.settings.connectTimeoutMs;
    this.target.connecting.add(this);
    this.attempt();
  }

  private attempt(): void {
    const { host, port } = this.address!;
    this.attempts++;
    const socket = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
    this.upstream = socket;
    socket.once('connect', () => this.onUpstreamConnect(socket));
    socket.on('error', (error: NodeJS.ErrnoException) => this.onUpstreamError(socket, error));
    this.timer = setTimeout(
      () => this.attemptFailed(socket, 'connect timeout'),
      Math.max(1, this.deadline - Date.now()),
    );
  }

  private attemptFailed(socket: net.Socket, reason: string): void {
    if (socket !== this.upstream || this.phase !== 'connecting') return;
    clearTimeout(this.timer);
    this.upstream = undefined;
    socket.destroy();
    const upstream = addressOf(this.address!);
    const left = this.deadline - Date.now();
    if (left <= 0) {
      return this.drop('upstream_failed', `upstream connect ${reason}`, 'warn', {
        upstream,
        attempts: this.attempts,
      });
    }
    // the backoff, shortened so that the last attempt falls on the deadline
    const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** (this.attempts - 1), left);
    this.shared.logger.debug(
      { target: this.target.key, upstream, attempt: this.attempts, reason, retryInMs: delay },
      'upstream connect failed, retrying',
    );
    this.timer = setTimeout(() => this.attempt(), delay);
  }

  private onUpstreamConnect(socket: net.Socket): void {
    if (socket !== this.upstream || this.phase !== 'connecting') return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.target.connecting.delete(this);
    this.phase = 'spliced';
    this.wasSpliced = true;
    this.upstreamClosed = false;
    this.target.spliced++;
    this.settle(this.wasHeld ? 'spliced' : 'forwarded');
    const { logger } = this.shared;
    if (logger.isLevelEnabled('debug')) {
      logger.debug(
        {
          target: this.target.key,
          peer: this.peer,
          upstream: addressOf(this.address!),
          heldMs: Date.now() - this.arrived,
          attempts: this.attempts,
          buffered: this.buffered,
        },
        this.wasHeld ? 'held connection spliced' : 'connection forwarded',
      );
    }
    socket.on('data', (chunk: Buffer) => this.toClient(chunk));
    socket.on('end', () => {
      if (!this.failing) this.client.end();
    });
    socket.on('drain', () => this.client.resume());
    socket.on('close', () => this.onUpstreamClose(socket));
    // what the client sent while held goes first, then its FIN if it sent one
    let more = true;
    for (const chunk of this.chunks) more = this.toUpstream(chunk);
    this.chunks = [];
    this.buffered = 0;
    if (this.clientEnded) socket.end();
    else if (more) this.client.resume();
  }

  private onClientData(chunk: Buffer): void {
    if (this.failing) return;
    if (this.phase === 'spliced') {
      this.toUpstream(chunk);
      return;
    }
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    if (this.buffered >= HOLD_BUFFER_BYTES) this.client.pause();
  }

  /** Writes to the upstream, counted; pauses the client when the upstream did not take it all. */
  private toUpstream(chunk: Buffer): boolean {
    this.bytesIn += chunk.length;
    this.shared.metrics.toUpstream.inc(chunk.length);
    const more = this.upstream!.write(chunk);
    if (!more) this.client.pause();
    return more;
  }

  private toClient(chunk: Buffer): void {
    if (this.failing) return;
    this.bytesOut += chunk.length;
    this.shared.metrics.toClient.inc(chunk.length);
    if (!this.client.write(chunk)) this.upstream!.pause();
  }

  private onClientEnd(): void {
    if (this.failing) return;
    if (this.phase === 'held') this.drop('gave_up', 'client closed its side (FIN) while held', 'debug');
    else if (this.phase === 'connecting') this.clientEnded = true;
    else if (this.phase === 'spliced') this.upstream!.end();
  }

  private onClientError(error: NodeJS.ErrnoException): void {
    const reason = `client ${error.syscall ? `${error.syscall} ` : ''}${error.code ?? error.message}`;
    if (this.phase === 'spliced') this.fail(reason);
    else this.drop('gave_up', reason, 'debug');
  }

  private onClientClose(): void {
    this.clientClosed = true;
    if (!this.failing) {
      if (this.phase !== 'spliced') this.drop('gave_up', 'client closed', 'debug');
      // Node closes a socket by itself only once both directions have ended (or on an error,
      // which failed the connection already): anything else must not leave the upstream open
      else if (!(this.client.readableEnded && this.client.writableFinished)) this.fail('client closed');
    }
    this.maybeFinished();
  }

  private onUpstreamError(socket: net.Socket, error: NodeJS.ErrnoException): void {
    if (socket !== this.upstream) return;
    const code = error.code ?? error.message;
    if (this.phase === 'connecting') this.attemptFailed(socket, code);
    else if (this.phase === 'spliced')
      this.fail(`upstream ${error.syscall ? `${error.syscall} ` : ''}${code}`);
  }

  private onUpstreamClose(socket: net.Socket): void {
    this.upstreamClosed = true;
    if (!this.failing && !(socket.readableEnded && socket.writableFinished)) this.fail('upstream closed');
    this.maybeFinished();
  }

  private holdExpired(): void {
    const { holdTimeoutMs } = this.shared.settings;
    this.drop('bound_time', `held longer than holdTimeoutMs`, 'warn', {
      bound: 'holdTimeoutMs',
      limit: holdTimeoutMs,
    });
  }

  /** Leaves the hold queue or the connect in progress (timer, attempt); the phase is set by the caller. */
  private leave(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.phase === 'held') {
      this.target.held.delete(this);
      this.shared.heldTotal--;
    } else if (this.phase === 'connecting') {
      this.target.connecting.delete(this);
      const attempt = this.upstream;
      this.upstream = undefined;
      attempt?.destroy();
    }
  }

  /** Ends a connection that was never spliced: the client is reset and the outcome counted. */
  private drop(
    outcome: Outcome,
    reason: string,
    level: 'debug' | 'warn',
    fields: Record<string, unknown> = {},
  ): void {
    if (this.phase !== 'held' && this.phase !== 'connecting') return;
    const wasInHold = this.phase === 'held';
    this.leave();
    this.phase = 'dropped';
    // the last held connection of an episode went away: the next one asks for a wake again
    if (wasInHold && this.target.held.size === 0) this.target.wakeRequested = false;
    this.failing = true;
    this.chunks = [];
    this.buffered = 0;
    this.settle(outcome);
    reset(this.client);
    const { logger } = this.shared;
    if (level === 'warn' || logger.isLevelEnabled(level)) {
      logger[level](
        {
          target: this.target.key,
          peer: this.peer,
          outcome,
          reason,
          ms: Date.now() - this.arrived,
          ...fields,
        },
        MESSAGES[outcome],
      );
    }
  }

  /** Resets both sockets of a spliced connection. */
  private fail(reason: string): void {
    if (this.failing) return;
    this.failing = true;
    const { logger } = this.shared;
    if (logger.isLevelEnabled('debug')) {
      logger.debug(
        { target: this.target.key, peer: this.peer, reason, bytesIn: this.bytesIn, bytesOut: this.bytesOut },
        'spliced connection reset',
      );
    }
    reset(this.client);
    if (this.upstream) reset(this.upstream);
  }

  private settle(outcome: Outcome): void {
    if (this.settled) return;
    this.settled = true;
    this.shared.metrics.outcome(this.target.key, outcome);
  }

  private maybeFinished(): void {
    if (this.finished || !this.clientClosed || !this.upstreamClosed) return;
    this.finished = true;
    clearTimeout(this.timer);
    if (this.wasSpliced) {
      this.target.spliced--;
      const { logger } = this.shared;
      if (!this.failing && logger.isLevelEnabled('debug')) {
        logger.debug(
          {
            target: this.target.key,
            peer: this.peer,
            ms: Date.now() - this.arrived,
            bytesIn: this.bytesIn,
            bytesOut: this.bytesOut,
          },
          'spliced connection closed',
        );
      }
    }
    this.shared.open.delete(this);
    this.shared.closed();
  }
}

const MESSAGES: Record<Outcome, string> = {
  spliced: 'held connection spliced',
  forwarded: 'connection forwarded',
  gave_up: 'client gave up while held: discarded',
  bound_count: 'too many held connections: new connection reset',
  bound_time: 'connection held too long: reset',
  upstream_failed: 'upstream unreachable: client connection reset',
  target_removed: 'target removed: connection reset',
};

/** The log line of a connection reset because of a bound on the number held (activator.ts). */
export const BOUND_COUNT_MESSAGE = MESSAGES.bound_count;

/**
 * Closes `socket` with an RST where Node can send one. A socket still connecting is just closed
 * (there is no connection to reset, and resetAndDestroy() would wait for the connect); so is one
 * whose FIN is being sent (end() called, nothing left to write): libuv refuses a reset while a
 * shutdown is pending, and Node would then never close it.
 */
export function reset(socket: net.Socket): void {
  if (socket.destroyed) return;
  const shutting = socket.writableEnded && !socket.writableFinished && socket.writableLength === 0;
  if (socket.connecting || shutting) socket.destroy();
  else socket.resetAndDestroy();
}

export function addressOf({ host, port }: Upstream): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

function peerOf(socket: net.Socket): string | undefined {
  const { remoteAddress, remotePort } = socket;
  return remoteAddress === undefined ? undefined : addressOf({ host: remoteAddress, port: remotePort ?? 0 });
}
