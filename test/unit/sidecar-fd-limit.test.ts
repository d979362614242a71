// The real sidecar process at its file descriptor limit (ulimit -n), for both engines: what is
// open keeps flowing, the proxy does not spin or flood its log, nothing is blamed on buildkitd,
// and new clients get through again once descriptors free up. The native engine makes a client's
// upstream socket before it accepts the client, so at the limit new clients wait in the backlog
// and are served later; libuv (the js engine) closes them at once.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { jest } from '@jest/globals';

import { cleanups, echoServer, runCleanups, startSidecarProcess } from './sidecar-support.ts';
import type { SidecarProcess } from './sidecar-support.ts';

jest.setTimeout(60_000);
afterEach(runCleanups);

/** Low enough to reach with a few dozen connections (node itself holds about 25 descriptors). */
const FILE_LIMIT = 64;
const OUT_OF_DESCRIPTORS =
  'proxy cannot take new connections: out of file descriptors or socket memory (open connections keep flowing; retrying)';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

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

/** user + system CPU of a process, in clock ticks (100 a second on Linux) */
function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

async function stats(port: number): Promise<Record<string, number>> {
  // the stats server shares the descriptor limit: retry until it can take the request
  for (;;) {
    try {
      return (await (await fetch(`http://127.0.0.1:${port}/stats`)).json()) as Record<string, number>;
    } catch {
      await sleep(50);
    }
  }
}

async function statsUntil(port: number, what: (s: Record<string, number>) => boolean) {
  for (;;) {
    const s = await stats(port);
    if (what(s)) return s;
    await sleep(50);
  }
}

async function startLimited(
  engine: string,
): Promise<{ child: SidecarProcess; listen: number; statsPort: number }> {
  const upstream = await echoServer();
  const args = [
    '--listen',
    '127.0.0.1:0',
    '--stats',
    '127.0.0.1:0',
    '--upstream',
    `127.0.0.1:${upstream.port}`,
  ];
  const child = startSidecarProcess(
    [...args, '--engine', engine],
    ['sh', '-c', `ulimit -n ${FILE_LIMIT} && exec "$0" "$@"`],
  );
  const serving = await child.waitFor('sidecar serving');
  expect(serving['engine']).toBe(engine);
  return {
    child,
    listen: (serving['listen'] as { port: number }).port,
    statsPort: (serving['stats'] as { port: number }).port,
  };
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
  for (let i = 0; i < FILE_LIMIT; i++) {
    const socket = client(listen);
    const text = `client ${i}`;
    const outcome = exchange(socket, text);
    const first = await Promise.race([outcome, ...(limitLogged ? [limitLogged.then(() => 'limit')] : [])]);
    if (first !== text) return { served, turnedAway: { socket, text, outcome } };
    served.push(socket);
  }
  throw new Error(`${FILE_LIMIT} connections were served: the descriptor limit did not apply`);
}

async function expectStillServed(served: net.Socket[]): Promise<void> {
  const replies = await Promise.all(served.map((socket, i) => exchange(socket, `again ${i}`)));
  expect(replies).toEqual(served.map((_, i) => `again ${i}`));
}

/** CPU ticks the sidecar burns in a second while clients are being turned away or held. */
async function ticksInOneSecond(pid: number): Promise<number> {
  const before = cpuTicks(pid);
  await sleep(1000);
  return cpuTicks(pid) - before;
}

test('native engine: open connections keep flowing, new clients wait in the backlog and are served once descriptors free up', async () => {
  const { child, listen, statsPort } = await startLimited('native');
  const { served, turnedAway } = await fillToLimit(listen, child.waitFor(OUT_OF_DESCRIPTORS));
  expect(served.length).toBeGreaterThanOrEqual(5);

  // the engine retries every 100 ms; neither the retries nor the held client make it spin or log again
  expect(await ticksInOneSecond(child.proc.pid!)).toBeLessThan(50);
  expect(child.lines.filter((l) => l['msg'] === OUT_OF_DESCRIPTORS)).toHaveLength(1);
  expect(child.lines.find((l) => l['msg'] === OUT_OF_DESCRIPTORS)).toMatchObject({
    level: 50,
    err: 'EMFILE',
  });
  await expectStillServed(served);

  // the held client is served, its first bytes intact, once the others leave
  for (const socket of served) socket.destroy();
  expect(await turnedAway.outcome).toBe(turnedAway.text);
  const recovered = await child.waitFor('proxy accepting new connections again');
  expect(recovered['ms']).toBeGreaterThanOrEqual(1000);

  const fresh = client(listen);
  expect(await exchange(fresh, 'fresh')).toBe('fresh');
  const after = await stats(statsPort);
  expect(after).toMatchObject({ open: 2, opened: served.length + 2, upstreamFailures: 0 });
});

test('js engine: open connections keep flowing, new clients are closed at once, and are served again once descriptors free up', async () => {
  const { child, listen, statsPort } = await startLimited('js');
  const { served, turnedAway } = await fillToLimit(listen);
  expect(served.length).toBeGreaterThanOrEqual(5);
  // libuv closes clients it cannot take (the reserve-descriptor trick): an end or a reset
  expect(['end', 'ECONNRESET']).toContain(await turnedAway.outcome);

  const more = Array.from({ length: 5 }, (_, i) => exchange(client(listen), `more ${i}`));
  expect(await ticksInOneSecond(child.proc.pid!)).toBeLessThan(50);
  for (const outcome of await Promise.all(more)) expect(['end', 'ECONNRESET']).toContain(outcome);
  await expectStillServed(served);

  for (const socket of served) socket.destroy();
  await statsUntil(statsPort, (s) => s['open'] === 0);
  const fresh = client(listen);
  expect(await exchange(fresh, 'fresh')).toBe('fresh');
  expect(await stats(statsPort)).toMatchObject({ open: 1, upstreamFailures: 0 });
});
