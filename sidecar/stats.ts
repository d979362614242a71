// The sidecar's own port (plain HTTP, separate from the proxied port so nothing here counts as
// client activity): what the controller reads to decide idleness, Prometheus metrics, probes,
// the preStop drain check and the fence control.
//
//   GET  /stats    JSON counters (StatsSnapshot)
//   GET  /metrics  Prometheus text
//   GET  /healthz  200 while the process runs
//   GET  /readyz   200 when buildkitd accepts a TCP connection (no byte sent) and we are not stopping;
//                  ?check=grpc: when buildkitd answers the gRPC health check SERVING (grpc-health.ts)
//   GET  /drained  200 when open == 0 and backlog == 0, else 503
//   GET  /fence    the fence (FenceAnswer)
//   POST /fence    bearer token; fences (?handoff=<ip>:<port> records the handoff address), answers
//                  the fence
//   POST /unfence  bearer token; clears the fence and the handoff address
// GET /fence is unauthenticated like /stats: it reveals nothing /stats does not. `backlog` is the
// number of clients the kernel has connected that the proxy has not accepted yet
// (listen-backlog.ts): every answer that shows `open` shows it, and treats it like open.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { readFileSync, readdirSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';

import type { HostPort } from '../flags/options.ts';
import { authorize } from './auth.ts';
import type { FenceControl, FenceState } from './fence.ts';
import { isClean } from './fence.ts';
import { grpcHealthCheck } from './grpc-health.ts';
import type { HandoffContext } from './handoff.ts';
import { formatHostPort, parseHandoff } from './handoff.ts';
import type { ProxyCounters, ProxyCounts } from './proxy.ts';
import { checkUpstream } from './proxy.ts';
import { listenOn } from '../telemetry/listen.ts';
import type { MetricsText } from './metrics-text.ts';
import { createMetricsText } from './metrics-text.ts';

export interface StatsSnapshot {
  bootId: string;
  open: number;
  /** clients connected by the kernel, waiting in the listen backlog to be accepted */
  backlog: number;
  opened: number;
  closed: number;
  bytesIn: number;
  bytesOut: number;
  lastActivity: string | null;
  startedAt: string;
  fenced: boolean;
  fenceBroken: boolean;
  upstreamFailures: number;
  /** connections proxied to the handoff address (while stopping), part of `opened` */
  handedOff: number;
  /** the handoff address recorded with the fence, `host:port`; null when none */
  handoff: string | null;
  /** SIGTERM received: no new connections (or, with a handoff address, only for it) */
  stopping: boolean;
}

export interface StatsSource {
  bootId: string;
  startedAt: Date;
  counters: Readonly<ProxyCounters>;
  /** open, opened, closed and the listen backlog, read together (Proxy.counts) */
  counts(): ProxyCounts;
  fence: FenceControl;
  stopping(): boolean;
}

/** What GET /fence, POST /fence and POST /unfence answer. */
export interface FenceAnswer {
  bootId: string;
  fenced: boolean;
  fenceBroken: boolean;
  /** fenced, not broken, nothing open and nobody waiting: the pod may go */
  clean: boolean;
  open: number;
  backlog: number;
  opened: number;
  closed: number;
  handoff: string | null;
}

export function snapshot(source: StatsSource): StatsSnapshot {
  const c = source.counters;
  const counts = source.counts();
  const fence: FenceState = source.fence.state();
  return {
    bootId: source.bootId,
    open: counts.open,
    backlog: counts.backlog,
    opened: counts.opened,
    closed: counts.closed,
    bytesIn: c.bytesIn,
    bytesOut: c.bytesOut,
    lastActivity: c.lastActivityMs === null ? null : new Date(c.lastActivityMs).toISOString(),
    startedAt: source.startedAt.toISOString(),
    fenced: fence.fenced,
    fenceBroken: fence.fenceBroken,
    upstreamFailures: c.upstreamFailures,
    handedOff: c.handedOff,
    handoff: fence.handoff && formatHostPort(fence.handoff),
    stopping: source.stopping(),
  };
}

/** The fence as the control answers it, read now (the fence first: its read may see a client). */
export function fenceAnswer(source: StatsSource): FenceAnswer {
  const fence = source.fence.state();
  const c = source.counts();
  return {
    bootId: source.bootId,
    fenced: fence.fenced,
    fenceBroken: fence.fenceBroken,
    clean: isClean(fence, c.open, c.backlog),
    open: c.open,
    backlog: c.backlog,
    opened: c.opened,
    closed: c.closed,
    handoff: fence.handoff && formatHostPort(fence.handoff),
  };
}

/**
 * Metrics read from the live counters at scrape time, so the data path does no metric work.
 * Written by the small text-format writer in metrics-text.ts, not prom-client, which costs the
 * sidecar memory in every pod.
 */
export function createSidecarMetrics(source: StatsSource): MetricsText {
  const metrics = createMetricsText();
  const c = source.counters;
  const { counter, gauge } = metrics;
  gauge('buildkit_fleet_sidecar_open_connections', 'Client connections open now.', () => c.open);
  gauge(
    'buildkit_fleet_sidecar_backlog_connections',
    'Client connections the kernel has completed that wait in the listen backlog, not accepted yet.',
    () => source.counts().backlog,
  );
  counter('buildkit_fleet_sidecar_connections_opened_total', 'Client connections accepted.', () => c.opened);
  counter('buildkit_fleet_sidecar_connections_closed_total', 'Client connections closed.', () => c.closed);
  counter(
    'buildkit_fleet_sidecar_upstream_failures_total',
    'Client connections reset because buildkitd could not be reached.',
    () => c.upstreamFailures,
  );
  counter(
    'buildkit_fleet_sidecar_connections_handed_off_total',
    'Client connections accepted while stopping and proxied to the handoff address instead of buildkitd.',
    () => c.handedOff,
  );
  counter('buildkit_fleet_sidecar_received_bytes_total', 'Bytes from clients to buildkitd.', () => c.bytesIn);
  counter('buildkit_fleet_sidecar_sent_bytes_total', 'Bytes from buildkitd to clients.', () => c.bytesOut);
  counter(
    'buildkit_fleet_sidecar_spliced_bytes_total',
    'Bytes of both directions moved by splice through a pipe, not copied through the sidecar (the bulk path); part of received and sent.',
    () => c.splicedBytes,
  );
  gauge(
    'buildkit_fleet_sidecar_last_activity_timestamp_seconds',
    'Unix time of the last byte in either direction (0 before the first).',
    () => (c.lastActivityMs ?? 0) / 1000,
  );
  gauge('buildkit_fleet_sidecar_fenced', '1 while the controller fences this pod.', () =>
    source.fence.state().fenced ? 1 : 0,
  );
  gauge('buildkit_fleet_sidecar_fence_broken', '1 when a client connected under the current fence.', () =>
    source.fence.state().fenceBroken ? 1 : 0,
  );
  gauge(
    'buildkit_fleet_sidecar_info',
    'The boot id of this sidecar process (changes on every start).',
    () => 1,
    { boot_id: source.bootId },
  );
  processMetrics(metrics);
  return metrics;
}

/**
 * A few process metrics, read only when scraped, so an idle sidecar does nothing. Not
 * prom-client's collectDefaultMetrics: its event-loop-delay histogram samples every 10 ms (an
 * idle sidecar woke about 96 times a second instead of 2), and it adds a GC observer and
 * per-heap-space series. Names and meanings are the usual process_* and nodejs_* ones under the
 * sidecar's prefix.
 */
function processMetrics({ counter, gauge }: MetricsText): void {
  const p = 'buildkit_fleet_sidecar_';
  const cpu = () => process.cpuUsage();
  counter(`${p}process_cpu_user_seconds_total`, 'User CPU time spent, in seconds.', () => cpu().user / 1e6);
  counter(
    `${p}process_cpu_system_seconds_total`,
    'System CPU time spent, in seconds.',
    () => cpu().system / 1e6,
  );
  counter(`${p}process_cpu_seconds_total`, 'User and system CPU time spent, in seconds.', () => {
    const { user, system } = cpu();
    return (user + system) / 1e6;
  });
  const startTime = Math.round(Date.now() / 1000 - process.uptime());
  gauge(
    `${p}process_start_time_seconds`,
    'Start time of the process since the Unix epoch, in seconds.',
    () => startTime,
  );
  // process.memoryUsage() opens /proc/self/stat for the RSS on every call, which fails at the
  // descriptor limit: the heap figures come from V8 itself, and only the RSS needs the file
  gauge(
    `${p}process_resident_memory_bytes`,
    'Resident memory size, in bytes (NaN at the descriptor limit).',
    () => atDescriptorLimit(() => process.memoryUsage.rss(), NaN),
  );
  gauge(
    `${p}nodejs_heap_size_used_bytes`,
    'V8 heap in use, in bytes.',
    () => getHeapStatistics().used_heap_size,
  );
  gauge(
    `${p}nodejs_heap_size_total_bytes`,
    'V8 heap reserved, in bytes.',
    () => getHeapStatistics().total_heap_size,
  );
  gauge(
    `${p}nodejs_external_memory_bytes`,
    'Memory outside the V8 heap held by JavaScript objects (socket buffers among them), in bytes.',
    () => getHeapStatistics().external_memory,
  );
  if (process.platform === 'linux') {
    // read now: at the limit, opening /proc/self/limits would fail like everything else
    const maxFds = openFilesLimit();
    // one readdir per scrape; the proxy holds two descriptors per connection (two more per bulk direction)
    gauge(`${p}process_open_fds`, 'Open file descriptors.', () => openFds(maxFds));
    gauge(`${p}process_max_fds`, 'The limit on open file descriptors (ulimit -n).', () => maxFds);
  }
  gauge(`${p}nodejs_version_info`, 'Node.js version.', () => 1, { version: process.version });
}

/** The soft limit on open descriptors (RLIMIT_NOFILE) from /proc/self/limits; NaN if unreadable. */
export function openFilesLimit(limits?: string): number {
  let text = limits;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/limits', 'utf8');
    } catch {
      return NaN;
    }
  }
  const soft = /^Max open files\s+(\S+)/m.exec(text)?.[1];
  return soft === undefined ? NaN : soft === 'unlimited' ? Infinity : Number(soft);
}

/**
 * Descriptors open now. At the limit the readdir itself cannot get one (EMFILE), and then every
 * descriptor is in use: the count is the limit. A scrape at the limit is when it matters most.
 */
function openFds(maxFds: number): number {
  return atDescriptorLimit(() => readdirSync('/proc/self/fd').length - 1, maxFds);
}

/** `read()`, or `otherwise` when it fails for want of a descriptor (EMFILE). */
function atDescriptorLimit(read: () => number, otherwise: number): number {
  try {
    return read();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EMFILE') return otherwise;
    throw error;
  }
}

export interface StatsServerOptions {
  source: StatsSource;
  /** what /metrics serves (createSidecarMetrics) */
  registry: Pick<MetricsText, 'metrics' | 'contentType'>;
  upstream: HostPort;
  logger: Logger;
  /** the bearer token file guarding /fence and /unfence; without it they answer 403 */
  tokenFile?: string;
  readyTimeoutMs?: number;
  /** what a handoff address is checked against (the bound addresses are known once listening) */
  handoffContext(): HandoffContext;
}

export interface StatsServer {
  listen(host: string, port: number): Promise<AddressInfo>;
  close(): Promise<void>;
}

interface Reply {
  status: number;
  body: unknown;
  contentType?: string;
}

const json = (status: number, body: unknown): Reply => ({ status, body });

/** The parameters of POST /fence: `handoff` once at most, nothing else. */
export function fenceQuery(
  query: URLSearchParams,
  context: HandoffContext,
): { handoff?: HostPort } | { error: string } {
  for (const key of new Set(query.keys())) {
    if (key !== 'handoff') return { error: `unknown parameter ${JSON.stringify(key)} (only handoff)` };
  }
  const values = query.getAll('handoff');
  if (values.length === 0) return {};
  if (values.length > 1) return { error: 'handoff: give it once' };
  const parsed = parseHandoff(values[0]!, context);
  return 'error' in parsed ? parsed : { handoff: parsed.address };
}

export function createStatsServer(options: StatsServerOptions): StatsServer {
  const { source, registry, logger } = options;
  const readyTimeoutMs = options.readyTimeoutMs ?? 1000;

  async function control(
    req: http.IncomingMessage,
    action: 'fence' | 'unfence',
    query: URLSearchParams,
  ): Promise<Reply> {
    if (options.tokenFile === undefined) {
      return json(403, { error: 'fence control is disabled: the sidecar runs without --token-file' });
    }
    const auth = await authorize(req.headers.authorization, options.tokenFile);
    if (!auth.ok) {
      logger.warn({ action, remote: req.socket.remoteAddress, reason: auth.reason }, 'fence request refused');
      return json(auth.status, { error: auth.status === 401 ? 'unauthorized' : 'token unavailable' });
    }
    let handoff: HostPort | undefined;
    if (action === 'fence') {
      const parsed = fenceQuery(query, options.handoffContext());
      if ('error' in parsed) {
        logger.warn(
          { action, remote: req.socket.remoteAddress, reason: parsed.error },
          'fence request refused',
        );
        return json(400, { error: parsed.error });
      }
      handoff = parsed.handoff;
    }
    const before = source.fence.state();
    if (action === 'fence') source.fence.fence(Date.now(), handoff);
    else source.fence.unfence();
    const answer = fenceAnswer(source);
    logger.info(
      {
        action,
        wasFenced: before.fenced,
        fenceBroken: before.fenceBroken,
        open: answer.open,
        backlog: answer.backlog,
        opened: answer.opened,
        ...(handoff ? { handoff: answer.handoff } : {}),
      },
      action === 'fence' ? 'fenced' : 'unfenced',
    );
    return json(200, answer);
  }

  async function ready(query: URLSearchParams): Promise<Reply> {
    const checks = query.getAll('check');
    if (checks.length > 1) return json(400, { error: 'check: give it once' });
    const check = checks[0] ?? 'tcp';
    if (check !== 'tcp' && check !== 'grpc') {
      return json(400, { error: `check ${JSON.stringify(check)}: must be tcp or grpc` });
    }
    if (source.stopping()) return { status: 503, body: 'stopping\n' };
    if (check === 'tcp') {
      const up = await checkUpstream(options.upstream, readyTimeoutMs);
      return up ? { status: 200, body: 'ok\n' } : { status: 503, body: 'buildkitd not accepting\n' };
    }
    const health = await grpcHealthCheck(options.upstream, readyTimeoutMs);
    return health.serving
      ? { status: 200, body: 'ok\n' }
      : { status: 503, body: `buildkitd gRPC health check: ${health.reason}\n` };
  }

  async function route(req: http.IncomingMessage, path: string, query: URLSearchParams): Promise<Reply> {
    const method = req.method ?? 'GET';
    const get = method === 'GET' || method === 'HEAD';
    const allow = (methods: string) => json(405, { error: `use ${methods}` });
    switch (path) {
      case '/stats':
        return get ? json(200, snapshot(source)) : allow('GET');
      case '/metrics':
        if (!get) return allow('GET');
        return { status: 200, body: registry.metrics(), contentType: registry.contentType };
      case '/healthz':
        return get ? { status: 200, body: 'ok\n' } : allow('GET');
      case '/readyz':
        return get ? ready(query) : allow('GET');
      case '/drained': {
        if (!get) return allow('GET');
        const { open, backlog } = source.counts();
        return json(open === 0 && backlog === 0 ? 200 : 503, { open, backlog });
      }
      case '/fence':
        if (method === 'POST') return control(req, 'fence', query);
        return get ? json(200, fenceAnswer(source)) : allow('GET, POST');
      case '/unfence':
        return method === 'POST' ? control(req, 'unfence', query) : allow('POST');
      default:
        return json(404, { error: 'not found' });
    }
  }

  const server = http.createServer({ requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => {
    // bodies are ignored; drain them so keep-alive connections stay usable
    req.resume();
    const url = req.url ?? '/';
    const at = url.indexOf('?');
    const path = at < 0 ? url : url.slice(0, at);
    const query = new URLSearchParams(at < 0 ? '' : url.slice(at + 1));
    route(req, path, query).then(
      (reply) => {
        const text = typeof reply.body === 'string' ? reply.body : `${JSON.stringify(reply.body)}\n`;
        res.writeHead(reply.status, {
          'content-type':
            reply.contentType ??
            (typeof reply.body === 'string' ? 'text/plain; charset=utf-8' : 'application/json'),
          'cache-control': 'no-store',
        });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (error: Error) => {
        logger.error({ path, err: error.message }, 'stats request failed');
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(`${JSON.stringify({ error: 'internal error' })}\n`);
      },
    );
  });
  server.keepAliveTimeout = 5_000;

  return {
    listen: (host, port) => listenOn(server, host, port),
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
