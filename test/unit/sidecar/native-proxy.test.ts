// The data-path suite on the native engine (sidecar/native/epoll-loop.cc and napi-binding.cc,
// through sidecar/native-proxy.ts), plus what only it has. The addon must be built (npm ci builds
// it when g++ is there; npm test installs g++ first): a missing addon fails here, not skipped.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { fileURLToPath } from 'node:url';

import { loadNativeEngine, nativeEnginePath } from '../../../sidecar/native-proxy.ts';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  connect,
  echoedConnections,
  proxySuite,
  receiveAll,
  sha,
  startProxy,
  tcpServer,
  unresponsiveUpstream,
  until,
} from '../../support/sidecar-proxy-suite.ts';

test('the native engine is built and loads', () => {
  expect(nativeEnginePath()).toMatch(/build\/native\/proxy-engine\.node$/);
  expect(loadNativeEngine().counterCount).toBe(12);
});

proxySuite('native');

test('idle connections hold no buffer; a stalled direction holds one until it drains, then returns it', async () => {
  let stalled: net.Socket | undefined;
  const upstream = await tcpServer((socket) => {
    if (!stalled) stalled = socket.pause();
    else socket.pipe(socket);
  });
  const { proxy, at } = await startProxy(upstream);
  const writer = await connect(at);
  await until('upstream connected', () => stalled !== undefined);
  const idle = await echoedConnections(at, 200);
  expect(proxy.readBuffers().inUse).toBe(0);
  // the stalled upstream's kernel buffers fill, then one read's rest waits in the proxy
  const payload = randomBytes(32 * 1024 * 1024);
  const got = receiveAll(stalled!);
  writer.end(payload);
  await until('a pending buffer', () => proxy.readBuffers().inUse === 1, 30_000);
  expect(proxy.bufferedBytes()).toBeGreaterThan(0);
  expect(proxy.bufferedBytes()).toBeLessThanOrEqual(64 * 1024);
  stalled!.resume();
  expect(await got).toEqual({ sha: sha(payload), length: payload.length });
  expect(proxy.readBuffers().inUse).toBe(0);
  expect(proxy.readBuffers().idle).toBe(1);
  expect(proxy.bufferedBytes()).toBe(0);
  idle.forEach((socket) => socket.destroy());
  writer.destroy();
  stalled!.destroy();
  await until('all closed', () => proxy.counters.open === 0);
});

test('a process whose native proxy stopped accepting and drained exits by itself (the loop thread ends)', async () => {
  const script = `
    import net from 'node:net';
    import { pino } from 'pino';
    import { createNativeProxy } from ${JSON.stringify(fileURLToPath(new URL('../../../sidecar/native-proxy.ts', import.meta.url)))};
    const server = net.createServer((s) => s.pipe(s)).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const proxy = createNativeProxy({ upstream: { host: '127.0.0.1', port: server.address().port }, logger: pino({ level: 'silent' }) });
    const { port } = await proxy.listen('127.0.0.1', 0);
    const client = net.connect(port, '127.0.0.1');
    client.end('hello');
    client.on('data', (d) => process.stdout.write(d));
    await new Promise((r) => client.on('close', r));
    await proxy.stopAccepting();
    await proxy.waitForDrain(5000);
    server.close();
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    cwd: fileURLToPath(new URL('../../..', import.meta.url)),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [code, signal] = await once(child, 'exit');
  clearTimeout(timer);
  expect({ code, signal, out }).toEqual({ code: 0, signal: null, out: 'hello' });
});

// proxy.test.ts checks the same of the JavaScript engine.
test('a client that resets while the upstream connect is pending is reset at once, not counted as an upstream failure', async () => {
  const { proxy, at } = await startProxy(await unresponsiveUpstream(), 20_000);
  const client = await connect(at);
  client.write('sent before the upstream answered');
  await until('read from the client', () => proxy.counters.bytesIn > 0);
  await sleep(50);
  client.resetAndDestroy();
  await until('closed', () => proxy.counters.closed === 1, 3000);
  expect(proxy.counters).toMatchObject({ open: 0, opened: 1, upstreamFailures: 0 });
});
