// The splice itself, in forward mode and after a hold: half-close both ways, resets passed on as
// resets, upstream connect retries, and the forward -> hold fence.
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { jest } from '@jest/globals';

import {
  connect,
  freePort,
  heldClients,
  outcomeOf,
  outcomes,
  receiveAll,
  roundTrip,
  runCleanups,
  sha,
  startActivator,
  until,
  upstreamServer,
  WARN,
} from './helpers.ts';

jest.setTimeout(60_000);
afterEach(runCleanups);

const KEY = 'team-a/bk-1';
const hold = { kind: 'hold' } as const;

/** An upstream that answers a request only after the client's FIN, in parts, then ends. */
function replyAfterFin(socket: net.Socket): void {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('end', async () => {
    const request = Buffer.concat(chunks).toString();
    for (let i = 0; i < 3; i++) {
      socket.write(`part ${i} of reply to ${request}\n`);
      await sleep(10);
    }
    socket.end('done\n');
  });
}
const REPLY = [0, 1, 2].map((i) => `part ${i} of reply to hello\n`).join('') + 'done\n';

async function readToEnd(socket: net.Socket): Promise<string> {
  let text = '';
  socket.on('data', (c: Buffer) => (text += c.toString()));
  await new Promise((resolve) => socket.once('end', resolve));
  return text;
}

test('forward mode: the client half-closes and still receives everything the server sends after', async () => {
  const h = startActivator();
  const upstream = await upstreamServer(replyAfterFin);
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  const client = await connect(port);
  const reply = readToEnd(client);
  client.end('hello');
  expect(await reply).toBe(REPLY);
  await until('closed', () => h.activator.stats().open === 0);
  expect(await outcomes(h.registry, KEY)).toEqual({ forwarded: 1 });
  expect(h.wakes).toEqual([]);
});

test('after a hold: bytes sent while held go first, then the FIN, and the reply still flows back', async () => {
  const h = startActivator();
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  const [client] = (await heldClients(h, KEY, port, 1)) as [net.Socket];
  client.write('hel');
  await until('held bytes read', () => h.activator.stats().bufferedBytes === 3);
  const upstream = await upstreamServer(replyAfterFin);
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  const reply = readToEnd(client);
  client.end('lo');
  expect(await reply).toBe(REPLY);
  expect(await outcomes(h.registry, KEY)).toEqual({ spliced: 1 });
});

test('the server half-closes first: the client can still send, and the server receives it', async () => {
  let received = '';
  let serverEnded!: () => void;
  const serverDone = new Promise<void>((resolve) => (serverEnded = resolve));
  const upstream = await upstreamServer((socket) => {
    socket.end('bye early\n');
    socket.on('data', (c: Buffer) => (received += c.toString()));
    socket.on('end', () => serverEnded());
  });
  const h = startActivator();
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  const client = await connect(port);
  expect(await readToEnd(client)).toBe('bye early\n');
  client.write('still ');
  client.end('talking');
  await serverDone;
  expect(received).toBe('still talking');
  await until('closed', () => h.activator.stats().open === 0);
});

test('a client reset reaches the server as a reset', async () => {
  const upstream = await upstreamServer(() => undefined);
  const h = startActivator();
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  const client = await connect(port);
  client.write('x');
  await until('upstream accepted', () => upstream.accepted.length === 1);
  const server = outcomeOf(upstream.accepted[0]!);
  await until('spliced', () => h.activator.stats().targets[0]!.spliced === 1);
  client.resetAndDestroy();
  expect(await server).toBe('ECONNRESET');
  await until('closed', () => h.activator.stats().open === 0);
});

test('a server reset reaches the client as a reset, not a clean end', async () => {
  const upstream = await upstreamServer((socket) => socket.once('data', () => socket.resetAndDestroy()));
  const h = startActivator();
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  const [client] = (await heldClients(h, KEY, port, 1)) as [net.Socket];
  const outcome = outcomeOf(client);
  client.write('x');
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  expect(await outcome).toBe('ECONNRESET');
  await until('closed', () => h.activator.stats().open === 0);
});

test('backpressure through a splice: a server that stops reading stalls the client, the activator buffers little', async () => {
  let serverSocket: net.Socket | undefined;
  const upstream = await upstreamServer((socket) => {
    socket.pause();
    serverSocket = socket;
  });
  const h = startActivator();
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  const client = await connect(port);
  const payload = randomBytes(64 * 1024 * 1024);
  client.end(payload);
  await until('server socket', () => serverSocket !== undefined);
  await until('client stalled', () => client.writableLength > 0 && h.activator.stats().bufferedBytes > 0);
  // let it run into the stall: while the server reads nothing, the client keeps most of the payload
  await sleep(200);
  expect(client.writableLength).toBeGreaterThan(payload.length / 2);
  expect(h.activator.stats().bufferedBytes).toBeLessThanOrEqual(256 * 1024);
  const got = receiveAll(serverSocket!);
  serverSocket!.resume();
  expect(await got).toEqual({ sha: sha(payload), length: payload.length });
});

test('upstream down at the switch, up within connectTimeoutMs: the held client is spliced after retries', async () => {
  const h = startActivator({ connectTimeoutMs: 10_000 });
  const port = await freePort();
  const upstreamPort = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  const [client] = (await heldClients(h, KEY, port, 1)) as [net.Socket];
  client.write('ping');
  await h.activator.setTargets([
    { key: KEY, port, mode: { kind: 'forward', upstream: { host: '127.0.0.1', port: upstreamPort } } },
  ]);
  await h.logged('upstream connect failed, retrying', { target: KEY, attempt: 2 });
  expect(h.activator.stats().targets[0]).toMatchObject({ connecting: 1, spliced: 0 });
  await upstreamServer(undefined, upstreamPort);
  let echoed = '';
  client.on('data', (c: Buffer) => (echoed += c.toString()));
  await until('echo', () => echoed === 'ping');
  expect(await outcomes(h.registry, KEY)).toEqual({ spliced: 1 });
});

test('upstream never up: the client is reset after connectTimeoutMs, logged and counted upstream_failed', async () => {
  const h = startActivator({ connectTimeoutMs: 400 });
  const port = await freePort();
  const deadPort = await freePort();
  await h.activator.setTargets([
    { key: KEY, port, mode: { kind: 'forward', upstream: { host: '127.0.0.1', port: deadPort } } },
  ]);
  const started = Date.now();
  const client = await connect(port);
  expect(await outcomeOf(client)).toBe('ECONNRESET');
  // retried until the whole budget is spent, not given up early
  expect(Date.now() - started).toBeGreaterThanOrEqual(390);
  expect(await outcomes(h.registry, KEY)).toEqual({ upstream_failed: 1 });
  const line = await h.logged('upstream unreachable: client connection reset');
  expect(line).toMatchObject({
    level: WARN,
    target: KEY,
    outcome: 'upstream_failed',
    upstream: `127.0.0.1:${deadPort}`,
  });
  expect(line.attempts).toBeGreaterThan(2);
});

test('forward -> hold (the fence): a spliced connection keeps flowing, a new one is held and wakes', async () => {
  const h = startActivator();
  const upstream = await upstreamServer();
  const port = await freePort();
  const forward = { kind: 'forward', upstream } as const;
  await h.activator.setTargets([{ key: KEY, port, mode: forward }]);
  const flowing = await connect(port);
  expect(await roundTrip(flowing, 'before')).toBe('before');
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  const [late] = (await heldClients(h, KEY, port, 1)) as [net.Socket];
  expect(h.wakes).toEqual([KEY]);
  // the spliced one still moves bytes both ways, a lot of them
  const payload = randomBytes(8 * 1024 * 1024);
  const back = receiveAll(flowing);
  flowing.end(payload);
  expect(await back).toEqual({ sha: sha(payload), length: payload.length });
  expect(upstream.accepted).toHaveLength(1);
  await h.activator.setTargets([{ key: KEY, port, mode: forward }]);
  expect(await roundTrip(late, 'after')).toBe('after');
  expect(upstream.accepted).toHaveLength(2);
  expect(await outcomes(h.registry, KEY)).toEqual({ forwarded: 1, spliced: 1 });
});

test('forward -> hold while a connection is still connecting upstream: it goes back to the hold queue', async () => {
  const h = startActivator({ connectTimeoutMs: 10_000 });
  const port = await freePort();
  const deadPort = await freePort();
  const dead = { kind: 'forward', upstream: { host: '127.0.0.1', port: deadPort } } as const;
  await h.activator.setTargets([{ key: KEY, port, mode: dead }]);
  const client = await connect(port);
  client.write('kept');
  await h.logged('upstream connect failed, retrying', { target: KEY });
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  expect(h.activator.held(KEY)).toBe(1);
  expect(h.wakes).toEqual([KEY]);
  const upstream = await upstreamServer();
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  let echoed = '';
  client.on('data', (c: Buffer) => (echoed += c.toString()));
  await until('echo', () => echoed === 'kept');
  expect(await outcomes(h.registry, KEY)).toEqual({ spliced: 1 });
});

test('forward -> forward to a new upstream: a connect still retrying the old one goes to the new one', async () => {
  const h = startActivator({ connectTimeoutMs: 10_000 });
  const port = await freePort();
  const deadPort = await freePort();
  await h.activator.setTargets([
    { key: KEY, port, mode: { kind: 'forward', upstream: { host: '127.0.0.1', port: deadPort } } },
  ]);
  const client = await connect(port);
  client.write('redirected');
  await h.logged('upstream connect failed, retrying', { target: KEY });
  const upstream = await upstreamServer();
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  let echoed = '';
  client.on('data', (c: Buffer) => (echoed += c.toString()));
  await until('echo', () => echoed === 'redirected');
  const later = await connect(port);
  expect(await roundTrip(later, 'new')).toBe('new');
  expect(upstream.accepted).toHaveLength(2);
  expect(await outcomes(h.registry, KEY)).toEqual({ forwarded: 2 });
});
