// The activator's public contract (re-exported by index.ts): the targets it is given, its options
// and what it answers. Declarations only; docs/activator.md describes the behaviour behind them.
import type { Registry } from 'prom-client';
import type { Logger } from 'pino';

/** Where a target's connections go once it is ready: an IP address (the pod's), not a name. */
export interface Upstream {
  host: string;
  port: number;
}

/**
 * `hold`: accept and keep every connection, and ask for a wake. `forward`: splice every held
 * connection (in arrival order) and every new one to `upstream`.
 */
export type TargetMode = { kind: 'hold' } | { kind: 'forward'; upstream: Upstream };

export interface ActivatorTarget {
  /** `namespace/name` or `namespace/kind/name`; unique in a set */
  key: string;
  /** the port the activator listens on for this target, 1..65535; unique in a set */
  port: number;
  mode: TargetMode;
}

export interface ActivatorOptions {
  logger: Logger;
  /** the activator's metrics (buildkit_fleet_activator_*) are registered here */
  registry: Registry;
  /** address every target's listener binds; default 0.0.0.0 */
  listenHost?: string;
  /** held connections per target beyond which a new one is reset; default 1000 */
  maxHeldPerTarget?: number;
  /** held connections over all targets beyond which a new one is reset; default 10000 */
  maxHeldTotal?: number;
  /** a connection held longer than this is reset; default 300000 (5 min) */
  holdTimeoutMs?: number;
  /** the whole budget for reaching the upstream of one connection, retries included; default 10000 */
  connectTimeoutMs?: number;
  /** how long drain() waits for open connections to finish; default 600000 */
  drainTimeoutMs?: number;
  /**
   * Asks for the target to be woken. The rule: a target's hold episode begins when a connection
   * enters its hold queue while no wake is outstanding for it, and onWake(key) is called then,
   * synchronously, once. Entering the queue means a new connection in hold mode, or one that was
   * still connecting upstream when the target went from forward back to hold. The wake stays
   * outstanding (no further calls) until the target is switched to forward, or until its hold
   * queue is emptied by discards (every held client gave up or timed out); after either, the next
   * connection to enter the queue calls onWake again. A connection reset by a bound never enters
   * the queue. A removed target that is added again starts with no wake outstanding. onWake should
   * be idempotent on the caller's side and must not throw (a throw is logged, holding goes on).
   */
  onWake(key: string): void;
}

export interface TargetStats {
  key: string;
  port: number;
  mode: 'hold' | 'forward';
  /** connections waiting in the hold queue */
  held: number;
  /** connections released or forwarded whose upstream connect is in progress (retries included) */
  connecting: number;
  /** connections spliced to an upstream and not yet closed */
  spliced: number;
  /** a wake was asked for in this hold episode */
  wakeRequested: boolean;
}

export interface ActivatorStats {
  targets: TargetStats[];
  /** held connections over all targets */
  held: number;
  /** every accepted connection not yet closed, whatever its phase, removed targets' included */
  open: number;
  /** client bytes read and not yet written to an upstream (hold buffers), over all connections */
  bufferedBytes: number;
}

export interface Activator {
  /**
   * Makes `targets` the whole desired set: listeners are opened for new targets (and moved for a
   * changed port), modes are switched, removed targets are closed. Serialized with other calls.
   * Rejects without changing anything when the set is invalid; rejects with a ListenError after
   * applying everything else when some ports could not be bound (those targets are left out).
   */
  setTargets(targets: readonly ActivatorTarget[]): Promise<void>;
  /** held connections of `key` (0 for an unknown key), or of all targets */
  held(key?: string): number;
  stats(): ActivatorStats;
  /**
   * For a replica that stops: closes every listener at once and waits, up to `drainTimeoutMs`,
   * for the open connections to finish. Held connections are still spliced when setTargets says their
   * target is ready (setTargets keeps switching modes but binds no listener), and spliced ones
   * flow until they end. Resolves with what is still open then; close() resets that. Calling it
   * again returns the same promise.
   */
  drain(): Promise<DrainResult>;
  /** closes every listener and resets every connection; resolves once all sockets are closed */
  close(): Promise<void>;
}

/** What drain() left open at its end (0 and 0 when every connection finished). */
export interface DrainResult {
  /** connections not yet closed, whatever their phase */
  open: number;
  /** of those, still held (their target never became ready) */
  held: number;
}

/** One port that setTargets could not listen on. */
export interface ListenFailure {
  key: string;
  port: number;
  /** errno name (EADDRINUSE, EACCES, ...) or message */
  code: string;
}

/** setTargets' rejection when some listeners could not be bound; every other target was applied. */
export class ListenError extends Error {
  readonly failures: readonly ListenFailure[];

  constructor(failures: readonly ListenFailure[], host: string) {
    super(
      `activator cannot listen for ${failures
        .map((f) => `target ${f.key} on ${host}:${f.port} (${f.code})`)
        .join(', ')}; the target${failures.length > 1 ? 's are' : ' is'} left out, the others were applied`,
    );
    this.name = 'ListenError';
    this.failures = failures;
  }
}
