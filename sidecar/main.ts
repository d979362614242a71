// `buildkit-fleet sidecar`: the activity-tracking L4 proxy injected in front of buildkitd, with its
// stats port. No Kubernetes access: the controller pulls the stats, so the sidecar needs no RBAC.
//
// Shutdown: on SIGTERM the listener closes once the clients queued in its backlog are accepted
// (new connections are refused; the pod is leaving the Service anyway and /readyz fails from then
// on) and open connections keep flowing until they close or --grace runs out; the stats port
// stays up until the end for the preStop hook and the controller. With a handoff address from the
// fence (handoff.ts) the listener first stays open while clients keep arriving, and sends each
// new one to that address (--handoff-linger). The kubelet's terminationGracePeriodSeconds is the
// hard bound above --grace.
//
// Also runnable on its own (`node sidecar/main.ts --listen ...`) for data-path tests.
import { realpathSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';

import { UsageError } from '../flags/errors.ts';
import { createLogger } from '../telemetry/logger.ts';
import { shutdownSignal } from '../telemetry/shutdown.ts';
import type { HostPort, ParsedOptions } from '../flags/options.ts';
import { optionsHelp, parseOptions } from '../flags/options.ts';
import { readTokenFile } from './auth.ts';
import { createFenceControl } from './fence.ts';
import { formatHostPort } from './handoff.ts';
import type { Proxy } from './proxy.ts';
import { SIDECAR_V8_FLAGS } from './process-settings.ts';
import { resolveHostPort } from './proxy.ts';
import type { EngineName, EngineRequest } from './engines.ts';
import { createProxyEngine } from './engines.ts';
import type { StatsServer } from './stats.ts';
import { createSidecarMetrics, createStatsServer, snapshot } from './stats.ts';

export { SIDECAR_OPTIONS } from './options.ts';
import { SIDECAR_OPTIONS } from './options.ts';

export type SidecarOptions = ParsedOptions<typeof SIDECAR_OPTIONS>;

const WILDCARDS = new Set(['0.0.0.0', '::', '']);

/** Two addresses that would be the same listening socket (port 0 means "any free port"). */
export function sameEndpoint(a: HostPort, b: HostPort): boolean {
  if (a.port === 0 || b.port === 0 || a.port !== b.port) return false;
  return a.host === b.host || WILDCARDS.has(a.host) || WILDCARDS.has(b.host);
}

/** Checks that need no I/O; throws UsageError. */
export function validateSidecarOptions(options: SidecarOptions): HostPort {
  const upstream = options.upstream;
  if (!upstream) throw new UsageError('--upstream is required (buildkitd on its private port)');
  if (upstream.port === 0) throw new UsageError('--upstream needs a port other than 0');
  if (WILDCARDS.has(upstream.host)) {
    throw new UsageError(`--upstream ${upstream.host}:${upstream.port}: name a host, e.g. 127.0.0.1`);
  }
  if (sameEndpoint(options.listen, upstream)) {
    throw new UsageError(
      `--upstream ${upstream.host}:${upstream.port} is the --listen address: the proxy would connect to itself`,
    );
  }
  if (sameEndpoint(options.listen, options.stats)) {
    throw new UsageError('--stats must differ from --listen (probes and stats must not count as activity)');
  }
  if (sameEndpoint(options.stats, upstream)) throw new UsageError('--stats must differ from --upstream');
  return upstream;
}

/** ENOTFOUND, EADDRINUSE and the like, or the message when there is no code. */
const errorCode = (error: unknown): string =>
  (error as NodeJS.ErrnoException).code ?? (error as Error).message;

export interface RunningSidecar {
  proxy: Proxy;
  /** the data path that runs (--engine auto picks native when it loads) */
  engine: EngineName;
  /** actual addresses (a port 0 in the options is resolved) */
  listen: HostPort;
  stats: HostPort;
  /**
   * Stops accepting, waits up to graceMs for open connections to close, resets the rest, closes
   * the stats port. Returns whether every connection closed by itself.
   */
  stop(graceMs: number): Promise<boolean>;
}

export async function startSidecar(options: SidecarOptions, logger: Logger): Promise<RunningSidecar> {
  const upstream = validateSidecarOptions(options);
  const tokenFile = options['token-file'];
  if (tokenFile !== undefined) {
    try {
      await readTokenFile(tokenFile);
    } catch (error) {
      // The injector mounts the token Secret as optional: a namespace without it yet gets an
      // empty volume, which the kubelet fills once the Secret exists. Until then the control
      // answers 503 (nobody can fence, so nothing is scaled down); exiting would crash-loop the pod.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new UsageError(`--token-file: ${(error as Error).message}`);
      }
      logger.warn(
        { tokenFile },
        'token file missing: fence control unavailable (503) until the Secret is mounted',
      );
    }
  }

  let upstreamAddress: HostPort;
  try {
    upstreamAddress = await resolveHostPort(upstream);
  } catch (error) {
    throw new UsageError(
      `--upstream ${upstream.host}:${upstream.port}: cannot resolve ${upstream.host} (${errorCode(error)})`,
    );
  }

  let stopping = false;
  const { proxy, engine } = createProxyEngine(
    options.engine as EngineRequest,
    { upstream: upstreamAddress, logger },
    logger,
  );
  const fence = createFenceControl(
    () => proxy.counts(),
    (state, { opened, backlog }) =>
      logger.warn(
        { opened, openedAtFence: state.openedAtFence, open: proxy.counters.open, backlog },
        'client connected while fenced: fence broken',
      ),
  );
  const source = {
    bootId: proxy.bootId,
    startedAt: proxy.startedAt,
    counters: proxy.counters,
    counts: () => proxy.counts(),
    fence,
    stopping: () => stopping,
  };
  // the bound addresses, for the handoff checks (set once both listen)
  let bound: { listen: HostPort; stats: HostPort } = { listen: options.listen, stats: options.stats };
  const statsServer: StatsServer = createStatsServer({
    source,
    registry: createSidecarMetrics(source),
    upstream: upstreamAddress,
    logger,
    ...(tokenFile !== undefined ? { tokenFile } : {}),
    handoffContext: () => ({ ...bound, upstream: upstreamAddress }),
  });

  const bind = async (what: string, address: HostPort, start: () => Promise<{ port: number }>) => {
    try {
      return { host: address.host, port: (await start()).port };
    } catch (error) {
      throw new UsageError(`cannot listen on ${address.host}:${address.port} (${what}): ${errorCode(error)}`);
    }
  };
  const stats = await bind('--stats', options.stats, () =>
    statsServer.listen(options.stats.host, options.stats.port),
  );
  let listen: HostPort;
  try {
    listen = await bind('--listen', options.listen, () =>
      proxy.listen(options.listen.host, options.listen.port),
    );
  } catch (error) {
    await statsServer.close();
    throw error;
  }

  bound = { listen, stats };

  const lingerMs = options['handoff-linger'] * 1000;
  let stopped: Promise<boolean> | undefined;
  const stop = (graceMs: number) =>
    (stopped ??= (async () => {
      stopping = true;
      const deadline = Date.now() + graceMs;
      const handoff = fence.state().handoff;
      if (handoff) {
        proxy.handOff(handoff);
        logger.info(
          { handoff: formatHostPort(handoff), lingerMs, graceMs },
          'handing off: new connections go to the handoff address while they keep arriving',
        );
        logger.flush();
        const lingered = await lingerWhileArriving(proxy, lingerMs, deadline);
        logger.info({ handedOff: proxy.counters.handedOff, ms: lingered }, 'handoff linger over');
      }
      await proxy.stopAccepting();
      const remainingMs = Math.max(0, deadline - Date.now());
      logger.info(
        { open: proxy.counters.open, graceMs: remainingMs },
        'stopped accepting; waiting for open connections',
      );
      logger.flush();
      const drained = await proxy.waitForDrain(remainingMs);
      if (!drained) {
        logger.warn({ open: proxy.counters.open }, 'grace period over: resetting open connections');
        proxy.destroyAll();
        await proxy.waitForDrain(1000);
      }
      await statsServer.close();
      logger.info({ drained, ...snapshot(source) }, 'sidecar stopped');
      return drained;
    })());

  logger.info(
    { listen, upstream, stats, engine, bootId: proxy.bootId, fenceControl: tokenFile !== undefined },
    'sidecar serving',
  );
  // tests and operators wait for this line; the batched logger would hold it for up to a second
  logger.flush();
  return { proxy, engine, listen, stats, stop };
}

/**
 * Waits while connections keep arriving: until none was accepted for lingerMs, or the deadline.
 * Resolves with how long it waited (ms).
 */
async function lingerWhileArriving(proxy: Proxy, lingerMs: number, deadline: number): Promise<number> {
  const arrived = () => {
    const { opened, backlog } = proxy.counts();
    return opened + backlog;
  };
  const started = Date.now();
  let seen = arrived();
  let quietSince = started;
  for (;;) {
    const now = Date.now();
    const end = Math.min(quietSince + lingerMs, deadline);
    if (now >= end) return now - started;
    await sleep(Math.min(LINGER_POLL_MS, end - now));
    const count = arrived();
    if (count !== seen) {
      seen = count;
      quietSince = Date.now();
    }
  }
}

/** How often the handoff linger looks for new connections. */
const LINGER_POLL_MS = 50;

export async function runSidecarCommand(options: SidecarOptions): Promise<number> {
  // before the data path runs hot, so its code is compiled under these flags
  for (const flag of SIDECAR_V8_FLAGS) setFlagsFromString(flag);
  const logger = createLogger({ level: options['log-level'], component: 'sidecar' });
  // The handlers come first: once "sidecar serving" is logged, clients are served (the native
  // data path needs nothing from this thread), and a SIGTERM before the handlers existed would
  // kill the process with its connections. One during start-up stops right after it.
  const signalled = shutdownSignal();
  const running = await startSidecar(options, logger);
  const signal = await signalled;
  logger.info({ signal, open: running.proxy.counters.open }, 'shutting down');
  await running.stop(options.grace * 1000).catch(() => undefined);
  return 0;
}

const invokedDirectly = process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`Usage: sidecar [flags]\n\nFlags:\n${optionsHelp(SIDECAR_OPTIONS)}\n`);
  } else {
    try {
      process.exitCode = await runSidecarCommand(parseOptions(args, SIDECAR_OPTIONS));
    } catch (error) {
      if (!(error instanceof UsageError)) throw error;
      process.stderr.write(`sidecar: ${error.message}\n`);
      process.exitCode = 2;
    }
  }
}
