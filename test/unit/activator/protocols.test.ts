// The activator never parses the stream: an HTTP/2 client (gRPC's transport) and a TLS client that
// dial while the target is at zero finish their request once it is ready, as if they had waited
// for a slow server.
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { jest } from '@jest/globals';

import { createCa, createServingCert } from '../../../certs/index.ts';
import { cleanups, freePort, outcomes, runCleanups, startActivator, until } from './helpers.ts';

jest.setTimeout(60_000);
afterEach(runCleanups);

const KEY = 'ci/buildkit/bk';
const hold = { kind: 'hold' } as const;

test('HTTP/2: a request made while held is answered once the target is forwarded', async () => {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200 });
    stream.end(`answer to ${headers[':path']}`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  const upstream = { host: '127.0.0.1', port: (server.address() as AddressInfo).port };

  const h = startActivator();
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  cleanups.push(() => session.destroy());
  const request = session.request({ ':path': '/moby.buildkit.v1.Control/Status', ':method': 'POST' });
  request.end('request body');
  let body = '';
  request.setEncoding('utf8');
  request.on('data', (chunk: string) => (body += chunk));
  const ended = new Promise((resolve) => request.once('end', resolve));
  // the preface, SETTINGS and the request wait in the activator
  await until('preface held', () => h.activator.stats().bufferedBytes > 24);
  expect(h.activator.held(KEY)).toBe(1);
  expect(h.wakes).toEqual([KEY]);

  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  await ended;
  expect(body).toBe('answer to /moby.buildkit.v1.Control/Status');
  expect(await outcomes(h.registry, KEY)).toEqual({ spliced: 1 });
});

test('TLS: the handshake started while held completes through the splice, end to end', async () => {
  const ca = createCa({ commonName: 'activator test CA' });
  const cert = createServingCert({ ca, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  const server = tls.createServer({ cert: cert.certPem, key: cert.keyPem }, (socket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  const upstream = { host: '127.0.0.1', port: (server.address() as AddressInfo).port };

  const h = startActivator();
  const port = await freePort();
  await h.activator.setTargets([{ key: KEY, port, mode: hold }]);
  const client = tls.connect({ host: '127.0.0.1', port, ca: ca.certPem, servername: 'localhost' });
  cleanups.push(() => client.destroy());
  const secure = new Promise((resolve, reject) => {
    client.once('secureConnect', resolve);
    client.once('error', reject);
  });
  await until('ClientHello held', () => h.activator.stats().bufferedBytes > 0);
  await h.activator.setTargets([{ key: KEY, port, mode: { kind: 'forward', upstream } }]);
  await secure;
  expect(client.authorized).toBe(true);
  const echoed = new Promise<string>((resolve) => client.once('data', (c: Buffer) => resolve(c.toString())));
  client.write('over tls');
  expect(await echoed).toBe('over tls');
});
