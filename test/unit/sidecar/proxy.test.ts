// The data-path suite on the JavaScript engine (sidecar/proxy.ts, sidecar/js-engine/), plus what
// only it has: it runs on public net APIs only, pools no read buffers, and resets sockets through
// net.Socket, which cannot reset every socket (js-engine/connection.ts, reset()).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { reset } from '../../../sidecar/js-engine/connection.ts';
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

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

proxySuite('js');

test('no read buffers of its own: idle connections and a bulk one beside them leave none, bytes intact', async () => {
  const upstream = await tcpServer((socket) => socket.pipe(socket));
  const { proxy, at } = await startProxy(upstream);
  const idle = await echoedConnections(at, 200);
  expect(proxy.counters.open).toBe(200);
  const bulk = await connect(at);
  const payload = randomBytes(8 * 1024 * 1024);
  const back = receiveAll(bulk);
  bulk.end(payload);
  expect(await back).toEqual({ sha: sha(payload), length: payload.length });
  await until('bulk connection closed', () => proxy.counters.closed === 1);
  expect(proxy.readBuffers()).toEqual({ inUse: 0, idle: 0 });
  expect(proxy.bufferedBytes()).toBe(0);
  idle.forEach((socket) => socket.destroy());
  await until('all closed', () => proxy.counters.closed === 201);
});

test('a client that resets while the upstream connect is pending is reset at once, not counted as an upstream failure', async () => {
  const { proxy, at } = await startProxy(await unresponsiveUpstream(), 20_000);
  const client = await connect(at);
  client.write('sent before the upstream answered');
  await until('read from the client', () => proxy.counters.bytesIn > 0);
  // the bytes wait for the connect and the client is paused, yet its reset is seen
  expect(proxy.bufferedBytes()).toBe('sent before the upstream answered'.length);
  await sleep(50);
  client.resetAndDestroy();
  await until('closed', () => proxy.counters.closed === 1, 3000);
  expect(proxy.counters).toMatchObject({ open: 0, opened: 1, upstreamFailures: 0 });
});

describe('reset()', () => {
  /** A connected pair: `ours` (what reset() gets) and `peer`, whose outcome the test reads. */
  async function pair(): Promise<{ ours: net.Socket; peer: net.Socket; peerOutcome: Promise<string> }> {
    let peer: net.Socket | undefined;
    const address = await tcpServer((socket) => (peer = socket));
    const ours = await connect(address);
    ours.on('error', () => undefined);
    await until('accepted', () => peer !== undefined);
    const peerOutcome = new Promise<string>((resolve) => {
      peer!.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      peer!.once('end', () => resolve('clean end'));
    });
    peer!.resume();
    return { ours, peer: peer!, peerOutcome };
  }

  test('an open socket is closed with an RST', async () => {
    const { ours, peerOutcome } = await pair();
    reset(ours);
    expect(await peerOutcome).toBe('ECONNRESET');
    expect(ours.destroyed).toBe(true);
  });

  test('a socket whose FIN is pending is closed plainly: resetAndDestroy() would fail and never close it', async () => {
    const { ours, peerOutcome } = await pair();
    const errors: string[] = [];
    ours.on('error', (e: NodeJS.ErrnoException) => errors.push(`${e.syscall} ${e.code}`));
    // nothing is queued, so end() asks libuv for the shutdown at once; it completes on a later turn
    ours.end();
    expect(ours.writableFinished).toBe(false);
    const closed = once(ours, 'close');
    reset(ours);
    await closed;
    expect(await peerOutcome).toBe('clean end');
    expect(errors).toEqual([]);
  });

  test('a socket whose FIN waits behind queued data is still reset', async () => {
    const { ours, peer, peerOutcome } = await pair();
    peer.pause();
    // more than the kernel buffers take, so writes stay queued in the socket
    const chunk = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < 64 && ours.write(chunk); i++);
    ours.end();
    expect(ours.writableLength).toBeGreaterThan(0);
    reset(ours);
    peer.resume();
    expect(await peerOutcome).toBe('ECONNRESET');
  });

  test('a socket still connecting is closed at once (resetAndDestroy() would wait for the connect)', async () => {
    const at = await unresponsiveUpstream();
    const socket = net.connect({ host: at.host, port: at.port });
    socket.on('error', () => undefined);
    cleanups.push(() => socket.destroy());
    await sleep(20);
    expect(socket.connecting).toBe(true);
    const closed = once(socket, 'close').then(() => 'closed');
    reset(socket);
    expect(await Promise.race([closed, sleep(2000).then(() => 'still open')])).toBe('closed');
  });
});

test('runs under --pending-deprecation --throw-deprecation, and a stopped, drained proxy lets the process exit by itself', async () => {
  // process.binding() is DEP0111, a pending deprecation: with these flags its first call throws
  const script = `
    import net from 'node:net';
    import { pino } from 'pino';
    import { createProxy } from ${JSON.stringify(join(ROOT, 'sidecar/proxy.ts'))};
    const server = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s)).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const proxy = createProxy({ upstream: { host: '127.0.0.1', port: server.address().port }, logger: pino({ level: 'silent' }) });
    const { port } = await proxy.listen('127.0.0.1', 0);
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    client.end('hello');
    client.on('data', (d) => process.stdout.write(d));
    await new Promise((r) => client.on('close', r));
    await proxy.stopAccepting();
    if (!(await proxy.waitForDrain(5000))) throw new Error('not drained');
    server.close();
  `;
  const child = spawn(
    process.execPath,
    ['--pending-deprecation', '--throw-deprecation', '--input-type=module', '-e', script],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [code, signal] = await once(child, 'exit');
  clearTimeout(timer);
  // type stripping's ExperimentalWarning is no deprecation; anything else on stderr is a failure
  expect(err.split('\n').filter((line) => /Deprecation|Error/.test(line))).toEqual([]);
  expect({ code, signal, out }).toEqual({ code: 0, signal: null, out: 'hello' });
});

test("the sidecar's sources reach no Node internals (beside the behaviour above, which would catch a call)", () => {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts')) files.push(path);
    }
  };
  walk(join(ROOT, 'sidecar'));
  expect(files).toContain(join(ROOT, 'sidecar/js-engine/connection.ts'));
  const internals = /process\s*\.\s*binding\s*\(|internalBinding\s*\(|\._handle\b|\[\s*['"]_handle['"]\s*\]/;
  const offenders = files.filter((file) => internals.test(readFileSync(file, 'utf8')));
  expect(offenders).toEqual([]);
});
