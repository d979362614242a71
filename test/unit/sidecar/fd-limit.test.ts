// The real sidecar process at its file descriptor limit (ulimit -n), for both engines: what is
// open keeps flowing, the proxy does not spin or flood its log, nothing is blamed on buildkitd,
// and new clients get through again once descriptors free up. The native engine makes a client's
// upstream socket before it accepts the client, so at the limit new clients wait in the backlog
// and are served later (and shown as `backlog` meanwhile); libuv (the js engine) closes them at once.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { jest } from '@jest/globals';

import { cleanups, runCleanups, startSidecarToEcho } from '../../support/sidecar.ts';
import type { SidecarProcess } from '../../support/sidecar.ts';
import { rawHttp, tokenFile } from './helpers.ts';

jest.setTimeout(60_000);
afterEach(runCleanups);

const TOKEN = 'fd-limit-token';
const token = tokenFile(TOKEN);

/**
 * Low enough to reach with a few dozen connections (node itself holds about 25 descriptors). Each
 * connection takes two, so the two limits between them meet both cases: the last free descriptor
 * is the one a client would be accepted with, or the one its upstream socket would need.
 */
const FILE_LIMITS = [64, 65];
const OUT_OF_DESCRIPTORS =
  'proxy cannot take new connections: out of file descriptors or socket memory (open connections keep flowing; retrying)';

function client(port: number): net.Socket {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  cleanups.push(() => socket.destroy());
  return socket;
}

/** Sends `text`; resolves with what came back first: the echo, an error code, or 'end'. */
function exchange(socket: net.Socket, text: string): Promise<string> {
  const outcome = new Promise<string>((resolve) => {
    socket.once('data', (c: Buffer) => resolve(c.toString()));
    socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    socket.once('end', () => resolve('end'));
  });
  socket.write(text);
  return outcome;
}

/** Sends `payload` and resolves with the sha256 of as many bytes coming back (the upstream echoes). */
function bulkEcho(socket: net.Socket, payload: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let length = 0;
    const onData = (chunk: Buffer) => {
      hash.update(chunk);
      length += chunk.length;
      if (length < payload.length) return;
      socket.off('data', onData);
      resolve(hash.digest('hex'));
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(payload);
  });
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** The value of the sidecar's metric `name` (no labels) in a /metrics answer; NaN if absent. */
const gaugeValue = (metrics: string, name: string) =>
  Number(new RegExp(`^buildkit_fleet_sidecar_${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
const splicedBytes = (metrics: string) => gaugeValue(metrics, 'spliced_bytes_total');

/** user + system CPU of a process, in clock ticks (100 a second on Linux) */
function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** /stats once `what` holds; the stats server shares the descriptor limit, so it is asked again until then. */
async function statsUntil(
  port: number,
  what: (s: Record<string, number>) => boolean = () => true,
): Promise<Record<string, number>> {
  const deadline = Date.now() + 15_000;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      last = await (
        await fetch(`http://127.0.0.1:${port}/stats`, { signal: AbortSignal.timeout(2000) })
      ).json();
      if (what(last as Record<string, number>)) return last as Record<string, number>;
    } catch (error) {
      last = error;
    }
    await sleep(50);
  }
  throw new Error(
    `/stats did not get there in 15 s; last: ${String(last instanceof Error ? last : JSON.stringify(last))}`,
  );
}

const stats = (port: number) => statsUntil(port);

async function startLimited(engine: string, limit: number) {
  const sidecar = await startSidecarToEcho(
    ['--engine', engine, '--token-file', token],
    ['sh', '-c', `ulimit -n ${limit} && exec "$0" "$@"`],
  );
  expect(sidecar.serving['engine']).toBe(engine);
  return sidecar;
}

interface AtLimit {
  served: net.Socket[];
  /** the first client the sidecar could not take, and what it got (if anything yet) */
  turnedAway: { socket: net.Socket; text: string; outcome: Promise<string> };
}

/**
 * Opens connections one at a time until one is not served, and returns those that were. A client
 * counts as not served when its exchange ends in anything but its echo, or (`limitLogged`) when
 * the sidecar logs that it is out of descriptors while the client waits.
 */
async function fillToLimit(listen: number, limitLogged?: Promise<unknown>): Promise<AtLimit> {
  const served: net.Socket[] = [];
  for (let i = 0; i < 100; i++) {
    const socket = client(listen);
    const text = `client ${i}`;
    const outcome = exchange(socket, text);
    const first = await Promise.race([outcome, ...(limitLogged ? [limitLogged.then(() => 'limit')] : [])]);
    if (first !== text) return { served, turnedAway: { socket, text, outcome } };
    served.push(socket);
  }
  throw new Error(`100 connections were served: the descriptor limit did not apply`);
}

async function expectStillServed(served: net.Socket[]): Promise<void> {
  const replies = await Promise.all(served.map((socket, i) => exchange(socket, `again ${i}`)));
  expect(replies).toEqual(served.map((_, i) => `again ${i}`));
}

/** `promise`, or a failure naming `what` and showing the sidecar's log if it takes over 20 s. */
async function step<T>(what: string, child: SidecarProcess, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const log = child.lines.map((l) => JSON.stringify(l)).join('\n');
      reject(new Error(`${what}: nothing after 20 s; the sidecar logged:\n${log}`));
    }, 20_000);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** CPU ticks the sidecar burns in a second while clients are being turned away or held. */
async function ticksInOneSecond(pid: number): Promise<number> {
  const before = cpuTicks(pid);
  await sleep(1000);
  return cpuTicks(pid) - before;
}

describe.each(FILE_LIMITS)('ulimit -n %i', (limit) => {
  test('native engine: open connections keep flowing, new clients wait in the backlog and are served once descriptors free up', async () => {
    const { child, listen, stats: statsPort } = await startLimited('native', limit);
    // a stats connection made (and the fence set) while descriptors are left: at the limit the
    // stats port cannot accept a new one
    const control = await rawHttp(statsPort);
    const [fenced] = await control.send({ method: 'POST', path: '/fence', token: TOKEN });
    expect(fenced!.json()).toMatchObject({ fenced: true, clean: true });
    const { served, turnedAway } = await step(
      'filling up to the limit',
      child,
      fillToLimit(listen, child.waitFor(OUT_OF_DESCRIPTORS)),
    );
    expect(served.length).toBeGreaterThanOrEqual(5);
    // the held client is connected and waits in the backlog: the sidecar says so, and the fence
    // is not clean (its count is read without a new descriptor)
    const [fence, snapshot] = await step(
      'the fence at the limit',
      child,
      control.send({ path: '/fence' }, { path: '/stats' }),
    );
    expect(fence!.json()).toMatchObject({ backlog: 1, open: served.length, clean: false, fenceBroken: true });
    expect(snapshot!.json()).toMatchObject({ backlog: 1, open: served.length });

    // the engine retries every 100 ms; neither the retries nor the held client make it spin or log again
    expect(await ticksInOneSecond(child.proc.pid!)).toBeLessThan(50);
    expect(child.lines.filter((l) => l['msg'] === OUT_OF_DESCRIPTORS)).toHaveLength(1);
    expect(child.lines.find((l) => l['msg'] === OUT_OF_DESCRIPTORS)).toMatchObject({
      level: 50,
      err: 'EMFILE',
    });
    await step('the open connections at the limit', child, expectStillServed(served));
    // bulk at the limit: no descriptors for a pipe, so both directions keep copying, bytes intact
    const bulk = randomBytes(8 * 1024 * 1024);
    expect(await step('a bulk echo at the limit', child, bulkEcho(served[1]!, bulk))).toBe(sha256(bulk));
    const [atLimit] = await step('metrics at the limit', child, control.send({ path: '/metrics' }));
    expect({ status: atLimit!.status, body: atLimit!.status === 200 ? '' : atLimit!.body }).toEqual({
      status: 200,
      body: '',
    });
    expect(splicedBytes(atLimit!.body)).toBe(0);
    // the descriptor count cannot be read at the limit (the readdir needs one): it is the limit
    expect(gaugeValue(atLimit!.body, 'process_max_fds')).toBe(limit);
    expect(gaugeValue(atLimit!.body, 'process_open_fds')).toBe(limit);
    // nor the RSS (/proc/self/stat): NaN, while the heap figures come from V8 and are there
    expect(atLimit!.body).toMatch(/^buildkit_fleet_sidecar_process_resident_memory_bytes NaN$/m);
    expect(gaugeValue(atLimit!.body, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);

    // one connection leaves: the held client takes its two descriptors, its first bytes intact,
    // and with nobody else waiting the episode is over
    served.shift()!.destroy();
    expect(await step('the held client', child, turnedAway.outcome)).toBe(turnedAway.text);
    const recovered = await step('recovery', child, child.waitFor('proxy accepting new connections again'));
    expect(recovered['ms']).toBeGreaterThanOrEqual(1000);

    for (const socket of served) socket.destroy();
    const fresh = client(listen);
    expect(await step('a new client', child, exchange(fresh, 'fresh'))).toBe('fresh');
    const after = await step('stats', child, stats(statsPort));
    expect(after).toMatchObject({ open: 2, opened: served.length + 3, upstreamFailures: 0 });
    // with descriptors free again the same transfer goes through pipes
    expect(await step('a bulk echo', child, bulkEcho(fresh, bulk))).toBe(sha256(bulk));
    const [metrics] = await step('metrics', child, control.send({ path: '/metrics' }));
    expect(splicedBytes(metrics!.body)).toBeGreaterThan(bulk.length);
  });

  test('js engine: open connections keep flowing, new clients are closed at once, and are served again once descriptors free up', async () => {
    const { child, listen, stats: statsPort } = await startLimited('js', limit);
    const { served, turnedAway } = await step('filling up to the limit', child, fillToLimit(listen));
    expect(served.length).toBeGreaterThanOrEqual(5);
    // libuv closes clients it cannot take (the reserve-descriptor trick), or the proxy resets one
    // it took with its last descriptor: an end or a reset, and never an upstream failure
    expect(['end', 'ECONNRESET']).toContain(await step('the turned-away client', child, turnedAway.outcome));

    const more = Array.from({ length: 5 }, (_, i) => exchange(client(listen), `more ${i}`));
    expect(await ticksInOneSecond(child.proc.pid!)).toBeLessThan(50);
    for (const outcome of await step('five more clients', child, Promise.all(more))) {
      expect(['end', 'ECONNRESET']).toContain(outcome);
    }
    await step('the open connections at the limit', child, expectStillServed(served));
    // libuv's own closes are silent; the proxy's resets (one limit of the two) are logged once
    expect(child.lines.filter((l) => l['msg'] === OUT_OF_DESCRIPTORS).length).toBeLessThanOrEqual(1);

    for (const socket of served) socket.destroy();
    await step(
      'all closed',
      child,
      statsUntil(statsPort, (s) => s['open'] === 0),
    );
    const fresh = client(listen);
    expect(await step('a new client', child, exchange(fresh, 'fresh'))).toBe('fresh');
    expect(await step('stats', child, stats(statsPort))).toMatchObject({ open: 1, upstreamFailures: 0 });
  });
});
