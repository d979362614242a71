// The data-path suite on the native engine (sidecar/native/epoll-loop.cc and napi-binding.cc,
// through sidecar/native-proxy.ts), plus what only it has. The addon must be built (npm ci builds
// it when g++ is there; npm test installs g++ first): a missing addon fails here, not skipped.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
import { cleanups } from '../../support/sidecar.ts';

test('the native engine is built and loads', () => {
  expect(nativeEnginePath()).toMatch(/build\/native\/proxy-engine\.node$/);
  expect(loadNativeEngine().counterCount).toBe(15);
});

proxySuite('native');

/** Writes `payload` in `piece`-byte writes every `everyMs`, so the proxy's reads stay short (copying). */
async function writePaced(
  socket: net.Socket,
  payload: Buffer,
  piece: number,
  everyMs: number,
): Promise<void> {
  for (let offset = 0; offset < payload.length; offset += piece) {
    socket.write(payload.subarray(offset, offset + piece));
    await sleep(everyMs);
  }
  socket.end();
}

test('idle connections hold no buffer; a stalled small-message direction holds one read buffer until it drains, then returns it', async () => {
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
  expect(proxy.pipes().inUse).toBe(0);
  // 16 KiB writes, paced: every read is short, the direction copies; once the stalled upstream's
  // kernel buffers are full, the rest of one read waits in the proxy
  const payload = randomBytes(24 * 1024 * 1024);
  const got = receiveAll(stalled!);
  const written = writePaced(writer, payload, 16 * 1024, 0.2);
  await until('a pending buffer', () => proxy.readBuffers().inUse === 1, 30_000);
  expect(proxy.bufferedBytes()).toBeGreaterThan(0);
  expect(proxy.bufferedBytes()).toBeLessThanOrEqual(64 * 1024);
  expect(proxy.pipes().inUse).toBe(0);
  stalled!.resume();
  await written;
  expect(await got).toEqual({ sha: sha(payload), length: payload.length });
  expect(proxy.readBuffers()).toEqual({ inUse: 0, idle: 1 });
  expect(proxy.bufferedBytes()).toBe(0);
  idle.forEach((socket) => socket.destroy());
  writer.destroy();
  stalled!.destroy();
  await until('all closed', () => proxy.counters.open === 0);
  expect(proxy.pipes().inUse).toBe(0);
});

test('a stalled bulk direction holds one pipe with at most one read in it, and gives it back once drained', async () => {
  let stalled: net.Socket | undefined;
  const upstream = await tcpServer((socket) => (stalled = socket.pause()));
  const { proxy, at } = await startProxy(upstream);
  const writer = await connect(at);
  await until('upstream connected', () => stalled !== undefined);
  const payload = randomBytes(32 * 1024 * 1024);
  const got = receiveAll(stalled!);
  writer.end(payload);
  await until(
    'bytes waiting in the pipe',
    () => proxy.bufferedBytes() > 0 && proxy.pipes().inUse === 1,
    30_000,
  );
  // stalled: nothing more is read while the pipe holds bytes
  const read = proxy.counters.bytesIn;
  await sleep(200);
  expect(proxy.counters.bytesIn).toBe(read);
  expect(proxy.bufferedBytes()).toBeLessThanOrEqual(64 * 1024);
  expect(proxy.readBuffers().inUse).toBe(0);
  stalled!.resume();
  expect(await got).toEqual({ sha: sha(payload), length: payload.length });
  // the client's end went through once the pipe was empty; the pipe is back in the pool
  expect(proxy.pipes()).toEqual({ inUse: 0, idle: 1 });
  expect(proxy.bufferedBytes()).toBe(0);
  expect(proxy.counters.bytesIn).toBe(payload.length);
  // all but the first reads, and a few more when a slow start made it copy for a while
  expect(proxy.counters.splicedBytes).toBeGreaterThan(payload.length - 1024 * 1024);
});

test('a reset while bytes wait in the pipe resets the other side, and that pipe is closed, not pooled', async () => {
  let stalled: net.Socket | undefined;
  const upstream = await tcpServer((socket) => (stalled = socket.pause()));
  const { proxy, at } = await startProxy(upstream);
  const writer = await connect(at);
  writer.on('error', () => undefined);
  await until('upstream connected', () => stalled !== undefined);
  const serverOutcome = new Promise<string>((resolve) => {
    stalled!.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    stalled!.once('end', () => resolve('clean end'));
  });
  writer.write(randomBytes(32 * 1024 * 1024));
  await until(
    'bytes waiting in the pipe',
    () => proxy.bufferedBytes() > 0 && proxy.pipes().inUse === 1,
    30_000,
  );
  writer.resetAndDestroy();
  await until('closed', () => proxy.counters.closed === 1);
  expect(proxy.pipes()).toEqual({ inUse: 0, idle: 0 });
  expect(proxy.bufferedBytes()).toBe(0);
  stalled!.resume();
  expect(await serverOutcome).toBe('ECONNRESET');
});

test('one connection switching between small messages and bulk both ways: every byte arrives, counted exactly, and the path follows the traffic', async () => {
  const upstream = await tcpServer((socket) => socket.pipe(socket));
  const { proxy, at } = await startProxy(upstream);
  const client = await connect(at);
  const received: Buffer[] = [];
  let receivedBytes = 0;
  client.on('data', (chunk: Buffer) => {
    received.push(chunk);
    receivedBytes += chunk.length;
  });
  const sent: Buffer[] = [];
  let sentBytes = 0;
  const send = (data: Buffer) => {
    sent.push(data);
    sentBytes += data.length;
    client.write(data);
  };
  const echoed = () => until('the echo', () => receivedBytes === sentBytes, 30_000);
  const roundTrips = async (count: number) => {
    for (let i = 0; i < count; i++) {
      send(randomBytes(100 + i));
      await echoed();
    }
  };
  const bulk = async () => {
    send(randomBytes(16 * 1024 * 1024));
    await echoed();
  };

  await roundTrips(30);
  expect(proxy.counters.splicedBytes).toBe(0);
  await bulk();
  const afterBulk = proxy.counters.splicedBytes;
  // both directions went bulk (the echo too): most of 2 x 16 MiB by pipe
  expect(afterBulk).toBeGreaterThan(24 * 1024 * 1024);
  // small messages again: after a few passes each direction copies again and gives its pipe back
  await roundTrips(30);
  expect(proxy.pipes().inUse).toBe(0);
  const copying = proxy.counters.splicedBytes;
  await roundTrips(20);
  expect(proxy.counters.splicedBytes).toBe(copying);
  // and bulk turns both directions back to the pipe
  await bulk();
  expect(proxy.counters.splicedBytes).toBeGreaterThan(copying + 24 * 1024 * 1024);

  expect(sha(Buffer.concat(received))).toBe(sha(Buffer.concat(sent)));
  expect(proxy.counters).toMatchObject({ open: 1, bytesIn: sentBytes, bytesOut: sentBytes });
  expect(proxy.bufferedBytes()).toBe(0);
  client.end();
  await until('closed', () => proxy.counters.closed === 1);
  expect(proxy.pipes().inUse).toBe(0);
});

/** Runs `script` (an ES module) in a child node at the repository root; its exit and output. */
async function runScript(
  script: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number | null; signal: string | null; out: string; err: string }> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    cwd: fileURLToPath(new URL('../../..', import.meta.url)),
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
  clearTimeout(timer);
  return { code, signal, out, err };
}

const nativeProxyModule = JSON.stringify(
  fileURLToPath(new URL('../../../sidecar/native-proxy.ts', import.meta.url)),
);

test('where the kernel refuses splice on sockets, bulk directions keep copying: bytes intact, counted, nothing spliced', async () => {
  // A shim preloaded into a child process makes splice fail with EINVAL, as a kernel (or a
  // sandbox) without splice for sockets does; it counts the calls it refused.
  const dir = mkdtempSync(join(tmpdir(), 'no-splice-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const source = join(dir, 'no-splice.cc');
  const shim = join(dir, 'no-splice.so');
  writeFileSync(
    source,
    `#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
static int calls = 0;
extern "C" ssize_t splice(int, __off64_t*, int, __off64_t*, size_t, unsigned int) {
  calls++;
  errno = EINVAL;
  return -1;
}
__attribute__((destructor)) static void report() { fprintf(stderr, "splice calls %d\\n", calls); }
`,
  );
  execFileSync(process.env['CXX'] || 'g++', ['-shared', '-fPIC', '-O2', '-o', shim, source]);
  const script = `
    import net from 'node:net';
    import { createHash, randomBytes } from 'node:crypto';
    import { pino } from 'pino';
    import { createNativeProxy } from ${nativeProxyModule};
    const server = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s)).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const proxy = createNativeProxy({ upstream: { host: '127.0.0.1', port: server.address().port }, logger: pino({ level: 'silent' }) });
    const { port } = await proxy.listen('127.0.0.1', 0);
    const payload = randomBytes(16 * 1024 * 1024);
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const hash = createHash('sha256');
    let length = 0;
    client.on('data', (d) => { hash.update(d); length += d.length; });
    client.end(payload);
    await new Promise((r) => client.on('end', r));
    client.destroy();
    while (proxy.counters.open > 0) await new Promise((r) => setTimeout(r, 5));
    const c = proxy.counters;
    console.log(JSON.stringify({
      intact: length === payload.length && hash.digest('hex') === createHash('sha256').update(payload).digest('hex'),
      bytesIn: c.bytesIn, bytesOut: c.bytesOut, spliced: c.splicedBytes, pipes: proxy.pipes(),
    }));
    await proxy.stopAccepting();
    server.close();
  `;
  const run = await runScript(script, { ...process.env, LD_PRELOAD: shim });
  expect({ code: run.code, signal: run.signal }).toEqual({ code: 0, signal: null });
  const size = 16 * 1024 * 1024;
  // one refusal, then the engine copies for every direction (both directions turned bulk)
  expect(run.err).toContain('splice calls 1\n');
  expect(JSON.parse(run.out)).toEqual({
    intact: true,
    bytesIn: size,
    bytesOut: size,
    spliced: 0,
    pipes: { inUse: 0, idle: 1 },
  });
});

test('a process whose native proxy stopped accepting and drained exits by itself (the loop thread ends)', async () => {
  const script = `
    import net from 'node:net';
    import { pino } from 'pino';
    import { createNativeProxy } from ${nativeProxyModule};
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
  const { code, signal, out, err } = await runScript(script);
  expect({ code, signal, out, err }).toEqual({ code: 0, signal: null, out: 'hello', err: '' });
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
