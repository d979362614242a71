// A gRPC client for what buildctl asks buildkitd (health, ListWorkers, a build's Status stream),
// over a buildkitd address (tcp://host:port or unix:///path). Used against the buildkitd stand-in
// directly and through the sidecar, Service and kube-proxy.
import * as grpc from '@grpc/grpc-js';

import { standinServices } from '../../hack/buildkitd-standin/services.ts';

const services = standinServices();
type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

export const grpcTarget = (addr: string): string =>
  addr.startsWith('tcp://') ? addr.slice('tcp://'.length) : `unix:${addr.slice('unix://'.length)}`;

function client(ctor: grpc.ServiceClientConstructor, addr: string): Client {
  return new ctor(grpcTarget(addr), grpc.credentials.createInsecure()) as unknown as Client;
}

function unary<T>(c: Client, method: string, request: object, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) =>
    c[method]!(request, { deadline: Date.now() + timeoutMs }, (error: Error | null, reply: T) =>
      error ? reject(error) : resolve(reply),
    ),
  ).finally(() => c.close());
}

export function healthCheck(addr: string, timeoutMs = 5000): Promise<{ status: string }> {
  return unary(client(services.Health, addr), 'Check', { service: '' }, timeoutMs);
}

export interface Worker {
  ID: string;
  platforms: { OS: string; Architecture: string }[];
}

export function listWorkers(addr: string, timeoutMs = 5000): Promise<{ record: Worker[] }> {
  return unary(client(services.Control, addr), 'ListWorkers', {}, timeoutMs);
}

export interface BuildRun {
  /** resolves when the stream ends: the step messages and when each arrived (ms after start) */
  done: Promise<{ steps: string[]; at: number[] }>;
  /** resolves at the first message */
  firstMessage: Promise<void>;
  cancel(): void;
}

/** A build's Status stream (`steps=<n>,quiet=<ms>`), as `buildctl build` keeps one open. */
export function streamBuild(addr: string, ref: string): BuildRun {
  const control = client(services.Control, addr);
  const call = control['Status']!({ Ref: ref }) as grpc.ClientReadableStream<{ logs: { msg: Buffer }[] }>;
  const started = Date.now();
  const steps: string[] = [];
  const at: number[] = [];
  let first!: () => void;
  const firstMessage = new Promise<void>((resolve) => (first = resolve));
  const done = new Promise<{ steps: string[]; at: number[] }>((resolve, reject) => {
    call.on('data', (m) => {
      steps.push(m.logs[0]!.msg.toString());
      at.push(Date.now() - started);
      first();
    });
    call.on('end', () => resolve({ steps, at }));
    call.on('error', reject);
  }).finally(() => control.close());
  return { done, firstMessage, cancel: () => call.cancel() };
}
