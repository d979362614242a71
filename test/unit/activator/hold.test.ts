// Holding and splicing, with real sockets: held clients wake the target once, are spliced in
// arrival order with their bytes intact, and a client that gives up while held is discarded.
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { jest } from '@jest/globals';

import {
  connect,
  freePort,
  heldClients,
  metric,
  outcomeOf,
  outcomes,
  receiveAll,
  roundTrip,
  runCleanups,
  sha,
  startActivator,
  until,
  upstreamServer,
} from './helpers.ts';

jest.setTimeout(60_000);
afterEach(runCleanups);

const KEY = 'team-a/buildkit/bk-1';
const hold = { kind: 'hold' } as const;

test('50 held clients: one wake, then spliced in arrival order, 1 MiB each way intact (sha256)', async () => {
  const h = startActivator();
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  // the upstream echoes, and records which client (the first 4 bytes) each accept was
  const acceptedIds: number[] = [];
  const upstream = await upstreamServer((socket, index) => {
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      if (head.length < 4) return;
      acceptedIds[index] = head.readUInt32BE(0);
      socket.off('data', onData);
    };
    socket.on('data', onData);
    socket.pipe(socket);
  });

  const count = 50;
  const clients = await heldClients(h, KEY, port, count);
  const sent = clients.map((client, i) => {
    const id = Buffer.alloc(4);
    id.writeUInt32BE(i);
    const payload = Buffer.concat([id, randomBytes(1024 * 1024)]);
    // written while held (no FIN: that would be giving up); the activator buffers the start
    client.write(payload);
    return payload;
  });
  const received = clients.map((client) => receiveAll(client));
  await until('every hold buffer filled', () => h.activator.stats().bufferedBytes >= count * 128 * 1024);
  expect(h.activator.held(KEY)).toBe(count);
  expect(h.activator.held()).toBe(count);
  expect(h.wakes).toEqual([KEY]);
  expect(await metric(h.registry, 'buildkit_fleet_activator_wakes_requested_total', { target: KEY })).toBe(1);
  expect(await metric(h.registry, 'buildkit_fleet_activator_held_connections', { target: KEY })).toBe(count);
  expect(upstream.accepted).toHaveLength(0);

  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  expect(h.activator.held(KEY)).toBe(0);
  clients.forEach((client) => client.end());
  const results = await Promise.all(received);
  results.forEach((result, i) => expect(result).toEqual({ sha: sha(sent[i]!), length: sent[i]!.length }));
  expect(acceptedIds).toEqual(Array.from({ length: count }, (_, i) => i));
  expect(h.wakes).toEqual([KEY]);
  expect(await outcomes(h.registry, KEY)).toEqual({ spliced: count });
  const total = sent.reduce((sum, p) => sum + p.length, 0);
  expect(
    await metric(h.registry, 'buildkit_fleet_activator_spliced_bytes_total', { direction: 'to_upstream' }),
  ).toBe(total);
  await until('all closed', () => h.activator.stats().open === 0);
  expect(
    await metric(h.registry, 'buildkit_fleet_activator_spliced_bytes_total', { direction: 'to_client' }),
  ).toBe(total);
  expect(await metric(h.registry, 'buildkit_fleet_activator_hold_duration_seconds', {}, '_count')).toBe(
    count,
  );
  expect(await metric(h.registry, 'buildkit_fleet_activator_held_connections', { target: KEY })).toBe(0);
});

test('a held client stops being read at the hold buffer: the writer stalls, and nothing is lost', async () => {
  const h = startActivator();
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  const [client] = (await heldClients(h, KEY, port, 1)) as [net.Socket];
  // more than loopback's socket buffers take, so the rest must wait in the client
  const payload = randomBytes(32 * 1024 * 1024);
  client.write(payload);
  await until('hold buffer full', () => h.activator.stats().bufferedBytes >= 128 * 1024);
  // one read (64 KiB at most) may go past the bound, no more
  expect(h.activator.stats().bufferedBytes).toBeLessThanOrEqual(192 * 1024);
  expect(client.writableLength).toBeGreaterThan(0);

  const upstream = await upstreamServer();
  const back = receiveAll(client);
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  client.end();
  expect(await back).toEqual({ sha: sha(payload), length: payload.length });
});

test('clients that give up while held (RST, FIN) are discarded at once and never reach the upstream', async () => {
  const h = startActivator();
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  const [stays, resets, fins] = (await heldClients(h, KEY, port, 3)) as [net.Socket, net.Socket, net.Socket];
  resets.write('sent before giving up');
  fins.write('sent before giving up');
  const finOutcome = outcomeOf(fins);
  resets.resetAndDestroy();
  fins.end();
  await until('both discarded', () => h.activator.held(KEY) === 1);
  // a client that half-closed while held is reset, never answered with a clean end
  expect(await finOutcome).toBe('ECONNRESET');
  expect(await outcomes(h.registry, KEY)).toEqual({ gave_up: 2 });
  expect(h.wakes).toEqual([KEY]);
  const gaveUp = h.logs.filter((l) => l.msg === 'client gave up while held: discarded');
  expect(gaveUp.map((l) => ({ level: l.level, target: l.target, outcome: l.outcome }))).toEqual([
    { level: 20, target: KEY, outcome: 'gave_up' },
    { level: 20, target: KEY, outcome: 'gave_up' },
  ]);

  const upstream = await upstreamServer();
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  expect(await roundTrip(stays, 'still here')).toBe('still here');
  expect(upstream.accepted).toHaveLength(1);
  expect(h.activator.stats().targets[0]).toMatchObject({ held: 0, connecting: 0, spliced: 1 });
  expect(await outcomes(h.registry, KEY)).toEqual({ gave_up: 2, spliced: 1 });
  expect(h.wakes).toEqual([KEY]);
});

test('wake rule: once per episode; again after every held client gave up, and after forward and back to hold', async () => {
  const h = startActivator();
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  const [first, second] = (await heldClients(h, KEY, port, 2)) as [net.Socket, net.Socket];
  expect(h.wakes).toEqual([KEY]);

  // one gives up and redials while the other is still held: held again, no new wake
  first.resetAndDestroy();
  await until('first discarded', () => h.activator.held(KEY) === 1);
  const [redialed] = (await heldClients(h, KEY, port, 1)) as [net.Socket];
  expect(h.wakes).toEqual([KEY]);

  // every held client gives up: the episode is over, and the next arrival asks again
  second.resetAndDestroy();
  redialed.end();
  await until('all discarded', () => h.activator.held(KEY) === 0);
  expect(h.activator.stats().targets[0]!.wakeRequested).toBe(false);
  expect(h.wakes).toEqual([KEY]);
  const [last] = (await heldClients(h, KEY, port, 1)) as [net.Socket];
  expect(h.wakes).toEqual([KEY, KEY]);

  // forward, then hold again: a new episode
  const upstream = await upstreamServer();
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  expect(await roundTrip(last, 'x')).toBe('x');
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  expect(h.wakes).toHaveLength(2);
  await heldClients(h, KEY, port, 2);
  expect(h.wakes).toEqual([KEY, KEY, KEY]);
  expect(await metric(h.registry, 'buildkit_fleet_activator_wakes_requested_total', { target: KEY })).toBe(3);
  expect(await outcomes(h.registry, KEY)).toEqual({ gave_up: 3, spliced: 1 });
});

test('a client that connects and sends nothing is held like any other, and spliced', async () => {
  const h = startActivator();
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  const client = await connect(port);
  await until('held', () => h.activator.held(KEY) === 1);
  const upstream = await upstreamServer();
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  expect(await roundTrip(client, 'late bytes')).toBe('late bytes');
});
