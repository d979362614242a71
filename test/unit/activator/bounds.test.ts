// The only drops: more held than maxHeldPerTarget or maxHeldTotal (the new connection is reset),
// and a hold longer than holdTimeoutMs.
import type net from 'node:net';
import { jest } from '@jest/globals';

import {
  dialOutcome,
  freePort,
  heldClients,
  outcomeOf,
  outcomes,
  roundTrip,
  runCleanups,
  startActivator,
  until,
  upstreamServer,
  WARN,
} from './helpers.ts';

jest.setTimeout(30_000);
afterEach(runCleanups);

const hold = { kind: 'hold' } as const;

test('maxHeldPerTarget: the connection beyond it is reset, with a warn line naming target and bound', async () => {
  const h = startActivator({ maxHeldPerTarget: 3 });
  const port = await freePort();
  await h.activator.setTargets([{ key: 'ns/a', port, mode: hold }]);
  const held = await heldClients(h, 'ns/a', port, 3);
  expect(await dialOutcome(port)).toBe('ECONNRESET');
  expect(h.activator.held('ns/a')).toBe(3);
  expect(await outcomes(h.registry, 'ns/a')).toEqual({ bound_count: 1 });
  expect(await h.logged('too many held connections: new connection reset')).toMatchObject({
    level: WARN,
    target: 'ns/a',
    bound: 'maxHeldPerTarget',
    limit: 3,
  });
  // the bound is on what is held now: one leaves, the next is held
  held[0]!.resetAndDestroy();
  await until('one left', () => h.activator.held('ns/a') === 2);
  await heldClients(h, 'ns/a', port, 1);
  expect(await outcomes(h.registry, 'ns/a')).toEqual({ bound_count: 1, gave_up: 1 });
  expect(h.wakes).toEqual(['ns/a']);
});

test('maxHeldTotal counts every target', async () => {
  const h = startActivator({ maxHeldTotal: 2 });
  const [portA, portB] = [await freePort(), await freePort()];
  await h.activator.setTargets([
    { key: 'ns/a', port: portA, mode: hold },
    { key: 'ns/b', port: portB, mode: hold },
  ]);
  await heldClients(h, 'ns/a', portA, 1);
  await heldClients(h, 'ns/b', portB, 1);
  expect(await dialOutcome(portA)).toBe('ECONNRESET');
  expect(h.activator.held()).toBe(2);
  expect(await h.logged('too many held connections: new connection reset')).toMatchObject({
    target: 'ns/a',
    bound: 'maxHeldTotal',
    limit: 2,
  });
  expect(await outcomes(h.registry, 'ns/a')).toEqual({ bound_count: 1 });
});

test('holdTimeoutMs: a connection held too long is reset and counted; one released in time is not', async () => {
  const timeout = 400;
  const h = startActivator({ holdTimeoutMs: timeout });
  const port = await freePort();
  const upstream = await upstreamServer();
  await h.activator.setTargets([{ key: 'ns/a', port, mode: hold }]);
  const [early] = (await heldClients(h, 'ns/a', port, 1)) as [net.Socket];
  await h.activator.setTargets([{ key: 'ns/a', port, mode: { kind: 'forward', upstream } }]);
  expect(await roundTrip(early, 'in time')).toBe('in time');
  await h.activator.setTargets([{ key: 'ns/a', port, mode: hold }]);
  const started = Date.now();
  const [late] = (await heldClients(h, 'ns/a', port, 1)) as [net.Socket];
  expect(await outcomeOf(late)).toBe('ECONNRESET');
  expect(Date.now() - started).toBeGreaterThanOrEqual(timeout - 50);
  expect(h.activator.held('ns/a')).toBe(0);
  expect(await h.logged('connection held too long: reset')).toMatchObject({
    level: WARN,
    target: 'ns/a',
    outcome: 'bound_time',
    bound: 'holdTimeoutMs',
    limit: timeout,
  });
  // the early one arrived before the late one and is still spliced and flowing
  expect(await roundTrip(early, 'still')).toBe('still');
  expect(await outcomes(h.registry, 'ns/a')).toEqual({ spliced: 1, bound_time: 1 });
});
