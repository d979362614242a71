// The buildkitd stand-in (hack/buildkitd-standin/), run as a process and called with a real gRPC
// client over TCP and a unix socket, the way buildctl and a gRPC probe reach buildkitd.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';

import { bindAddress, buildShape } from '../../../hack/buildkitd-standin/args.ts';
import { standinServices } from '../../../hack/buildkitd-standin/services.ts';

const MAIN = fileURLToPath(new URL('../../../hack/buildkitd-standin/main.ts', import.meta.url));
const services = standinServices();
type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});

/** Starts the stand-in and resolves with the addresses it printed. */
async function startStandin(...addrs: string[]): Promise<{ child: ChildProcess; listening: string[] }> {
  const child = spawn(process.execPath, [MAIN, ...addrs.flatMap((a) => ['--addr', a])], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  let out = '';
  child.stdout!.setEncoding('utf8');
  const listening = await new Promise<string[]>((resolve, reject) => {
    child.stdout!.on('data', (chunk: string) => {
      out += chunk;
      const lines = [...out.matchAll(/^listening on (\S+)$/gm)].map((m) => m[1]!);
      if (lines.length === addrs.length) resolve(lines);
    });
    child.once('exit', (code) => reject(new Error(`stand-in exited ${code} before listening: ${out}`)));
  });
  return { child, listening };
}

const target = (addr: string) =>
  addr.startsWith('tcp://') ? addr.slice('tcp://'.length) : `unix:${addr.slice('unix://'.length)}`;
const client = (ctor: grpc.ServiceClientConstructor, addr: string) =>
  new ctor(target(addr), grpc.credentials.createInsecure()) as unknown as Client;

function unary<T>(c: Client, method: string, request: object): Promise<T> {
  return new Promise((resolve, reject) =>
    c[method]!(request, (error: Error | null, reply: T) => (error ? reject(error) : resolve(reply))),
  );
}

test('it serves health and ListWorkers on every --addr, TCP and unix socket', async () => {
  const socket = join(mkdtempSync(join(tmpdir(), 'bkf-standin-')), 'buildkitd.sock');
  const { listening } = await startStandin('tcp://127.0.0.1:0', `unix://${socket}`);
  expect(listening[0]).toMatch(/^tcp:\/\/127\.0\.0\.1:[0-9]+$/);
  expect(listening[1]).toBe(`unix://${socket}`);
  for (const addr of listening) {
    const health = client(services.Health, addr);
    expect(await unary(health, 'Check', { service: '' })).toEqual({ status: 'SERVING' });
    const control = client(services.Control, addr);
    const workers = await unary<{ record: { ID: string; platforms: { OS: string }[] }[] }>(
      control,
      'ListWorkers',
      {},
    );
    expect(workers.record).toEqual([
      expect.objectContaining({ ID: 'standin', platforms: [expect.objectContaining({ OS: 'linux' })] }),
    ]);
    health.close();
    control.close();
  }
});

test('Status streams a build with quiet gaps, then ends', async () => {
  const { listening } = await startStandin('tcp://127.0.0.1:0');
  const control = client(services.Control, listening[0]!);
  const started = Date.now();
  const arrivals: { at: number; msg: string }[] = [];
  await new Promise<void>((resolve, reject) => {
    const call = control['Status']!({ Ref: 'steps=3,quiet=300' }) as grpc.ClientReadableStream<{
      logs: { msg: Buffer }[];
    }>;
    call.on('data', (m) => arrivals.push({ at: Date.now() - started, msg: m.logs[0]!.msg.toString() }));
    call.on('end', resolve);
    call.on('error', reject);
  });
  expect(arrivals.map((a) => a.msg)).toEqual(['step 1/3\n', 'step 2/3\n', 'step 3/3\n']);
  // nothing is sent during a quiet gap
  expect(arrivals[2]!.at - arrivals[0]!.at).toBeGreaterThanOrEqual(590);
  control.close();
});

test('SIGTERM ends it at once and cuts an open build, as buildkitd does', async () => {
  const { child, listening } = await startStandin('tcp://127.0.0.1:0');
  const control = client(services.Control, listening[0]!);
  const call = control['Status']!({ Ref: 'steps=100,quiet=200' }) as grpc.ClientReadableStream<unknown>;
  await new Promise((resolve) => call.once('data', resolve));
  const ended = new Promise<grpc.ServiceError | 'end'>((resolve) => {
    call.on('error', resolve);
    call.on('end', () => resolve('end'));
  });
  const signalled = Date.now();
  child.kill('SIGTERM');
  const [code] = (await once(child, 'exit')) as [number | null];
  expect(code).toBe(0);
  expect(Date.now() - signalled).toBeLessThan(5000);
  const outcome = await ended;
  expect(outcome).not.toBe('end');
  expect((outcome as grpc.ServiceError).code).toBe(grpc.status.UNAVAILABLE);
  control.close();
});

test('bad input: flags and build shapes', async () => {
  expect(bindAddress('tcp://0.0.0.0:1234')).toBe('0.0.0.0:1234');
  expect(bindAddress('unix:///run/buildkit/buildkitd.sock')).toBe('unix:/run/buildkit/buildkitd.sock');
  expect(bindAddress('http://x')).toBeUndefined();
  expect(buildShape('')).toEqual({ steps: 3, quietMs: 1000 });
  expect(buildShape('steps=1,quiet=5')).toEqual({ steps: 1, quietMs: 5 });
  expect(buildShape('steps=-1')).toBeUndefined();
  expect(buildShape('colour=blue')).toBeUndefined();
  const child = spawn(process.execPath, [MAIN, '--addr', 'http://x'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const [code] = (await once(child, 'exit')) as [number | null];
  expect(code).toBe(2);
  expect(err).toContain('--addr http://x: must be tcp://<host>:<port> or unix:///<path>');
});
