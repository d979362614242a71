// setTargets as the Kubernetes side sees it: bad input changes nothing, a port that cannot be
// bound is reported without hurting the others, removal closes the listener and resets what is
// held, ports move; and close().
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { jest } from '@jest/globals';
import { pino } from 'pino';
import { Registry } from 'prom-client';

import { ListenError, createActivator } from '../../../activator/index.ts';
import type { ActivatorTarget } from '../../../activator/index.ts';
import {
  cleanups,
  connect,
  freePort,
  heldClients,
  metric,
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

/** How connecting to `port` ends: 'connected' or the error code (ECONNREFUSED). */
function dial(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    cleanups.push(() => socket.destroy());
    socket.once('connect', () => resolve('connected'));
    socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

test('invalid target sets are rejected with every problem named, and change nothing', async () => {
  const h = startActivator();
  const port = await freePort();
  const good: ActivatorTarget = { key: 'ns/a', port, mode: hold };
  await h.activator.setTargets([good]);
  await heldClients(h, 'ns/a', port, 1);
  const before = h.activator.stats();
  const upstream = { host: '127.0.0.1', port: 1 };
  const forwardA: ActivatorTarget = { key: 'ns/a', port, mode: { kind: 'forward', upstream } };
  const other = await freePort();
  const cases: [unknown, RegExp][] = [
    [
      [forwardA, { key: 'ns/b', port: 0, mode: hold }],
      /target 1 \(ns\/b\): port 0 is not an integer in 1\.\.65535/,
    ],
    [[forwardA, { key: 'ns/b', port: 65536, mode: hold }], /port 65536 is not an integer/],
    [[forwardA, { key: 'ns/b', port: 1.5, mode: hold }], /port 1\.5 is not an integer/],
    [[forwardA, { key: 'ns/b', port, mode: hold }], new RegExp(`port ${port} is also ns/a's`)],
    [[forwardA, { key: 'ns/a', port: other, mode: hold }], /key ns\/a is also target 0's/],
    [[forwardA, { key: 'justaname', port: other, mode: hold }], /key "justaname" is not namespace\/name/],
    [[forwardA, { key: 'a/b/c/d', port: other, mode: hold }], /key "a\/b\/c\/d" is not/],
    [
      [
        forwardA,
        { key: 'ns/b', port: other, mode: { kind: 'forward', upstream: { host: 'localhost', port: 80 } } },
      ],
      /upstream host "localhost" is not an IP address/,
    ],
    [
      [
        forwardA,
        { key: 'ns/b', port: other, mode: { kind: 'forward', upstream: { host: '10.0.0.1', port: 0 } } },
      ],
      /upstream port 0 is not/,
    ],
    [[forwardA, { key: 'ns/b', port: other, mode: { kind: 'wake' } }], /mode \{"kind":"wake"\} is neither/],
    [[forwardA, { key: 'ns/b', port: other }], /target 1 \(ns\/b\): mode undefined is neither/],
    [[forwardA, null], /target 1: not an object/],
    [{ key: 'ns/a' }, /an array is needed/],
  ];
  for (const [input, message] of cases) {
    await expect(h.activator.setTargets(input as ActivatorTarget[])).rejects.toThrow(message);
  }
  // several problems at once are all named
  await expect(
    h.activator.setTargets([
      { key: 'x', port: 0, mode: hold },
      { key: 'ns/b', port: 70000, mode: hold },
    ]),
  ).rejects.toThrow(/nothing changed: target 0 \(x\): key "x".*port 0.*target 1 \(ns\/b\): port 70000/);
  // nothing changed: ns/a is still in hold (not forwarded to port 1), its client still held, no new listener
  expect(h.activator.stats()).toEqual(before);
  expect(await dial(other)).toBe('ECONNREFUSED');
  await heldClients(h, 'ns/a', port, 1);
  expect(h.activator.held('ns/a')).toBe(2);
});

test('a port that cannot be bound: rejected naming port and target, the other targets applied and working', async () => {
  const h = startActivator();
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => taken.close(resolve)));
  const takenPort = (taken.address() as AddressInfo).port;
  const [portA, portC] = [await freePort(), await freePort()];
  await h.activator.setTargets([{ key: 'ns/a', port: portA, mode: hold }]);
  await heldClients(h, 'ns/a', portA, 1);

  const failed = h.activator.setTargets([
    { key: 'ns/a', port: portA, mode: hold },
    { key: 'ns/b', port: takenPort, mode: hold },
    { key: 'ns/c', port: portC, mode: hold },
  ]);
  await expect(failed).rejects.toThrow(ListenError);
  await expect(failed).rejects.toThrow(
    new RegExp(`cannot listen for target ns/b on 127\\.0\\.0\\.1:${takenPort} \\(EADDRINUSE\\)`),
  );
  await failed.catch((error: ListenError) =>
    expect(error.failures).toEqual([{ key: 'ns/b', port: takenPort, code: 'EADDRINUSE' }]),
  );
  expect(h.activator.stats().targets.map((t) => t.key)).toEqual(['ns/a', 'ns/c']);
  expect(h.activator.held('ns/a')).toBe(1);
  await heldClients(h, 'ns/c', portC, 1);
  expect(h.wakes).toEqual(['ns/a', 'ns/c']);
  expect(await h.logged('cannot listen: target left out')).toMatchObject({ target: 'ns/b', port: takenPort });

  // once the port is free, the same set applies
  await new Promise((resolve) => taken.close(resolve));
  await h.activator.setTargets([
    { key: 'ns/a', port: portA, mode: hold },
    { key: 'ns/b', port: takenPort, mode: hold },
    { key: 'ns/c', port: portC, mode: hold },
  ]);
  await heldClients(h, 'ns/b', takenPort, 1);
});

test('a removed target: its listener closes, held connections are reset and logged, spliced ones keep flowing', async () => {
  const h = startActivator();
  const upstream = await upstreamServer();
  const [portA, portB] = [await freePort(), await freePort()];
  await h.activator.setTargets([
    { key: 'ns/a', port: portA, mode: hold },
    { key: 'ns/b', port: portB, mode: { kind: 'forward', upstream } },
  ]);
  const held = await heldClients(h, 'ns/a', portA, 2);
  const resets = held.map(outcomeOf);
  const flowing = await connect(portB);
  expect(await roundTrip(flowing, 'one')).toBe('one');

  await h.activator.setTargets([]);
  expect(await Promise.all(resets)).toEqual(['ECONNRESET', 'ECONNRESET']);
  expect(await dial(portA)).toBe('ECONNREFUSED');
  expect(await dial(portB)).toBe('ECONNREFUSED');
  expect(await outcomes(h.registry, 'ns/a')).toEqual({ target_removed: 2 });
  expect(await h.logged('target removed: listener closed, its held connections reset')).toMatchObject({
    level: WARN,
    target: 'ns/a',
    port: portA,
    reset: 2,
  });
  expect(h.activator.stats()).toMatchObject({ targets: [], held: 0 });
  expect(await metric(h.registry, 'buildkit_fleet_activator_held_connections')).toBe(0);
  // the spliced connection of the removed ns/b is a running build: it keeps flowing
  expect(await roundTrip(flowing, 'two')).toBe('two');
});

test("ports move: a removed target's port is taken by a new one, two targets swap ports, held connections stay", async () => {
  const h = startActivator();
  const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
  await h.activator.setTargets([
    { key: 'ns/a', port: p1, mode: hold },
    { key: 'ns/b', port: p2, mode: hold },
  ]);
  const [heldA] = (await heldClients(h, 'ns/a', p1, 1)) as [net.Socket];
  // swap
  await h.activator.setTargets([
    { key: 'ns/a', port: p2, mode: hold },
    { key: 'ns/b', port: p1, mode: hold },
  ]);
  expect(h.activator.held('ns/a')).toBe(1);
  await heldClients(h, 'ns/a', p2, 1);
  await heldClients(h, 'ns/b', p1, 1);
  // ns/b removed, its port given to a new ns/c in the same call; ns/a moves to p3
  await h.activator.setTargets([
    { key: 'ns/a', port: p3, mode: hold },
    { key: 'ns/c', port: p1, mode: hold },
  ]);
  await heldClients(h, 'ns/c', p1, 1);
  expect(await dial(p2)).toBe('ECONNREFUSED');
  expect(h.activator.held('ns/a')).toBe(2);
  const upstream = await upstreamServer();
  await h.activator.setTargets([
    { key: 'ns/a', port: p3, mode: { kind: 'forward', upstream } },
    { key: 'ns/c', port: p1, mode: hold },
  ]);
  expect(await roundTrip(heldA, 'moved twice')).toBe('moved twice');
  expect(await outcomes(h.registry, 'ns/b')).toEqual({ target_removed: 1 });
});

test('close(): listeners closed, held and spliced connections reset; setTargets afterwards rejects', async () => {
  const h = startActivator();
  const upstream = await upstreamServer();
  const [portA, portB] = [await freePort(), await freePort()];
  await h.activator.setTargets([
    { key: 'ns/a', port: portA, mode: hold },
    { key: 'ns/b', port: portB, mode: { kind: 'forward', upstream } },
  ]);
  const [held] = (await heldClients(h, 'ns/a', portA, 1)) as [net.Socket];
  const spliced = await connect(portB);
  expect(await roundTrip(spliced, 'x')).toBe('x');
  const outcomesSeen = Promise.all([outcomeOf(held), outcomeOf(spliced)]);
  await h.activator.close();
  expect(await outcomesSeen).toEqual(['ECONNRESET', 'ECONNRESET']);
  expect(h.activator.stats()).toEqual({ targets: [], held: 0, open: 0, bufferedBytes: 0 });
  expect(await dial(portA)).toBe('ECONNREFUSED');
  await expect(h.activator.setTargets([])).rejects.toThrow('activator is closed');
  await h.activator.close();
});

test('drain(): listeners close at once; held clients are still spliced once ready, spliced ones flow until they end', async () => {
  const h = startActivator();
  const upstream = await upstreamServer();
  const [portA, portB, portC] = [await freePort(), await freePort(), await freePort()];
  const forward = { kind: 'forward', upstream } as const;
  await h.activator.setTargets([
    { key: 'ns/a', port: portA, mode: hold },
    { key: 'ns/b', port: portB, mode: forward },
  ]);
  const [held] = (await heldClients(h, 'ns/a', portA, 1)) as [net.Socket];
  const spliced = await connect(portB);
  expect(await roundTrip(spliced, 'before')).toBe('before');

  let result: unknown = 'pending';
  const drained = h.activator.drain().then((r) => (result = r));
  expect(
    await h.logged(
      'activator draining: listeners closed; held connections wait for their target, spliced ones for their end',
    ),
  ).toMatchObject({ open: 2, held: 1, timeoutMs: 600_000 });
  expect([await dial(portA), await dial(portB)]).toEqual(['ECONNREFUSED', 'ECONNREFUSED']);
  // the sync goes on: a new target binds nothing, the held client's target becomes ready
  await h.activator.setTargets([
    { key: 'ns/a', port: portA, mode: forward },
    { key: 'ns/b', port: portB, mode: forward },
    { key: 'ns/c', port: portC, mode: hold },
  ]);
  expect(await dial(portC)).toBe('ECONNREFUSED');
  expect(await roundTrip(held, 'held through the drain')).toBe('held through the drain');
  expect(await roundTrip(spliced, 'still flowing')).toBe('still flowing');
  expect(result).toBe('pending');

  const ends = Promise.all([outcomeOf(held), outcomeOf(spliced)]);
  held.end();
  spliced.end();
  expect(await ends).toEqual(['clean end', 'clean end']);
  await drained;
  expect(result).toEqual({ open: 0, held: 0 });
  expect(await h.logged('activator drained: every connection finished')).toMatchObject({ finished: 2 });
  expect(await outcomes(h.registry, 'ns/a')).toEqual({ spliced: 1 });
  await h.activator.close();
  expect(h.logs.filter((l) => l.msg === 'activator closed').map((l) => l.reset)).toEqual([0]);
});

test('drain() that times out reports what is still open; close() resets it', async () => {
  const h = startActivator({ drainTimeoutMs: 300 });
  const port = await freePort();
  await h.activator.setTargets([{ key: 'ns/a', port, mode: hold }]);
  const [held] = (await heldClients(h, 'ns/a', port, 1)) as [net.Socket];
  const started = Date.now();
  expect(await h.activator.drain()).toEqual({ open: 1, held: 1 });
  expect(Date.now() - started).toBeGreaterThanOrEqual(290);
  expect(await h.logged('activator drain timed out: the connections still open will be reset')).toMatchObject(
    {
      level: WARN,
      open: 1,
      held: 1,
      timeoutMs: 300,
    },
  );
  // the same promise again
  expect(await h.activator.drain()).toEqual({ open: 1, held: 1 });
  const outcome = outcomeOf(held);
  await h.activator.close();
  expect(await outcome).toBe('ECONNRESET');
  expect(await outcomes(h.registry, 'ns/a')).toEqual({ target_removed: 1 });
});

test('bad options are refused at creation, each one named', () => {
  const base = { logger: pino({ level: 'silent' }), registry: new Registry(), onWake: () => undefined };
  expect(() => createActivator({ ...base, maxHeldPerTarget: 0, holdTimeoutMs: -1 })).toThrow(
    /maxHeldPerTarget must be a positive integer, not 0; holdTimeoutMs must be a positive integer, not -1/,
  );
  expect(() => createActivator({ ...base, listenHost: 'localhost' })).toThrow(
    /listenHost must be an IP address/,
  );
  // Node fires a longer timer at once: a hold or drain would end as it starts
  expect(() => createActivator({ ...base, holdTimeoutMs: 2 ** 31, drainTimeoutMs: 2 ** 31 })).toThrow(
    /holdTimeoutMs must be at most 2147483647 \(about 24.8 days\), not 2147483648; drainTimeoutMs must be at most 2147483647/,
  );
});

test('onWake that throws is logged; holding goes on', async () => {
  const h = startActivator({
    onWake: () => {
      throw new Error('glue broke');
    },
  });
  const port = await freePort();
  await h.activator.setTargets([{ key: 'ns/a', port, mode: hold }]);
  await heldClients(h, 'ns/a', port, 2);
  expect(await h.logged('onWake threw: the wake may not have been asked for')).toMatchObject({
    target: 'ns/a',
    err: 'Error: glue broke',
  });
  await until('both held', () => h.activator.held('ns/a') === 2);
});
