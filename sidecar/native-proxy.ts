// The native data path (sidecar/native/: the epoll loop and its Node-API binding, built by
// scripts/build-native.ts) behind the same Proxy interface as the JavaScript one in proxy.ts. The
// engine runs its own epoll loop on its own thread; this module turns its rare events into log
// lines and promises and exposes its counters, which the loop writes into a Float64Array that
// this side reads at scrape time. The listen backlog is read from /proc (listen-backlog.ts).
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

import { logAcceptFailing, logAcceptingAgain } from './accept-trouble.ts';
import type { BacklogReader } from './listen-backlog.ts';
import { backlogReader } from './listen-backlog.ts';
import type { Proxy, ProxyCounters, ProxyCounts, ProxyOptions } from './proxy.ts';
import { LISTEN_BACKLOG, proxySettings, resolveHostPort } from './proxy.ts';

/** The addon's file, relative to the repository (or the installed package) root. */
export const NATIVE_ENGINE_FILE = 'build/native/proxy-engine.node';

type EngineHandle = object & { readonly __engine: unique symbol };

interface EngineEvent {
  kind:
    'upstream-failure' | 'closed' | 'listener-error' | 'accepting-again' | 'stopped-accepting' | 'drained';
  reason?: string;
  peer?: string;
  ms?: number;
  bytesIn?: number;
  bytesOut?: number;
}

interface NativeEngineModule {
  counterCount: number;
  create(
    upstreamHost: string,
    upstreamPort: number,
    connectTimeoutMs: number,
    debug: boolean,
    counters: Float64Array,
    onEvent: (event: EngineEvent) => void,
  ): EngineHandle;
  listen(engine: EngineHandle, host: string, port: number, backlog: number, keepAliveSeconds: number): number;
  stopAccepting(engine: EngineHandle): void;
  destroyAll(engine: EngineHandle): void;
  watchDrain(engine: EngineHandle, on: boolean): void;
  close(engine: EngineHandle): void;
  handOff(engine: EngineHandle, host: string, port: number): void;
}

// Slots of the counters array (the Counter enum in native/epoll-loop.h).
const OPEN = 0;
const OPENED = 1;
const CLOSED = 2;
const BYTES_IN = 3;
const BYTES_OUT = 4;
const LAST_ACTIVITY_MS = 5;
const UPSTREAM_FAILURES = 6;
const PENDING_BYTES = 7;
const BUFFERS_IN_USE = 8;
const BUFFERS_IDLE = 9;
const HANDED_OFF = 10;
const ACCEPT_SEQ = 11;
const SPLICED_BYTES = 12;
const PIPES_IN_USE = 13;
const PIPES_IDLE = 14;
const COUNTERS = 15;
/** how often counts() reads again when the loop was accepting meanwhile */
const COUNT_ATTEMPTS = 12;
/** the first pause between two such reads; it doubles each time (0.05 ms ... about 100 ms in all) */
const COUNT_FIRST_PAUSE_MS = 0.05;
/** a cell nobody writes: Atomics.wait on it is a sub-millisecond sleep that gives the loop thread the core */
const pauseCell = new Int32Array(new SharedArrayBuffer(4));

/** Where the addon is: next to the sources (sidecar/ → ..) or to the build output (dist/sidecar/ → ../..). */
export function nativeEnginePath(): string | undefined {
  for (const up of ['..', '../..']) {
    const path = fileURLToPath(new URL(`${up}/${NATIVE_ENGINE_FILE}`, import.meta.url));
    if (existsSync(path)) return path;
  }
  return undefined;
}

let loaded: NativeEngineModule | undefined;

/** Loads the addon once; throws an Error saying why it cannot be used. */
export function loadNativeEngine(): NativeEngineModule {
  if (loaded) return loaded;
  if (process.platform !== 'linux') {
    throw new Error(`the native data path needs Linux (epoll); this is ${process.platform}`);
  }
  const path = nativeEnginePath();
  if (!path) {
    throw new Error(
      `${NATIVE_ENGINE_FILE} is not built: run \`npm run build:native\` (needs g++; npm ci runs it when g++ is there)`,
    );
  }
  let engine: NativeEngineModule;
  try {
    engine = createRequire(import.meta.url)(path) as NativeEngineModule;
  } catch (error) {
    throw new Error(`cannot load ${path}: ${(error as Error).message}`, { cause: error });
  }
  if (
    engine.counterCount !== COUNTERS ||
    typeof engine.create !== 'function' ||
    typeof engine.handOff !== 'function'
  ) {
    throw new Error(`${path} is from another version of buildkit-fleet: run \`npm run build:native\``);
  }
  return (loaded = engine);
}

export function createNativeProxy(options: ProxyOptions): Proxy {
  const engine = loadNativeEngine();
  const { upstream: target, logger } = options;
  const { connectTimeoutMs, keepAliveSeconds } = proxySettings(options);
  const view = new Float64Array(COUNTERS);
  const counters: Readonly<ProxyCounters> = {
    get open() {
      return view[OPEN]!;
    },
    get opened() {
      return view[OPENED]!;
    },
    get closed() {
      return view[CLOSED]!;
    },
    get bytesIn() {
      return view[BYTES_IN]!;
    },
    get bytesOut() {
      return view[BYTES_OUT]!;
    },
    get lastActivityMs() {
      return view[LAST_ACTIVITY_MS] === 0 ? null : view[LAST_ACTIVITY_MS]!;
    },
    get upstreamFailures() {
      return view[UPSTREAM_FAILURES]!;
    },
    get handedOff() {
      return view[HANDED_OFF]!;
    },
    get splicedBytes() {
      return view[SPLICED_BYTES]!;
    },
  };
  const events = new EventEmitter();
  let listening = false;
  /** set once stopAccepting() was asked; shared by every caller (the listener closes once) */
  let stopping: Promise<void> | undefined;
  let closed = false;
  /** the listener's accept queue, while it is open */
  let backlog: BacklogReader | undefined;
  const forgetBacklog = () => {
    backlog?.close();
    backlog = undefined;
  };

  const handle = engine.create(
    target.host,
    target.port,
    connectTimeoutMs,
    logger.isLevelEnabled('debug'),
    view,
    onEvent,
  );

  /** Ends the loop thread (resetting what is open); the listener is closed and open is 0 after. */
  const close = () => {
    if (closed) return;
    closed = true;
    engine.close(handle);
    forgetBacklog();
    events.emit('stopped-accepting');
    events.emit('drained');
  };
  /** Stopped accepting with nothing open: the thread has nothing left to do, and goes. */
  const closeWhenDone = () => {
    if (stopping && view[OPEN] === 0) close();
  };

  function onEvent(event: EngineEvent): void {
    switch (event.kind) {
      case 'upstream-failure':
        logger.warn(
          { ...fields(event), reason: event.reason },
          'upstream unreachable, client connection reset',
        );
        break;
      case 'closed':
        if (event.reason) logger.debug({ ...fields(event), reason: event.reason }, 'connection reset');
        else logger.debug(fields(event), 'connection closed');
        break;
      case 'listener-error':
        // the engine reports the start of an episode, not every retry (every 100 ms)
        logAcceptFailing(logger, event.reason ?? 'unknown');
        break;
      case 'accepting-again':
        logAcceptingAgain(logger, event.ms ?? 0);
        break;
      case 'stopped-accepting':
        // the listener is closed: its port may be anybody's now
        forgetBacklog();
        events.emit('stopped-accepting');
        closeWhenDone();
        break;
      case 'drained':
        events.emit('drained');
        closeWhenDone();
        break;
    }
  }

  const fields = (event: EngineEvent) => ({
    peer: event.peer,
    ms: event.ms,
    bytesIn: event.bytesIn,
    bytesOut: event.bytesOut,
    open: view[OPEN],
  });

  let drainWaiters = 0;
  const watch = (delta: number) => {
    drainWaiters += delta;
    if (!closed) engine.watchDrain(handle, drainWaiters > 0 || stopping !== undefined);
  };

  return {
    bootId: randomUUID(),
    startedAt: new Date(),
    counters,
    async listen(host, port) {
      if (listening || closed) throw new Error('proxy is already listening');
      const { host: ip } = await resolveHostPort({ host, port });
      if (listening || closed) throw new Error('proxy is already listening or stopped');
      const bound = engine.listen(handle, ip, port, LISTEN_BACKLOG, keepAliveSeconds);
      listening = true;
      backlog = backlogReader(ip, bound);
      if (backlog.unavailable) {
        logger.warn({ reason: backlog.unavailable }, 'listen backlog unknown: reported as 0');
      }
      return { address: ip, port: bound, family: net.isIPv6(ip) ? 'IPv6' : 'IPv4' };
    },
    stopAccepting() {
      if (!listening || closed) {
        close();
        return Promise.resolve();
      }
      if (stopping) return stopping;
      stopping = new Promise((resolve) => events.once('stopped-accepting', resolve));
      // from now on open reaching 0 is reported: the thread then has nothing left to do (closeWhenDone)
      watch(0);
      engine.stopAccepting(handle);
      return stopping;
    },
    waitForDrain(timeoutMs) {
      if (view[OPEN] === 0 || closed) return Promise.resolve(true);
      return new Promise((resolve) => {
        const finish = (drained: boolean) => {
          clearTimeout(timer);
          events.off('drained', onDrained);
          watch(-1);
          resolve(drained);
        };
        const onDrained = () => {
          if (view[OPEN] === 0) finish(true);
        };
        const timer = setTimeout(() => finish(false), timeoutMs);
        events.on('drained', onDrained);
        watch(1);
        // it may have drained between the first check and the watch
        onDrained();
      });
    },
    destroyAll() {
      if (!closed) engine.destroyAll(handle);
    },
    counts() {
      // The loop accepts on its own thread while this reads: a client leaves the backlog (accept)
      // and then joins the counters. The loop makes kAcceptSeq odd around each accept, so a
      // reading between an even value and the same value again missed nobody. The backlog is
      // read first: a client accepted after that shows twice rather than not at all.
      // An odd value cannot be resolved by reading again at once: the loop thread may have been
      // preempted inside accept4, the client still in the backlog or already out of it and not
      // yet counted. So it pauses, doubling, to let that thread finish the accept.
      let reading: ProxyCounts = { open: 0, opened: 0, closed: 0, backlog: 0 };
      let pauseMs = COUNT_FIRST_PAUSE_MS;
      for (let attempt = 0; attempt < COUNT_ATTEMPTS; attempt++) {
        const seq = view[ACCEPT_SEQ]!;
        const queued = backlog?.read() ?? 0;
        reading = { open: view[OPEN]!, opened: view[OPENED]!, closed: view[CLOSED]!, backlog: queued };
        if (seq % 2 === 0 && view[ACCEPT_SEQ] === seq) return reading;
        if (attempt === COUNT_ATTEMPTS - 1) break;
        Atomics.wait(pauseCell, 0, 0, pauseMs);
        pauseMs *= 2;
      }
      // accepting all along (a burst): count the client being accepted now as waiting; this may
      // show one client twice, never none, so an idle decision never misses it
      return view[ACCEPT_SEQ]! % 2 === 1 ? { ...reading, backlog: reading.backlog + 1 } : reading;
    },
    handOff(to) {
      if (!net.isIP(to.host)) throw new Error(`handoff ${to.host}: an IP address is needed`);
      if (!closed) engine.handOff(handle, to.host, to.port);
    },
    bufferedBytes: () => view[PENDING_BYTES]!,
    readBuffers: () => ({ inUse: view[BUFFERS_IN_USE]!, idle: view[BUFFERS_IDLE]! }),
    pipes: () => ({ inUse: view[PIPES_IN_USE]!, idle: view[PIPES_IDLE]! }),
  };
}
