// The sidecar's stats port and fence control, in process with real sockets on 127.0.0.1, plus the
// pure pieces (fence transitions, token checks, option validation).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import perfHooks from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { jest } from '@jest/globals';
import { pino } from 'pino';
// prom-client stays out of the sidecar; here it is the reference the sidecar's writer must match
import { Counter as PromCounter, Gauge as PromGauge, Registry as PromRegistry } from 'prom-client';

import { UsageError } from '../../../flags/errors.ts';
import { parseOptions } from '../../../flags/options.ts';
import type { HostPort } from '../../../flags/options.ts';
import { bearerToken, tokenFromFileText, tokensMatch } from '../../../sidecar/auth.ts';
import { UNFENCED, createFenceControl, fence, isClean, observe, unfence } from '../../../sidecar/fence.ts';
import type { RunningSidecar } from '../../../sidecar/main.ts';
import { SIDECAR_OPTIONS, sameEndpoint, startSidecar } from '../../../sidecar/main.ts';
import { chooseEngine } from '../../../sidecar/engines.ts';
import {
  PROMETHEUS_CONTENT_TYPE,
  createMetricsText,
  escapeHelp,
  escapeLabelValue,
  formatValue,
} from '../../../sidecar/metrics-text.ts';
import type { ProxyCounters } from '../../../sidecar/proxy.ts';
import { createSidecarMetrics, openFilesLimit } from '../../../sidecar/stats.ts';
import { cleanups, connect as connectTo, echoServer, roundTrip, runCleanups } from '../../support/sidecar.ts';

const connect = (running: RunningSidecar) => connectTo(running.listen.port);

jest.setTimeout(20_000);

const logger = pino({ level: 'silent' });
const dir = mkdtempSync(join(tmpdir(), 'bkf-sidecar-'));
const tokenFile = join(dir, 'token');
writeFileSync(tokenFile, 'first-token\n');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

afterEach(runCleanups);

function options(upstream: HostPort, extra: string[] = []) {
  return parseOptions(
    [
      '--listen',
      '127.0.0.1:0',
      '--stats',
      '127.0.0.1:0',
      '--upstream',
      `${upstream.host}:${upstream.port}`,
      ...extra,
    ],
    SIDECAR_OPTIONS,
    {},
  );
}

async function sidecar(upstream: HostPort, extra: string[] = ['--token-file', tokenFile]) {
  const running = await startSidecar(options(upstream, extra), logger);
  cleanups.push(() => running.stop(0));
  return running;
}

async function http(
  running: RunningSidecar,
  path: string,
  init: { method?: string; token?: string } = {},
): Promise<{
  status: number;
  body: string;
  contentType: string | null;
  json: () => Record<string, unknown>;
}> {
  const res = await fetch(`http://127.0.0.1:${running.stats.port}${path}`, {
    method: init.method ?? 'GET',
    headers: init.token === undefined ? {} : { authorization: `Bearer ${init.token}` },
  });
  const body = await res.text();
  return {
    status: res.status,
    body,
    contentType: res.headers.get('content-type'),
    json: () => JSON.parse(body) as Record<string, unknown>,
  };
}

async function until(what: string, predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

describe('stats port', () => {
  test('/stats, /healthz, /drained and /metrics follow the traffic; probes are not activity', async () => {
    const running = await sidecar(await echoServer());
    const before = (await http(running, '/stats')).json();
    expect(before).toMatchObject({
      open: 0,
      opened: 0,
      closed: 0,
      bytesIn: 0,
      bytesOut: 0,
      lastActivity: null,
      fenced: false,
      fenceBroken: false,
      backlog: 0,
      handedOff: 0,
      handoff: null,
      bootId: running.proxy.bootId,
    });
    expect(new Date(before['startedAt'] as string).getTime()).toBeLessThanOrEqual(Date.now());
    expect((await http(running, '/healthz')).status).toBe(200);
    expect((await http(running, '/readyz')).status).toBe(200);
    expect(await http(running, '/drained')).toMatchObject({ status: 200 });

    const socket = await connect(running);
    expect(await roundTrip(socket, 'hello')).toBe('hello');
    const during = (await http(running, '/stats')).json();
    expect(during).toMatchObject({ open: 1, backlog: 0, opened: 1, closed: 0, bytesIn: 5, bytesOut: 5 });
    expect(typeof during['lastActivity']).toBe('string');
    const drained = await http(running, '/drained');
    expect(drained.status).toBe(503);
    expect(drained.json()).toEqual({ open: 1, backlog: 0 });

    const scrape = await http(running, '/metrics');
    expect(scrape.contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
    const metrics = scrape.body;
    expect(metrics).toContain('# TYPE buildkit_fleet_sidecar_open_connections gauge\n');
    expect(metrics).toContain('buildkit_fleet_sidecar_open_connections 1');
    expect(metrics).toContain('buildkit_fleet_sidecar_backlog_connections 0');
    expect(metrics).toContain('buildkit_fleet_sidecar_connections_opened_total 1');
    expect(metrics).toContain('buildkit_fleet_sidecar_received_bytes_total 5');
    expect(metrics).toContain('buildkit_fleet_sidecar_sent_bytes_total 5');
    expect(metrics).toContain(`buildkit_fleet_sidecar_info{boot_id="${running.proxy.bootId}"} 1`);
    expect(metrics).toContain('buildkit_fleet_sidecar_process_cpu_seconds_total');
    const families = parseExposition(metrics);
    expect(families.get('buildkit_fleet_sidecar_sent_bytes_total')).toEqual({
      help: 'Bytes from buildkitd to clients.',
      type: 'counter',
      samples: [{ labels: {}, value: 5 }],
    });

    socket.end();
    await until('closed', () => running.proxy.counters.closed === 1);
    expect(await http(running, '/drained')).toMatchObject({ status: 200, body: '{"open":0,"backlog":0}\n' });
    // readyz connects to buildkitd directly: it never shows up as a client connection
    expect((await http(running, '/readyz')).status).toBe(200);
    const after = (await http(running, '/stats')).json();
    expect(after).toMatchObject({ open: 0, opened: 1, closed: 1, lastActivity: during['lastActivity'] });
    expect(await http(running, '/nope')).toMatchObject({ status: 404 });
    expect(await http(running, '/stats', { method: 'POST' })).toMatchObject({ status: 405 });
  });

  test('/metrics has cheap process metrics read at scrape time, and no event-loop monitor', async () => {
    // prom-client's default metrics sample the event loop every 10 ms with this histogram
    const monitor = jest.spyOn(perfHooks, 'monitorEventLoopDelay');
    cleanups.push(() => monitor.mockRestore());
    const startedBefore = Date.now() / 1000;
    const running = await sidecar(await echoServer());
    const text = (await http(running, '/metrics')).body;
    expect(monitor).not.toHaveBeenCalled();
    // every line is valid exposition format, and every family has HELP, TYPE and one sample
    const families = parseExposition(text);
    expect([...families.keys()]).toEqual(SIDECAR_METRIC_NAMES);
    for (const [name, { help, type, samples }] of families) {
      expect({ name, help: Boolean(help), type: Boolean(type), samples: samples.length }).toEqual({
        name,
        help: true,
        type: true,
        samples: 1,
      });
    }
    const value = (name: string): number => {
      const match = new RegExp(`^buildkit_fleet_sidecar_${name} (\\S+)$`, 'm').exec(text);
      if (!match) throw new Error(`${name} missing from /metrics:\n${text}`);
      return Number(match[1]);
    };
    // the sidecar runs in this (jest) process: its numbers are this process's
    const rss = value('process_resident_memory_bytes');
    expect(rss).toBeGreaterThan(10 * 2 ** 20);
    expect(rss).toBeLessThan(8 * 2 ** 30);
    const cpu = value('process_cpu_seconds_total');
    expect(cpu).toBeGreaterThan(0);
    expect(cpu).toBeCloseTo(
      value('process_cpu_user_seconds_total') + value('process_cpu_system_seconds_total'),
      1,
    );
    expect(cpu).toBeLessThan(process.uptime() * 64);
    const start = value('process_start_time_seconds');
    expect(start).toBeLessThanOrEqual(startedBefore + 1);
    expect(start).toBeGreaterThan(startedBefore - process.uptime() - 5);
    const heapUsed = value('nodejs_heap_size_used_bytes');
    expect(heapUsed).toBeGreaterThan(2 ** 20);
    expect(heapUsed).toBeLessThanOrEqual(value('nodejs_heap_size_total_bytes'));
    expect(value('nodejs_external_memory_bytes')).toBeGreaterThan(0);
    if (process.platform === 'linux') {
      expect(value('process_open_fds')).toBeGreaterThan(2);
      expect(value('process_max_fds')).toBeGreaterThanOrEqual(value('process_open_fds')!);
    }
    expect(text).toContain(`buildkit_fleet_sidecar_nodejs_version_info{version="${process.version}"} 1`);
    // nothing from collectDefaultMetrics: no lag histogram, no GC observer, no heap-space walk
    expect(text).not.toMatch(/eventloop_lag|gc_duration|heap_space|active_handles/);
    // computed per scrape, not frozen at start
    const later = (await http(running, '/metrics')).body;
    const cpuLater = Number(/^buildkit_fleet_sidecar_process_cpu_seconds_total (\S+)$/m.exec(later)?.[1]);
    expect(cpuLater).toBeGreaterThanOrEqual(cpu);
  });

  test('/readyz fails while buildkitd does not accept connections, and once stopping', async () => {
    const parked = net.createServer();
    await new Promise<void>((resolve) => parked.listen(0, '127.0.0.1', resolve));
    const port = (parked.address() as AddressInfo).port;
    await new Promise((resolve) => parked.close(resolve));
    const running = await sidecar({ host: '127.0.0.1', port });
    expect(await http(running, '/readyz')).toMatchObject({ status: 503 });
    expect((await http(running, '/stats')).json()).toMatchObject({ opened: 0 });
  });

  describe.each(['native', 'js'])('%s engine', (engine) => {
    const start = async () => sidecar(await echoServer(), ['--token-file', tokenFile, '--engine', engine]);

    test('a client is counted the moment its connect returns: open or, not accepted yet, backlog', async () => {
      const running = await start();
      // /stats right after each connect, racing the proxy's accept: wherever the client is, it shows
      const sockets: net.Socket[] = [];
      for (let i = 1; i <= 30; i++) {
        sockets.push(await connect(running));
        const stats = (await http(running, '/stats')).json();
        expect({ visible: (stats['open'] as number) + (stats['backlog'] as number) }).toEqual({ visible: i });
        const drained = await http(running, '/drained');
        expect(drained.status).toBe(503);
      }
      sockets.forEach((socket) => socket.destroy());
      await until('closed', () => running.proxy.counters.closed === 30);
      expect((await http(running, '/drained')).status).toBe(200);
    });

    test('stopping: a client that connected just before is served, not reset, and /stats shows it', async () => {
      const up = await start();
      expect((await http(up, '/readyz')).status).toBe(200);
      // no round trip first: the client may still wait in the listen backlog when the stop begins
      const socket = await connect(up);
      const stopping = up.stop(5000);
      expect((await http(up, '/readyz')).status).toBe(503);
      const stats = (await http(up, '/stats')).json();
      expect(stats).toMatchObject({ stopping: true });
      expect((stats['open'] as number) + (stats['backlog'] as number)).toBe(1);
      // the stats port outlives the listener while the connection drains
      expect(await roundTrip(socket, 'still')).toBe('still');
      expect((await http(up, '/stats')).json()).toMatchObject({ stopping: true, open: 1, backlog: 0 });
      socket.end();
      expect(await stopping).toBe(true);
      expect(up.proxy.counters).toMatchObject({ opened: 1, closed: 1, upstreamFailures: 0 });
    });
  });

  test('every start has a new boot id', async () => {
    const upstream = await echoServer();
    const a = await sidecar(upstream);
    const b = await sidecar(upstream);
    expect(a.proxy.bootId).not.toBe(b.proxy.bootId);
    expect(a.proxy.bootId).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe('fence control', () => {
  test('without a valid token: 401 and nothing changes', async () => {
    const running = await sidecar(await echoServer());
    for (const token of [undefined, 'wrong', 'first-token-but-longer', '']) {
      const reply = await http(running, '/fence', {
        method: 'POST',
        ...(token === undefined ? {} : { token }),
      });
      expect(reply.status).toBe(401);
      expect(reply.body).not.toContain('first-token');
    }
    expect(await http(running, '/unfence', { method: 'POST', token: 'nope' })).toMatchObject({ status: 401 });
    expect((await http(running, '/fence')).json()).toMatchObject({ fenced: false, fenceBroken: false });
  });

  test('fenced, a new connection is still served but breaks the fence; unfence clears it', async () => {
    const running = await sidecar(await echoServer());
    const early = await connect(running);
    expect(await roundTrip(early, 'a')).toBe('a');

    const fenced = await http(running, '/fence', { method: 'POST', token: 'first-token' });
    expect(fenced.status).toBe(200);
    expect(fenced.json()).toEqual({
      bootId: running.proxy.bootId,
      open: 1,
      backlog: 0,
      opened: 1,
      closed: 0,
      fenced: true,
      fenceBroken: false,
      clean: false,
      handoff: null,
    });
    // a connection open before the fence does not break it (the controller sees open: 1)
    expect(await roundTrip(early, 'b')).toBe('b');
    expect((await http(running, '/fence')).json()).toMatchObject({
      fenced: true,
      fenceBroken: false,
      open: 1,
    });
    early.end();
    await until('closed', () => running.proxy.counters.closed === 1);
    // the only connection closed: the fence is clean, the pod may go
    expect((await http(running, '/fence')).json()).toMatchObject({
      fenced: true,
      fenceBroken: false,
      clean: true,
      open: 0,
      backlog: 0,
    });

    const late = await connect(running);
    expect(await roundTrip(late, 'still served')).toBe('still served');
    expect((await http(running, '/fence')).json()).toMatchObject({
      fenced: true,
      fenceBroken: true,
      clean: false,
      open: 1,
      opened: 2,
    });
    expect((await http(running, '/stats')).json()).toMatchObject({ fenced: true, fenceBroken: true });
    // a retried POST /fence does not erase the break
    expect((await http(running, '/fence', { method: 'POST', token: 'first-token' })).json()).toMatchObject({
      fenceBroken: true,
    });

    const unfenced = await http(running, '/unfence', { method: 'POST', token: 'first-token' });
    expect(unfenced.json()).toMatchObject({ fenced: false, fenceBroken: false, open: 1 });
    expect((await http(running, '/metrics')).body).toContain('buildkit_fleet_sidecar_fenced 0');
  });

  test('the token file is re-read: a rotated Secret takes effect without a restart', async () => {
    const file = join(dir, 'rotating');
    writeFileSync(file, 'old');
    const running = await sidecar(await echoServer(), ['--token-file', file]);
    expect((await http(running, '/fence', { method: 'POST', token: 'old' })).status).toBe(200);
    writeFileSync(file, 'new\n');
    expect((await http(running, '/unfence', { method: 'POST', token: 'old' })).status).toBe(401);
    expect((await http(running, '/unfence', { method: 'POST', token: 'new' })).status).toBe(200);
    rmSync(file);
    // a vanished Secret closes the control (503, the caller is not to blame) and changes nothing
    expect((await http(running, '/fence', { method: 'POST', token: 'new' })).status).toBe(503);
    expect((await http(running, '/fence')).json()).toMatchObject({ fenced: false });
  });

  test('a token file not mounted yet (optional Secret) starts with the control closed (503) until it appears', async () => {
    const file = join(dir, 'not-yet');
    const running = await sidecar(await echoServer(), ['--token-file', file]);
    expect((await http(running, '/fence', { method: 'POST', token: 'later' })).status).toBe(503);
    expect((await http(running, '/fence')).json()).toMatchObject({ fenced: false });
    writeFileSync(file, 'later\n');
    expect((await http(running, '/fence', { method: 'POST', token: 'later' })).status).toBe(200);
  });

  test('without --token-file the control is disabled (403)', async () => {
    const running = await sidecar(await echoServer(), []);
    expect((await http(running, '/fence', { method: 'POST', token: 'x' })).status).toBe(403);
    expect((await http(running, '/fence')).json()).toMatchObject({ fenced: false });
  });

  test('pure transitions: a fence breaks when the opened counter passes its value at the fence, or a client waits', () => {
    const f = fence(UNFENCED, 1000, 7);
    expect(f).toEqual({
      fenced: true,
      fenceBroken: false,
      fencedAtMs: 1000,
      openedAtFence: 7,
      handoff: null,
    });
    expect(observe(UNFENCED, { opened: 9, backlog: 2 })).toEqual({ state: UNFENCED, broke: false });
    // connections that closed under the fence do not matter, only ones accepted under it
    expect(observe(f, { opened: 7, backlog: 0 })).toEqual({ state: f, broke: false });
    const broken = observe(f, { opened: 8, backlog: 0 });
    expect(broken).toEqual({ state: { ...f, fenceBroken: true }, broke: true });
    // a client waiting in the listen backlog will be accepted under the fence: it breaks it too
    expect(observe(f, { opened: 7, backlog: 1 })).toEqual({
      state: { ...f, fenceBroken: true },
      broke: true,
    });
    expect(observe(broken.state, { opened: 9, backlog: 0 }).broke).toBe(false);
    expect(fence(broken.state, 2000, 9)).toBe(broken.state);
    expect(unfence(broken.state)).toEqual(UNFENCED);
    // clean: fenced, unbroken, nothing open, nobody waiting
    expect(isClean(f, 0, 0)).toBe(true);
    expect(isClean(f, 1, 0)).toBe(false);
    expect(isClean(f, 0, 1)).toBe(false);
    expect(isClean(broken.state, 0, 0)).toBe(false);
    expect(isClean(UNFENCED, 0, 0)).toBe(false);
    // a handoff address comes with a POST, replaces an earlier one, and survives a retry without one
    const at = { host: '10.0.0.7', port: 1234 };
    const withHandoff = fence(UNFENCED, 1000, 7, at);
    expect(withHandoff).toMatchObject({ fenced: true, handoff: at });
    expect(fence(withHandoff, 2000, 8)).toBe(withHandoff);
    const moved = fence(broken.state, 3000, 9, { host: '10.0.0.8', port: 1 });
    expect(moved).toEqual({ ...broken.state, handoff: { host: '10.0.0.8', port: 1 } });
    expect(unfence(withHandoff)).toEqual(UNFENCED);
  });

  test('the live fence reads the counter and the backlog: broken once, reported once, cleared by unfence', () => {
    let opened = 3;
    let backlog = 0;
    const reports: { opened: number; backlog: number }[] = [];
    const control = createFenceControl(
      () => ({ opened, backlog }),
      (_state, arrivals) => reports.push(arrivals),
    );
    expect(control.fence(100)).toMatchObject({ fenced: true, openedAtFence: 3 });
    expect(control.state().fenceBroken).toBe(false);
    opened = 5;
    expect(control.state().fenceBroken).toBe(true);
    expect(control.state().fenceBroken).toBe(true);
    expect(reports).toEqual([{ opened: 5, backlog: 0 }]);
    // a retried fence keeps the break
    expect(control.fence(200)).toMatchObject({ fenceBroken: true, fencedAtMs: 100 });
    expect(control.unfence()).toEqual(UNFENCED);
    expect(control.fence(300)).toMatchObject({ fenceBroken: false, openedAtFence: 5 });
    control.unfence();
    // a client already waiting when the fence is set breaks it at once
    backlog = 1;
    expect(control.fence(400)).toMatchObject({ fenced: true, fenceBroken: true });
    expect(reports).toEqual([
      { opened: 5, backlog: 0 },
      { opened: 5, backlog: 1 },
    ]);
  });

  test('token parsing and comparison', () => {
    expect(tokenFromFileText('  abc \n')).toBe('abc');
    expect(tokenFromFileText('\n')).toBeUndefined();
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bearer abc')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeUndefined();
    expect(bearerToken('Bearer ')).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
    expect(tokensMatch('abc', 'abc')).toBe(true);
    expect(tokensMatch('abc', 'abd')).toBe(false);
    expect(tokensMatch('abc', 'abcd')).toBe(false);
  });
});

describe('options', () => {
  const start = async (args: string[], env: NodeJS.ProcessEnv = {}) =>
    startSidecar(parseOptions(args, SIDECAR_OPTIONS, env), logger);

  test('bad input is a clear UsageError', async () => {
    await expect(start(['--listen', '127.0.0.1:0'])).rejects.toThrow(/--upstream is required/);
    await expect(start(['--upstream', 'nonsense'])).rejects.toThrow(UsageError);
    await expect(start(['--upstream', 'nonsense'])).rejects.toThrow(/must be host:port/);
    await expect(start(['--listen', '0.0.0.0:1234', '--upstream', '127.0.0.1:1234'])).rejects.toThrow(
      /connect to itself/,
    );
    await expect(
      start(['--listen', ':1234', '--stats', ':1234', '--upstream', '127.0.0.1:1']),
    ).rejects.toThrow(/--stats must differ/);
    await expect(start(['--upstream', '127.0.0.1:0'])).rejects.toThrow(/other than 0/);
    await expect(start(['--upstream', '127.0.0.1:1', '--token-file', dir])).rejects.toThrow(
      /--token-file: EISDIR/,
    );
    writeFileSync(join(dir, 'empty'), '\n');
    await expect(
      start([
        '--listen',
        '127.0.0.1:0',
        '--stats',
        '127.0.0.1:0',
        '--upstream',
        '127.0.0.1:1',
        '--token-file',
        join(dir, 'empty'),
      ]),
    ).rejects.toThrow(/is empty/);
    await expect(start(['--grace', 'soon', '--upstream', '127.0.0.1:1'])).rejects.toThrow(
      /number of seconds/,
    );
  });

  test('--upstream may be a name: it is looked up once at start (localhost, from the hosts file)', async () => {
    const upstream = await echoServer();
    const running = await sidecar({ host: 'localhost', port: upstream.port });
    const socket = await connectTo(running.listen.port);
    cleanups.push(() => socket.destroy());
    expect(await roundTrip(socket, 'via a name')).toBe('via a name');
  });

  test('a port in use is a UsageError naming the flag', async () => {
    const upstream = await echoServer();
    await expect(
      start([
        '--listen',
        `127.0.0.1:${upstream.port}`,
        '--stats',
        '127.0.0.1:0',
        '--upstream',
        '127.0.0.1:1',
      ]),
    ).rejects.toThrow(/--listen\): EADDRINUSE/);
  });

  test('environment variables stand in for flags', () => {
    const parsed = parseOptions([], SIDECAR_OPTIONS, {
      BKF_SIDECAR_LISTEN: ':2000',
      BKF_SIDECAR_UPSTREAM: '127.0.0.1:2001',
      BKF_SIDECAR_STATS: '127.0.0.1:2002',
      BKF_SIDECAR_TOKEN_FILE: '/var/run/token',
      BKF_SIDECAR_GRACE: '30',
      BKF_SIDECAR_LOG_LEVEL: 'debug',
      BKF_SIDECAR_ENGINE: 'js',
      BKF_SIDECAR_HANDOFF_LINGER: '2.5',
    });
    expect(parsed).toEqual({
      engine: 'js',
      'handoff-linger': 2.5,
      listen: { host: '0.0.0.0', port: 2000 },
      upstream: { host: '127.0.0.1', port: 2001 },
      stats: { host: '127.0.0.1', port: 2002 },
      'token-file': '/var/run/token',
      grace: 30,
      'log-level': 'debug',
    });
  });

  test('--engine: auto runs the native data path when it is built; js runs the JavaScript one; both proxy', async () => {
    const upstream = await echoServer();
    const auto = await sidecar(upstream, []);
    expect(auto.engine).toBe('native');
    const js = await sidecar(upstream, ['--engine', 'js']);
    expect(js.engine).toBe('js');
    for (const running of [auto, js]) {
      const client = await connect(running);
      expect(await roundTrip(client, 'through')).toBe('through');
      expect(running.proxy.counters).toMatchObject({ opened: 1, bytesIn: 7, bytesOut: 7 });
    }
    expect(() => options(upstream, ['--engine', 'fast'])).toThrow(
      new UsageError('--engine "fast": must be one of auto, native, js'),
    );
  });

  test('choosing the engine: auto falls back to js with the reason; native refuses to start without it', () => {
    expect(chooseEngine('js', 'not built')).toEqual({ engine: 'js' });
    expect(chooseEngine('auto', undefined)).toEqual({ engine: 'native' });
    expect(chooseEngine('native', undefined)).toEqual({ engine: 'native' });
    expect(chooseEngine('auto', 'not built')).toEqual({ engine: 'js', fallback: 'not built' });
    expect(() => chooseEngine('native', 'not built')).toThrow(new UsageError('--engine native: not built'));
  });

  test('sameEndpoint', () => {
    expect(sameEndpoint({ host: '0.0.0.0', port: 1 }, { host: '127.0.0.1', port: 1 })).toBe(true);
    expect(sameEndpoint({ host: '127.0.0.1', port: 1 }, { host: '127.0.0.2', port: 1 })).toBe(false);
    expect(sameEndpoint({ host: '0.0.0.0', port: 0 }, { host: '0.0.0.0', port: 0 })).toBe(false);
  });
});

test('openFilesLimit reads the soft limit of /proc/self/limits', () => {
  const limits = (soft: string) =>
    'Limit                     Soft Limit           Hard Limit           Units     \n' +
    'Max processes             95360                95360                processes \n' +
    `Max open files            ${soft.padEnd(20)} 1048576              files     \n`;
  expect(openFilesLimit(limits('64'))).toBe(64);
  expect(openFilesLimit(limits('unlimited'))).toBe(Infinity);
  expect(openFilesLimit('Max processes 1 1 processes\n')).toBeNaN();
  if (process.platform === 'linux') expect(openFilesLimit()).toBeGreaterThan(0);
});

/** Every family the sidecar's /metrics has, in order (the descriptor gauges on Linux only). */
const SIDECAR_METRIC_NAMES = [
  'open_connections',
  'backlog_connections',
  'connections_opened_total',
  'connections_closed_total',
  'upstream_failures_total',
  'connections_handed_off_total',
  'received_bytes_total',
  'sent_bytes_total',
  'spliced_bytes_total',
  'last_activity_timestamp_seconds',
  'fenced',
  'fence_broken',
  'info',
  'process_cpu_user_seconds_total',
  'process_cpu_system_seconds_total',
  'process_cpu_seconds_total',
  'process_start_time_seconds',
  'process_resident_memory_bytes',
  'nodejs_heap_size_used_bytes',
  'nodejs_heap_size_total_bytes',
  'nodejs_external_memory_bytes',
  ...(process.platform === 'linux' ? ['process_open_fds', 'process_max_fds'] : []),
  'nodejs_version_info',
].map((n) => `buildkit_fleet_sidecar_${n}`);

interface ParsedFamily {
  help?: string;
  type?: string;
  samples: { labels: Record<string, string>; value: number }[];
}

/**
 * A strict line-by-line checker of the Prometheus text format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format): throws naming
 * the first offending line. Checks the HELP/TYPE/sample grammar, the escapes (HELP: `\\` and
 * `\n` only; label values: `\\`, `\"` and `\n` only), valid metric and label names, Go float
 * values, at most one HELP and one TYPE per family and TYPE before its samples, families not
 * interleaved, no repeated label name or series, and a final line feed. Returns the families
 * with unescaped HELP text and label values.
 */
function parseExposition(text: string): Map<string, ParsedFamily> {
  const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  const families = new Map<string, ParsedFamily>();
  const series = new Set<string>();
  const finished = new Set<string>();
  let current: string | undefined;
  if (text !== '' && !text.endsWith('\n')) throw new Error('the text does not end with a line feed');
  const lines = text.split('\n').slice(0, -1);
  const familyOf = (sampleName: string): string => {
    for (const suffix of ['_bucket', '_sum', '_count']) {
      const base = sampleName.slice(0, -suffix.length);
      const type = families.get(base)?.type;
      if (sampleName.endsWith(suffix) && (type === 'histogram' || type === 'summary')) return base;
    }
    return sampleName;
  };
  const enter = (name: string, n: number): ParsedFamily => {
    if (current !== name) {
      if (finished.has(name)) throw new Error(`line ${n}: ${name} continues after another family`);
      if (current !== undefined) finished.add(current);
      current = name;
    }
    let family = families.get(name);
    if (!family) families.set(name, (family = { samples: [] }));
    return family;
  };
  lines.forEach((line, i) => {
    const n = i + 1;
    const fail = (why: string): never => {
      throw new Error(`line ${n} (${JSON.stringify(line)}): ${why}`);
    };
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const help = new RegExp(`^#[ \\t]+HELP[ \\t]+(${NAME})(?:[ \\t](.*))?$`).exec(line);
      if (help) {
        const doc = help[2] ?? '';
        if (!/^(?:[^\\]|\\[\\n])*$/.test(doc)) fail('bad escape in HELP text');
        const family = enter(help[1]!, n);
        if (family.help !== undefined) fail('second HELP');
        family.help = doc.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
        return;
      }
      const type = new RegExp(`^#[ \\t]+TYPE[ \\t]+(${NAME})[ \\t]+(\\S+)[ \\t]*$`).exec(line);
      if (type) {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(type[2]!)) fail('unknown type');
        const family = enter(type[1]!, n);
        if (family.type !== undefined) fail('second TYPE');
        if (family.samples.length > 0) fail('TYPE after samples');
        family.type = type[2]!;
        return;
      }
      if (/^#[ \t]+(HELP|TYPE)\b/.test(line)) fail('malformed HELP or TYPE line');
      return; // any other comment
    }
    const name = new RegExp(`^${NAME}`).exec(line)?.[0] ?? fail('no metric name');
    let at = name.length;
    const labels: Record<string, string> = {};
    if (line[at] === '{') {
      at++;
      for (;;) {
        while (line[at] === ' ' || line[at] === '\t') at++;
        if (line[at] === '}') break;
        const label = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(at))?.[0] ?? fail(`bad label name at ${at}`);
        if (label.startsWith('__')) fail(`reserved label name ${label}`);
        if (label in labels) fail(`label ${label} repeated`);
        at += label.length;
        if (line.slice(at, at + 2) !== '="') fail(`expected =" after ${label}`);
        at += 2;
        let value = '';
        for (;;) {
          const c = line[at++];
          if (c === undefined) fail('unterminated label value');
          if (c === '"') break;
          if (c === '\\') {
            const e = line[at++];
            if (e === 'n') value += '\n';
            else if (e === '\\' || e === '"') value += e;
            else fail(`bad escape \\${e ?? ''} in a label value`);
          } else value += c;
        }
        labels[label] = value;
        while (line[at] === ' ' || line[at] === '\t') at++;
        if (line[at] === ',') at++;
        else if (line[at] !== '}') fail(`expected , or } at ${at}`);
      }
      at++;
    }
    const rest =
      /^[ \t]+(\S+)(?:[ \t]+(-?\d+))?[ \t]*$/.exec(line.slice(at)) ?? fail('expected " value [timestamp]"');
    const raw = rest[1]!;
    if (!/^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?[iI][nN][fF]|[nN][aA][nN])$/.test(raw)) {
      fail(`bad value ${raw}`);
    }
    const value = /inf/i.test(raw) ? (raw.startsWith('-') ? -Infinity : Infinity) : Number(raw);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (series.has(key)) fail('repeated series');
    series.add(key);
    enter(familyOf(name), n).samples.push({ labels, value });
  });
  return families;
}

describe('metrics text', () => {
  const NASTY = 'a "quoted" C:\\path\\ and\na second line';

  test('the checker refuses what is not the text format', () => {
    const good =
      '# HELP m_total Help with \\\\ and \\n.\n# TYPE m_total counter\nm_total{a="x\\"y\\\\z\\n"} 1\n';
    expect(parseExposition(good).get('m_total')).toEqual({
      help: 'Help with \\ and \n.',
      type: 'counter',
      samples: [{ labels: { a: 'x"y\\z\n' }, value: 1 }],
    });
    expect(parseExposition('g{a="1",} +Inf 1700000000000\n\ng2 NaN\n').get('g')?.samples).toEqual([
      { labels: { a: '1' }, value: Infinity },
    ]);
    const bad: [string, RegExp][] = [
      ['m 1', /line feed/],
      ['1m 1\n', /no metric name/],
      ['m-x 1\n', /expected " value/],
      ['m 1,5\n', /bad value/],
      ['m one\n', /bad value/],
      ['m\n', /expected " value/],
      ['m{a="x} 1\n', /unterminated/],
      ['m{a="x\\ty"} 1\n', /bad escape/],
      ['m{a=x} 1\n', /expected =" after a/],
      ['m{a="1",a="2"} 1\n', /repeated/],
      ['m{__name__="1"} 1\n', /reserved/],
      ['m{a="1" b="2"} 1\n', /expected , or }/],
      ['m 1\nm 2\n', /repeated series/],
      ['# HELP m bad \\t escape\nm 1\n', /bad escape in HELP/],
      ['# HELP m one\n# HELP m two\nm 1\n', /second HELP/],
      ['# TYPE m gauge\n# TYPE m gauge\nm 1\n', /second TYPE/],
      ['m 1\n# TYPE m gauge\n', /TYPE after samples/],
      ['# TYPE m gauges\nm 1\n', /unknown type/],
      ['# TYPE m\n', /malformed/],
      ['a 1\nb 1\na{x="1"} 1\n', /continues after another family/],
    ];
    for (const [text, why] of bad) expect(() => parseExposition(text)).toThrow(why);
  });

  test('escaping: label values (\\, " and newline) and HELP text (\\ and newline)', () => {
    expect(escapeLabelValue(NASTY)).toBe('a \\"quoted\\" C:\\\\path\\\\ and\\na second line');
    expect(escapeHelp(NASTY)).toBe('a "quoted" C:\\\\path\\\\ and\\na second line');
    expect(escapeLabelValue('plain-value 1.0')).toBe('plain-value 1.0');

    const m = createMetricsText();
    m.gauge('bkf_test_info', NASTY, () => 1, { value: NASTY, other: '' });
    const text = m.metrics();
    expect(text).toBe(
      [
        '# HELP bkf_test_info a "quoted" C:\\\\path\\\\ and\\na second line',
        '# TYPE bkf_test_info gauge',
        'bkf_test_info{value="a \\"quoted\\" C:\\\\path\\\\ and\\na second line",other=""} 1',
        '',
      ].join('\n'),
    );
    // and it reads back to the original strings
    expect(parseExposition(text).get('bkf_test_info')).toEqual({
      help: NASTY,
      type: 'gauge',
      samples: [{ labels: { value: NASTY, other: '' }, value: 1 }],
    });
  });

  test('the same text as prom-client for the same metrics', async () => {
    const reference = new PromRegistry();
    const ours = createMetricsText();
    const values = [0, 1, 0.5, 1795319492.081, 1e21, 2 ** 53 + 2, -3.25, Infinity, -Infinity];
    values.forEach((value, i) => {
      const help = `${NASTY} #${i}`;
      new PromGauge({ name: `g${i}`, help, registers: [reference] }).set(value);
      ours.gauge(`g${i}`, help, () => value);
      if (Number.isFinite(value) && value >= 0) {
        new PromCounter({ name: `c${i}_total`, help, registers: [reference] }).inc(value);
        ours.counter(`c${i}_total`, help, () => value);
      }
    });
    new PromGauge({ name: 'info', help: 'x', labelNames: ['v'], registers: [reference] })
      .labels(NASTY)
      .set(1);
    ours.gauge('info', 'x', () => 1, { v: NASTY });
    expect(ours.contentType).toBe(reference.contentType);
    expect(ours.metrics()).toBe(await reference.metrics());
    parseExposition(ours.metrics());
  });

  test('values: read at every scrape; NaN and infinities spelled out; counters never negative', () => {
    expect([NaN, Infinity, -Infinity, -0, 1e-7, 12].map(formatValue)).toEqual([
      'NaN',
      '+Inf',
      '-Inf',
      '0',
      '1e-7',
      '12',
    ]);
    let n = 1;
    const m = createMetricsText();
    m.counter('bkf_reads_total', 'Reads.', () => n++);
    expect(m.metrics()).toContain('\nbkf_reads_total 1\n');
    expect(m.metrics()).toContain('\nbkf_reads_total 2\n');
    expect(PROMETHEUS_CONTENT_TYPE).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(createMetricsText().metrics()).toBe('');

    for (const broken of [-1, NaN, Infinity]) {
      const b = createMetricsText();
      b.counter('bkf_broken_total', 'Broken.', () => broken);
      expect(() => b.metrics()).toThrow(/bkf_broken_total: a counter must be finite and not negative/);
    }
    const g = createMetricsText();
    g.gauge('bkf_nan', 'Not a number.', () => NaN);
    expect(g.metrics()).toBe('# HELP bkf_nan Not a number.\n# TYPE bkf_nan gauge\nbkf_nan NaN\n');
    parseExposition(g.metrics());
  });

  test('names are checked when defined', () => {
    const m = createMetricsText();
    m.gauge('ok:name_1', 'Fine.', () => 0);
    expect(() => m.gauge('ok:name_1', 'Again.', () => 0)).toThrow(/already defined/);
    expect(() => m.counter('ok:name_1', 'Again.', () => 0)).toThrow(/already defined/);
    expect(() => m.gauge('1bad', 'x', () => 0)).toThrow(/invalid metric name/);
    expect(() => m.gauge('bad-name', 'x', () => 0)).toThrow(/invalid metric name/);
    expect(() => m.gauge('labels', 'x', () => 0, { 'bad-label': '1' })).toThrow(/invalid label name/);
    expect(() => m.gauge('labels', 'x', () => 0, { __reserved: '1' })).toThrow(/invalid label name/);
    expect(m.metrics()).toBe('# HELP ok:name_1 Fine.\n# TYPE ok:name_1 gauge\nok:name_1 0\n');
  });

  test("the sidecar's metrics: exact names, HELP, TYPE, labels and values from the live counters", () => {
    const counters: ProxyCounters = {
      open: 2,
      opened: 7,
      closed: 5,
      bytesIn: 1234,
      bytesOut: 987654321,
      lastActivityMs: 1795319492081,
      upstreamFailures: 1,
      handedOff: 4,
      splicedBytes: 900000000,
    };
    let backlog = 3;
    const fenceControl = createFenceControl(() => ({ opened: counters.opened, backlog }));
    const metrics = createSidecarMetrics({
      bootId: '7657f7f9-dc7a-461a-9910-594312355752',
      startedAt: new Date(),
      counters,
      counts: () => ({ ...counters, backlog }),
      fence: fenceControl,
      stopping: () => false,
    });
    const text = metrics.metrics();
    expect(metrics.contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
    // byte for byte what prom-client wrote for these metrics before the sidecar dropped it (with
    // the backlog, handoff and splice families added since)
    expect(text.slice(0, text.indexOf('# HELP buildkit_fleet_sidecar_process_cpu_user'))).toBe(
      `# HELP buildkit_fleet_sidecar_open_connections Client connections open now.
# TYPE buildkit_fleet_sidecar_open_connections gauge
buildkit_fleet_sidecar_open_connections 2

# HELP buildkit_fleet_sidecar_backlog_connections Client connections the kernel has completed that wait in the listen backlog, not accepted yet.
# TYPE buildkit_fleet_sidecar_backlog_connections gauge
buildkit_fleet_sidecar_backlog_connections 3

# HELP buildkit_fleet_sidecar_connections_opened_total Client connections accepted.
# TYPE buildkit_fleet_sidecar_connections_opened_total counter
buildkit_fleet_sidecar_connections_opened_total 7

# HELP buildkit_fleet_sidecar_connections_closed_total Client connections closed.
# TYPE buildkit_fleet_sidecar_connections_closed_total counter
buildkit_fleet_sidecar_connections_closed_total 5

# HELP buildkit_fleet_sidecar_upstream_failures_total Client connections reset because buildkitd could not be reached.
# TYPE buildkit_fleet_sidecar_upstream_failures_total counter
buildkit_fleet_sidecar_upstream_failures_total 1

# HELP buildkit_fleet_sidecar_connections_handed_off_total Client connections accepted while stopping and proxied to the handoff address instead of buildkitd.
# TYPE buildkit_fleet_sidecar_connections_handed_off_total counter
buildkit_fleet_sidecar_connections_handed_off_total 4

# HELP buildkit_fleet_sidecar_received_bytes_total Bytes from clients to buildkitd.
# TYPE buildkit_fleet_sidecar_received_bytes_total counter
buildkit_fleet_sidecar_received_bytes_total 1234

# HELP buildkit_fleet_sidecar_sent_bytes_total Bytes from buildkitd to clients.
# TYPE buildkit_fleet_sidecar_sent_bytes_total counter
buildkit_fleet_sidecar_sent_bytes_total 987654321

# HELP buildkit_fleet_sidecar_spliced_bytes_total Bytes of both directions moved by splice through a pipe, not copied through the sidecar (the bulk path); part of received and sent.
# TYPE buildkit_fleet_sidecar_spliced_bytes_total counter
buildkit_fleet_sidecar_spliced_bytes_total 900000000

# HELP buildkit_fleet_sidecar_last_activity_timestamp_seconds Unix time of the last byte in either direction (0 before the first).
# TYPE buildkit_fleet_sidecar_last_activity_timestamp_seconds gauge
buildkit_fleet_sidecar_last_activity_timestamp_seconds 1795319492.081

# HELP buildkit_fleet_sidecar_fenced 1 while the controller fences this pod.
# TYPE buildkit_fleet_sidecar_fenced gauge
buildkit_fleet_sidecar_fenced 0

# HELP buildkit_fleet_sidecar_fence_broken 1 when a client connected under the current fence.
# TYPE buildkit_fleet_sidecar_fence_broken gauge
buildkit_fleet_sidecar_fence_broken 0

# HELP buildkit_fleet_sidecar_info The boot id of this sidecar process (changes on every start).
# TYPE buildkit_fleet_sidecar_info gauge
buildkit_fleet_sidecar_info{boot_id="7657f7f9-dc7a-461a-9910-594312355752"} 1

`,
    );
    expect(text).toMatch(
      /\n# HELP buildkit_fleet_sidecar_process_cpu_seconds_total User and system CPU time spent, in seconds\.\n# TYPE buildkit_fleet_sidecar_process_cpu_seconds_total counter\nbuildkit_fleet_sidecar_process_cpu_seconds_total \d+(\.\d+)?\n\n/,
    );
    expect(
      text.endsWith(`\nbuildkit_fleet_sidecar_nodejs_version_info{version="${process.version}"} 1\n`),
    ).toBe(true);
    const families = parseExposition(text);
    expect([...families.keys()]).toEqual(SIDECAR_METRIC_NAMES);
    expect(families.get('buildkit_fleet_sidecar_process_resident_memory_bytes')?.type).toBe('gauge');

    // read when scraped: the next scrape sees the counters and the fence as they are then
    counters.open = 0;
    counters.closed = 7;
    counters.lastActivityMs = null;
    backlog = 0;
    fenceControl.fence(Date.now());
    counters.opened++;
    counters.handedOff++;
    counters.splicedBytes += 65536;
    const later = parseExposition(metrics.metrics());
    const value = (name: string) => later.get(`buildkit_fleet_sidecar_${name}`)?.samples[0]?.value;
    expect(value('open_connections')).toBe(0);
    expect(value('backlog_connections')).toBe(0);
    expect(value('connections_handed_off_total')).toBe(5);
    expect(value('spliced_bytes_total')).toBe(900065536);
    expect(value('connections_closed_total')).toBe(7);
    expect(value('last_activity_timestamp_seconds')).toBe(0);
    expect(value('fenced')).toBe(1);
    expect(value('fence_broken')).toBe(1);
  });
});
