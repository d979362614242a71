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

import { UsageError } from '../../cli/errors.ts';
import { parseOptions } from '../../cli/options.ts';
import type { HostPort } from '../../cli/options.ts';
import { bearerToken, tokenFromFileText, tokensMatch } from '../../sidecar/auth.ts';
import { UNFENCED, connectionAccepted, fence, unfence } from '../../sidecar/fence.ts';
import type { RunningSidecar } from '../../sidecar/main.ts';
import { SIDECAR_OPTIONS, sameEndpoint, startSidecar } from '../../sidecar/main.ts';
import { cleanups, connect as connectTo, echoServer, roundTrip, runCleanups } from './sidecar-support.ts';

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
): Promise<{ status: number; body: string; json: () => Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${running.stats.port}${path}`, {
    method: init.method ?? 'GET',
    headers: init.token === undefined ? {} : { authorization: `Bearer ${init.token}` },
  });
  const body = await res.text();
  return { status: res.status, body, json: () => JSON.parse(body) as Record<string, unknown> };
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
      bootId: running.proxy.bootId,
    });
    expect(new Date(before['startedAt'] as string).getTime()).toBeLessThanOrEqual(Date.now());
    expect((await http(running, '/healthz')).status).toBe(200);
    expect((await http(running, '/readyz')).status).toBe(200);
    expect(await http(running, '/drained')).toMatchObject({ status: 200 });

    const socket = await connect(running);
    expect(await roundTrip(socket, 'hello')).toBe('hello');
    const during = (await http(running, '/stats')).json();
    expect(during).toMatchObject({ open: 1, opened: 1, closed: 0, bytesIn: 5, bytesOut: 5 });
    expect(typeof during['lastActivity']).toBe('string');
    const drained = await http(running, '/drained');
    expect(drained.status).toBe(503);
    expect(drained.json()).toEqual({ open: 1 });

    const metrics = (await http(running, '/metrics')).body;
    expect(metrics).toContain('buildkit_fleet_sidecar_open_connections 1');
    expect(metrics).toContain('buildkit_fleet_sidecar_connections_opened_total 1');
    expect(metrics).toContain('buildkit_fleet_sidecar_received_bytes_total 5');
    expect(metrics).toContain('buildkit_fleet_sidecar_sent_bytes_total 5');
    expect(metrics).toContain(`buildkit_fleet_sidecar_info{boot_id="${running.proxy.bootId}"} 1`);
    expect(metrics).toContain('buildkit_fleet_sidecar_process_cpu_seconds_total');

    socket.end();
    await until('closed', () => running.proxy.counters.closed === 1);
    expect((await http(running, '/drained')).status).toBe(200);
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
    if (process.platform === 'linux') expect(value('process_open_fds')).toBeGreaterThan(2);
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

    const up = await sidecar(await echoServer());
    expect((await http(up, '/readyz')).status).toBe(200);
    // the stats port outlives the listener while a connection drains
    const socket = await connect(up);
    const stopping = up.stop(5000);
    expect((await http(up, '/readyz')).status).toBe(503);
    expect((await http(up, '/stats')).json()).toMatchObject({ stopping: true, open: 1 });
    expect(await roundTrip(socket, 'still')).toBe('still');
    socket.end();
    expect(await stopping).toBe(true);
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
      opened: 1,
      closed: 0,
      fenced: true,
      fenceBroken: false,
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
    expect((await http(running, '/fence')).json()).toMatchObject({
      fenced: true,
      fenceBroken: false,
      open: 0,
    });

    const late = await connect(running);
    expect(await roundTrip(late, 'still served')).toBe('still served');
    expect((await http(running, '/fence')).json()).toMatchObject({
      fenced: true,
      fenceBroken: true,
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

  test('pure transitions', () => {
    const f = fence(UNFENCED, 1000);
    expect(f).toEqual({ fenced: true, fenceBroken: false, fencedAtMs: 1000 });
    expect(connectionAccepted(UNFENCED)).toEqual({ state: UNFENCED, broke: false });
    const broken = connectionAccepted(f);
    expect(broken).toEqual({ state: { ...f, fenceBroken: true }, broke: true });
    expect(connectionAccepted(broken.state).broke).toBe(false);
    expect(fence(broken.state, 2000)).toBe(broken.state);
    expect(unfence(broken.state)).toEqual(UNFENCED);
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
    });
    expect(parsed).toEqual({
      listen: { host: '0.0.0.0', port: 2000 },
      upstream: { host: '127.0.0.1', port: 2001 },
      stats: { host: '127.0.0.1', port: 2002 },
      'token-file': '/var/run/token',
      grace: 30,
      'log-level': 'debug',
    });
  });

  test('sameEndpoint', () => {
    expect(sameEndpoint({ host: '0.0.0.0', port: 1 }, { host: '127.0.0.1', port: 1 })).toBe(true);
    expect(sameEndpoint({ host: '127.0.0.1', port: 1 }, { host: '127.0.0.2', port: 1 })).toBe(false);
    expect(sameEndpoint({ host: '0.0.0.0', port: 0 }, { host: '0.0.0.0', port: 0 })).toBe(false);
  });
});
