// The activator: one TCP listener per target, told apart only by port. In hold mode it takes every
// connection into the target's hold queue and asks for a wake; switched to forward, it splices the
// held connections to the upstream in arrival order and forwards new ones straight away; switched
// back to hold (the scale-down fence), spliced connections keep flowing and new ones are held.
// It knows nothing of Kubernetes: whoever runs it says which targets exist and when each is ready
// (setTargets), and hears when one should wake (onWake). connection.ts holds the per-connection
// rules; docs/activator.md the whole contract.
import net from 'node:net';

import type { Shared, TargetState } from './connection.ts';
import { BOUND_COUNT_MESSAGE, ClientConnection, addressOf, reset } from './connection.ts';
import { createActivatorMetrics } from './metrics.ts';
import type {
  Activator,
  ActivatorOptions,
  ActivatorStats,
  ActivatorTarget,
  DrainResult,
  ListenFailure,
  TargetMode,
} from './types.ts';
import { ListenError } from './types.ts';
import { settingsOf, validateTargets } from './validate.ts';

export const LISTEN_BACKLOG = 1024;
/** TCP keepalive on client sockets, so a client that vanished while held is noticed. */
export const KEEPALIVE_MS = 15_000;

export function createActivator(options: ActivatorOptions): Activator {
  const settings = settingsOf(options);
  const { logger, onWake } = options;
  const { listenHost, maxHeldPerTarget, maxHeldTotal } = settings;
  const targets = new Map<string, TargetState>();
  const metrics = createActivatorMetrics(options.registry, function* () {
    for (const target of targets.values()) yield [target.key, target.held.size];
  });
  /** resolved (and emptied) whenever the last open connection closes */
  let whenAllClosed: (() => void)[] = [];
  const shared: Shared = {
    logger,
    metrics,
    settings,
    open: new Set(),
    heldTotal: 0,
    closed: () => {
      if (shared.open.size > 0) return;
      const waiting = whenAllClosed;
      whenAllClosed = [];
      for (const resolve of waiting) resolve();
    },
  };
  const allClosed = (): Promise<void> =>
    shared.open.size === 0 ? Promise.resolve() : new Promise((resolve) => whenAllClosed.push(resolve));
  /** setTargets calls run one after the other */
  let queue: Promise<unknown> = Promise.resolve();
  let closing: Promise<void> | undefined;
  let draining: Promise<DrainResult> | undefined;

  const requestWake = (target: TargetState, reason: string) => {
    if (target.wakeRequested) return;
    target.wakeRequested = true;
    metrics.wake(target.key);
    logger.info({ target: target.key, reason, held: target.held.size }, 'wake requested');
    try {
      onWake(target.key);
    } catch (error) {
      logger.error(
        { target: target.key, err: String(error) },
        'onWake threw: the wake may not have been asked for',
      );
    }
  };

  const accept = (target: TargetState, socket: net.Socket) => {
    socket.on('error', () => undefined);
    if (closing || targets.get(target.key) !== target) {
      // accepted in the same turn as the listener closed
      reset(socket);
      return;
    }
    const { mode } = target;
    if (mode.kind === 'forward') {
      new ClientConnection(shared, target, socket).forward(mode.upstream);
      return;
    }
    const bound =
      target.held.size >= maxHeldPerTarget
        ? { bound: 'maxHeldPerTarget', limit: maxHeldPerTarget }
        : shared.heldTotal >= maxHeldTotal
          ? { bound: 'maxHeldTotal', limit: maxHeldTotal }
          : undefined;
    if (bound) {
      metrics.outcome(target.key, 'bound_count');
      logger.warn(
        {
          target: target.key,
          peer: `${socket.remoteAddress}:${socket.remotePort}`,
          outcome: 'bound_count',
          ...bound,
          held: target.held.size,
          heldTotal: shared.heldTotal,
        },
        BOUND_COUNT_MESSAGE,
      );
      reset(socket);
      return;
    }
    const connection = new ClientConnection(shared, target, socket);
    connection.hold();
    if (logger.isLevelEnabled('debug')) {
      logger.debug({ target: target.key, held: target.held.size }, 'connection held');
    }
    requestWake(target, 'first held connection');
  };

  const setMode = (target: TargetState, mode: TargetMode) => {
    const from = target.mode;
    if (describe(from) === describe(mode)) return;
    target.mode = mode;
    if (mode.kind === 'forward') {
      target.wakeRequested = false;
      const redirected = [...target.connecting];
      for (const connection of redirected) connection.retarget(mode.upstream);
      const held = [...target.held];
      logger.info(
        { target: target.key, from: describe(from), to: describe(mode), released: held.length },
        from.kind === 'hold'
          ? 'target ready: held connections spliced in arrival order, new ones forwarded'
          : 'target upstream changed: new connections go to the new upstream',
      );
      // in arrival order: the upstream connects are opened in this order
      for (const connection of held) connection.release(mode.upstream);
      return;
    }
    const back = [...target.connecting];
    for (const connection of back) connection.rehold();
    logger.info(
      { target: target.key, from: describe(from), to: 'hold', spliced: target.spliced, reheld: back.length },
      'target not ready: new connections are held, spliced ones keep flowing',
    );
    if (target.held.size > 0) requestWake(target, 'connections not yet connected upstream were held again');
  };

  /** Stops listening at once; resolves when the server has closed (all its connections too). */
  const closeListener = (target: TargetState): Promise<void> => {
    const server = target.server;
    target.server = undefined;
    if (!server) return Promise.resolve();
    return new Promise((resolve) => server.close(() => resolve()));
  };

  const removeTarget = (target: TargetState, reason: string) => {
    targets.delete(target.key);
    void closeListener(target);
    const dropped = [...target.held, ...target.connecting];
    for (const connection of dropped) connection.discard(reason);
    logger[dropped.length ? 'warn' : 'info'](
      { target: target.key, port: target.port, reason, reset: dropped.length, spliced: target.spliced },
      dropped.length
        ? 'target removed: listener closed, its held connections reset'
        : 'target removed: listener closed',
    );
  };

  /** Binds `target`'s listener; a new target joins the table the moment it listens. */
  const openListener = (target: TargetState, isNew: boolean): Promise<void> =>
    new Promise((resolve, reject) => {
      const server = net.createServer(
        {
          allowHalfOpen: true,
          noDelay: true,
          keepAlive: true,
          keepAliveInitialDelay: KEEPALIVE_MS,
        },
        (socket) => accept(target, socket),
      );
      server.once('error', reject);
      server.listen({ host: listenHost, port: target.port, backlog: LISTEN_BACKLOG }, () => {
        server.off('error', reject);
        // from now on an error is a failed accept (EMFILE and the like): the listener stays up
        server.on('error', (error: NodeJS.ErrnoException) =>
          logger.error(
            { target: target.key, port: target.port, err: error.code ?? error.message },
            'activator listener could not accept a connection (retrying)',
          ),
        );
        target.server = server;
        if (isNew) targets.set(target.key, target);
        resolve();
      });
    });

  const apply = async (input: readonly ActivatorTarget[]) => {
    if (closing) throw new Error('activator is closed');
    const desired = validateTargets(input);
    const wanted = new Set(desired.map((t) => t.key));
    for (const target of [...targets.values()]) {
      if (!wanted.has(target.key)) removeTarget(target, 'not in the target set');
    }
    const binds: { target: TargetState; isNew: boolean }[] = [];
    for (const { key, port, mode } of desired) {
      const existing = targets.get(key);
      if (!existing) {
        binds.push({ target: newTarget(key, port, mode), isNew: true });
        continue;
      }
      setMode(existing, mode);
      if (existing.port !== port) {
        logger.info(
          { target: key, from: existing.port, to: port },
          'target port changed: moving its listener',
        );
        void closeListener(existing);
        existing.port = port;
        binds.push({ target: existing, isNew: false });
      }
    }
    const failures: ListenFailure[] = [];
    // a draining activator takes no new connections: modes switch, nothing is bound
    await Promise.all(
      (draining ? [] : binds).map(async ({ target, isNew }) => {
        try {
          await openListener(target, isNew);
          logger.info(
            { target: target.key, host: listenHost, port: target.port, mode: describe(target.mode) },
            'activator listening',
          );
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
          failures.push({ key: target.key, port: target.port, code });
          logger.error(
            { target: target.key, host: listenHost, port: target.port, err: code },
            isNew ? 'cannot listen: target left out' : 'cannot listen on its new port: target removed',
          );
          if (!isNew) removeTarget(target, `cannot listen on its new port ${target.port}: ${code}`);
        }
      }),
    );
    if (failures.length) throw new ListenError(failures, listenHost);
  };

  const openCounts = (): DrainResult => ({ open: shared.open.size, held: shared.heldTotal });

  return {
    setTargets(input) {
      const run = queue.then(() => apply(input));
      queue = run.catch(() => undefined);
      return run;
    },
    held(key) {
      if (key === undefined) return shared.heldTotal;
      return targets.get(key)?.held.size ?? 0;
    },
    stats(): ActivatorStats {
      let bufferedBytes = 0;
      for (const connection of shared.open) bufferedBytes += connection.bufferedBytes();
      return {
        targets: [...targets.values()].map((t) => ({
          key: t.key,
          port: t.port,
          mode: t.mode.kind,
          held: t.held.size,
          connecting: t.connecting.size,
          spliced: t.spliced,
          wakeRequested: t.wakeRequested,
        })),
        held: shared.heldTotal,
        open: shared.open.size,
        bufferedBytes,
      };
    },
    drain() {
      const timeoutMs = settings.drainTimeoutMs;
      if (closing) return Promise.resolve(openCounts());
      draining ??= (async () => {
        // a setTargets in flight may be binding: its listeners close with the others
        await queue;
        for (const target of targets.values()) void closeListener(target);
        const before = openCounts();
        logger.info(
          { ...before, timeoutMs },
          'activator draining: listeners closed; held connections wait for their target, spliced ones for their end',
        );
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<boolean>(
          (resolve) => (timer = setTimeout(() => resolve(true), timeoutMs)),
        );
        const expired = await Promise.race([allClosed().then(() => false), timedOut]);
        clearTimeout(timer);
        const left = openCounts();
        if (expired) {
          logger.warn(
            { ...left, timeoutMs },
            'activator drain timed out: the connections still open will be reset',
          );
        } else {
          logger.info({ finished: before.open }, 'activator drained: every connection finished');
        }
        return left;
      })();
      return draining;
    },
    close() {
      closing ??= (async () => {
        await queue;
        const listeners: Promise<void>[] = [];
        for (const target of [...targets.values()]) {
          targets.delete(target.key);
          listeners.push(closeListener(target));
        }
        const open = [...shared.open];
        for (const connection of open) connection.destroy('activator closing');
        await allClosed();
        await Promise.all(listeners);
        logger.info({ reset: open.length }, 'activator closed');
      })();
      return closing;
    },
  };
}

function newTarget(key: string, port: number, mode: TargetMode): TargetState {
  return {
    key,
    port,
    mode,
    server: undefined,
    wakeRequested: false,
    held: new Set<ClientConnection>(),
    connecting: new Set<ClientConnection>(),
    spliced: 0,
  };
}

function describe(mode: TargetMode): string {
  return mode.kind === 'hold' ? 'hold' : `forward to ${addressOf(mode.upstream)}`;
}
