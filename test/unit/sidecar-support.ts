// Shared by the sidecar tests: cleanups run after each test, and an echo server as a stand-in
// for buildkitd's TCP port.
import net from 'node:net';
import type { AddressInfo } from 'node:net';

import type { HostPort } from '../../cli/options.ts';

/** Pushed by a test, run newest first after it (call runCleanups from afterEach). */
export const cleanups: (() => unknown)[] = [];

export async function runCleanups(): Promise<void> {
  while (cleanups.length) await cleanups.pop()!();
}

export async function echoServer(): Promise<HostPort> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => {
    sockets.forEach((s) => s.destroy());
    return new Promise((resolve) => server.close(resolve));
  });
  return { host: '127.0.0.1', port: (server.address() as AddressInfo).port };
}

/** A client connection to 127.0.0.1:`port`, closed after the test. */
export function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
    cleanups.push(() => socket.destroy());
  });
}

/** Sends `text` and resolves with the first chunk that comes back. */
export async function roundTrip(socket: net.Socket, text: string): Promise<string> {
  const reply = new Promise<string>((resolve) => socket.once('data', (c: Buffer) => resolve(c.toString())));
  socket.write(text);
  return reply;
}
