// A real gRPC client and server (@grpc/grpc-js) through the sidecar: unary calls and a
// long-lived bidirectional stream, the way buildctl talks to buildkitd (gRPC over HTTP/2).
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';

import type { Proxy } from '../../../sidecar/proxy.ts';
import { createProxy } from '../../../sidecar/proxy.ts';

// A stand-in service for buildkitd's: raw bytes in and out, so no .proto compilation is needed.
const bytes = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const service: grpc.ServiceDefinition = {
  echo: {
    path: '/buildkitfleet.test.StandIn/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: bytes.serialize,
    requestDeserialize: bytes.deserialize,
    responseSerialize: bytes.serialize,
    responseDeserialize: bytes.deserialize,
  },
  session: {
    path: '/buildkitfleet.test.StandIn/Session',
    requestStream: true,
    responseStream: true,
    requestSerialize: bytes.serialize,
    requestDeserialize: bytes.deserialize,
    responseSerialize: bytes.serialize,
    responseDeserialize: bytes.deserialize,
  },
};

let server: grpc.Server;
let proxy: Proxy;
let client: grpc.Client & Record<string, (...args: unknown[]) => unknown>;

beforeAll(async () => {
  server = new grpc.Server();
  server.addService(service, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
      callback(null, Buffer.concat([Buffer.from('echo:'), call.request])),
    session: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (chunk: Buffer) => call.write(Buffer.concat([Buffer.from('ack:'), chunk])));
      call.on('end', () => call.end());
    },
  });
  const upstreamPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, port) =>
      error ? reject(error) : resolve(port),
    ),
  );
  proxy = createProxy({
    upstream: { host: '127.0.0.1', port: upstreamPort },
    logger: pino({ level: 'silent' }),
  });
  const { port } = await proxy.listen('127.0.0.1', 0);
  const Client = grpc.makeGenericClientConstructor(service, 'StandIn');
  client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as typeof client;
});

afterAll(async () => {
  client.close();
  proxy.destroyAll();
  await proxy.stopAccepting();
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
});

const unary = (payload: Buffer) =>
  new Promise<Buffer>((resolve, reject) =>
    client['echo']!(payload, (error: grpc.ServiceError | null, reply: Buffer) =>
      error ? reject(error) : resolve(reply),
    ),
  );

test('unary calls pass through the sidecar unchanged, and are counted', async () => {
  const before = proxy.counters.bytesIn;
  const big = Buffer.alloc(3 * 1024 * 1024, 7); // larger than one HTTP/2 frame and window
  expect((await unary(Buffer.from('hello'))).toString()).toBe('echo:hello');
  expect((await unary(big)).subarray(5).equals(big)).toBe(true);
  expect(proxy.counters.bytesIn - before).toBeGreaterThan(big.length);
  expect(proxy.counters.open).toBe(1); // one HTTP/2 connection carries every call
});

test('a long-lived bidirectional stream stays up across quiet periods, with unary calls beside it', async () => {
  const stream = client['session']!() as grpc.ClientDuplexStream<Buffer, Buffer>;
  const replies: string[] = [];
  stream.on('data', (chunk: Buffer) => replies.push(chunk.toString()));
  const ended = new Promise<void>((resolve, reject) => {
    stream.on('end', () => resolve());
    stream.on('error', reject);
  });
  for (let i = 0; i < 5; i++) {
    stream.write(Buffer.from(`step ${i}`));
    await new Promise((resolve) => setTimeout(resolve, 200)); // a build step with no traffic
    expect((await unary(Buffer.from(`during ${i}`))).toString()).toBe(`echo:during ${i}`);
  }
  stream.end();
  await ended;
  expect(replies).toEqual([0, 1, 2, 3, 4].map((i) => `ack:step ${i}`));
  expect(proxy.counters.open).toBe(1);
});
