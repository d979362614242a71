// GET /readyz?check=grpc: the sidecar asks buildkitd the standard gRPC health check
// (grpc.health.v1.Health/Check, empty service) over h2c and is ready only on SERVING. Against the
// buildkitd stand-in (hack/buildkitd-standin/, a real gRPC server in its own process) and real
// gRPC servers that answer otherwise; none of it is client activity. Plain /readyz stays the TCP
// check.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { jest } from '@jest/globals';
import { pino } from 'pino';

import { parseOptions } from '../../../flags/options.ts';
import type { HostPort } from '../../../flags/options.ts';
import { standinServices } from '../../../hack/buildkitd-standin/services.ts';
import { decodeHealthResponse, unframe } from '../../../sidecar/grpc-health.ts';
import type { RunningSidecar } from '../../../sidecar/main.ts';
import { SIDECAR_OPTIONS, startSidecar } from '../../../sidecar/main.ts';
import { healthCheck } from '../../support/buildkit-client.ts';
import { cleanups, echoServer, runCleanups } from '../../support/sidecar.ts';

jest.setTimeout(30_000);
afterEach(runCleanups);

const logger = pino({ level: 'silent' });

async function sidecar(upstream: HostPort, engine = 'auto'): Promise<RunningSidecar> {
  const options = parseOptions(
    [
      '--listen',
      '127.0.0.1:0',
      '--stats',
      '127.0.0.1:0',
      '--upstream',
      `${upstream.host}:${upstream.port}`,
      '--engine',
      engine,
    ],
    SIDECAR_OPTIONS,
    {},
  );
  const running = await startSidecar(options, logger);
  cleanups.push(() => running.stop(0));
  return running;
}

async function readyz(running: RunningSidecar, query = ''): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${running.stats.port}/readyz${query}`);
  return { status: res.status, body: await res.text() };
}

/** The buildkitd stand-in as its own process, on a free loopback port. */
async function standin(): Promise<HostPort> {
  const main = fileURLToPath(new URL('../../../hack/buildkitd-standin/main.ts', import.meta.url));
  const child = spawn(process.execPath, [main, '--addr', 'tcp://127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  cleanups.push(() => child.kill('SIGKILL'));
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  const port = /tcp:\/\/127\.0\.0\.1:(\d+)/.exec(line.toString())?.[1];
  if (!port) throw new Error(`stand-in said ${line.toString()}`);
  return { host: '127.0.0.1', port: Number(port) };
}

/** A grpc-js server with the stand-in's Health service answering `status`, or without it. */
async function grpcServer(status?: string): Promise<HostPort> {
  const server = new grpc.Server();
  const services = standinServices();
  if (status !== undefined) {
    server.addService(services.Health.service, {
      Check: (_call: grpc.ServerUnaryCall<unknown, unknown>, done: grpc.sendUnaryData<unknown>) =>
        done(null, { status }),
    });
  } else {
    server.addService(services.Control.service, {});
  }
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, p) =>
      error ? reject(error) : resolve(p),
    ),
  );
  cleanups.push(() => server.forceShutdown());
  return { host: '127.0.0.1', port };
}

/** A TCP server that takes connections and never says a word. */
async function silentServer(): Promise<HostPort> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => {
    sockets.forEach((s) => s.destroy());
    return new Promise((resolve) => server.close(resolve));
  });
  return { host: '127.0.0.1', port: (server.address() as AddressInfo).port };
}

describe.each(['native', 'js'])('%s engine', (engine) => {
  test('the buildkitd stand-in: SERVING is ready; the check is no client activity', async () => {
    const upstream = await standin();
    // the stand-in answers a real gRPC client the same
    expect(await healthCheck(`tcp://127.0.0.1:${upstream.port}`)).toEqual({ status: 'SERVING' });
    const running = await sidecar(upstream, engine);
    for (let i = 0; i < 3; i++)
      expect(await readyz(running, '?check=grpc')).toEqual({ status: 200, body: 'ok\n' });
    expect(await readyz(running, '?check=tcp')).toEqual({ status: 200, body: 'ok\n' });
    expect(running.proxy.counters).toMatchObject({
      opened: 0,
      bytesIn: 0,
      bytesOut: 0,
      lastActivityMs: null,
    });
  });
});

test('NOT_SERVING, SERVICE_UNKNOWN and UNKNOWN are not ready: 503 with what buildkitd said', async () => {
  for (const status of ['NOT_SERVING', 'SERVICE_UNKNOWN', 'UNKNOWN']) {
    const running = await sidecar(await grpcServer(status));
    expect(await readyz(running, '?check=grpc')).toEqual({
      status: 503,
      body: `buildkitd gRPC health check: buildkitd reports ${status}\n`,
    });
    // the TCP check cannot tell
    expect((await readyz(running)).status).toBe(200);
  }
});

test('a gRPC server without the health service: 503 with its grpc-status', async () => {
  const running = await sidecar(await grpcServer());
  const reply = await readyz(running, '?check=grpc');
  expect(reply.status).toBe(503);
  expect(reply.body).toMatch(/^buildkitd gRPC health check: grpc-status 12 \(UNIMPLEMENTED\)/);
});

test('not gRPC, not listening, or silent: 503 with the reason, within the ready timeout', async () => {
  const echoing = await sidecar(await echoServer());
  const notGrpc = await readyz(echoing, '?check=grpc');
  expect(notGrpc.status).toBe(503);
  // an echo server sends the HTTP/2 preface back, which is no server's preface
  expect(notGrpc.body).toMatch(/^buildkitd gRPC health check: \w+: ERR_HTTP2_ERROR \(Protocol error\)\n$/);

  const closed = net.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  const nobody = await sidecar({ host: '127.0.0.1', port });
  expect(await readyz(nobody, '?check=grpc')).toEqual({
    status: 503,
    body: 'buildkitd gRPC health check: connection: ECONNREFUSED\n',
  });

  const silent = await sidecar(await silentServer());
  const started = Date.now();
  expect(await readyz(silent, '?check=grpc')).toEqual({
    status: 503,
    body: 'buildkitd gRPC health check: no answer within 1000 ms\n',
  });
  expect(Date.now() - started).toBeLessThan(3000);
  // it accepts TCP connections, which is all the plain check asks
  expect((await readyz(silent)).status).toBe(200);
});

test('an HTTP/2 server that is not gRPC: 503 naming what it answered', async () => {
  const server = http2.createServer((_req, res) => {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('no such thing');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  const running = await sidecar({ host: '127.0.0.1', port: (server.address() as AddressInfo).port });
  expect(await readyz(running, '?check=grpc')).toEqual({
    status: 503,
    body: 'buildkitd gRPC health check: HTTP status 404\n',
  });
});

test('an unknown check is a 400; once stopping, every check is 503', async () => {
  const running = await sidecar(await standin());
  const unknown = await fetch(`http://127.0.0.1:${running.stats.port}/readyz?check=http`);
  expect(unknown.status).toBe(400);
  expect(await unknown.json()).toEqual({ error: 'check "http": must be tcp or grpc' });
  expect((await fetch(`http://127.0.0.1:${running.stats.port}/readyz?check=grpc&check=tcp`)).status).toBe(
    400,
  );
  const stopping = running.stop(1000);
  expect(await readyz(running, '?check=grpc')).toEqual({ status: 503, body: 'stopping\n' });
  await stopping;
});

test('the response decoder: the status field, other fields skipped, broken messages named', () => {
  expect(decodeHealthResponse(Buffer.from([0x08, 0x01]))).toBe(1);
  expect(decodeHealthResponse(Buffer.alloc(0))).toBe(0);
  // an unknown length-delimited field before it, and a fixed64 one after
  expect(
    decodeHealthResponse(Buffer.from([0x12, 0x02, 0x61, 0x62, 0x08, 0x02, 0x19, 1, 2, 3, 4, 5, 6, 7, 8])),
  ).toBe(2);
  expect(decodeHealthResponse(Buffer.from([0x08]))).toBe('a truncated varint');
  expect(decodeHealthResponse(Buffer.from([0x12, 0x05, 0x61]))).toBe('a field past the end');
  expect(decodeHealthResponse(Buffer.from([0x0b]))).toBe('wire type 3');
  expect(unframe(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]))).toEqual(Buffer.from([0x08, 0x01]));
  expect(unframe(Buffer.from([1, 0, 0, 0, 0]))).toBe('a compressed response (none was offered)');
  expect(unframe(Buffer.from([0, 0, 0, 0, 9, 0x08]))).toBe('a frame of 9 bytes in a body of 6');
  expect(unframe(Buffer.from([0, 0]))).toBe('a response body of 2 bytes, shorter than a gRPC frame');
});
