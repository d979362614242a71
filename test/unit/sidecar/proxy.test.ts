// The data-path suite on the JavaScript engine (sidecar/proxy.ts), plus what only it has: the
// shared read buffer and the pool of bulk read buffers.
import { randomBytes } from 'node:crypto';

import {
  connect,
  echoedConnections,
  proxySuite,
  receiveAll,
  sha,
  startProxy,
  tcpServer,
  until,
} from '../../support/sidecar-proxy-suite.ts';

proxySuite('js');

test('idle connections hold no read buffer; a bulk direction borrows one and returns it at close', async () => {
  const upstream = await tcpServer((socket) => socket.pipe(socket));
  const { proxy, at } = await startProxy(upstream);
  const idle = await echoedConnections(at, 200);
  expect(proxy.counters.open).toBe(200);
  expect(proxy.readBuffers().inUse).toBe(0);
  // 8 MiB echoed back: both directions read large chunks and turn bulk
  const bulk = await connect(at);
  const payload = randomBytes(8 * 1024 * 1024);
  const back = receiveAll(bulk);
  bulk.end(payload);
  expect(await back).toEqual({ sha: sha(payload), length: payload.length });
  await until('bulk connection closed', () => proxy.counters.closed === 1);
  // both directions had borrowed one, and gave it back
  expect(proxy.readBuffers()).toEqual({ inUse: 0, idle: 2 });
  idle.forEach((socket) => socket.destroy());
  await until('all closed', () => proxy.counters.closed === 201);
});
