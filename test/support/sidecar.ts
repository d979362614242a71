// Shared by the sidecar tests: cleanups run after each test, an echo server as a stand-in for
// buildkitd's TCP port, and the real sidecar process.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

import type { HostPort } from '../../flags/options.ts';

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

export interface SidecarProcess {
  proc: ChildProcess;
  /** its log lines (JSON), as they come */
  lines: Record<string, unknown>[];
  waitFor(msg: string): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
}

const sidecarMain = fileURLToPath(new URL('../../sidecar/main.ts', import.meta.url));

/**
 * Runs `node sidecar/main.ts args` (process.execPath is the Node 24 that runs jest, which runs .ts
 * directly), behind `wrapper` when given (say prlimit); killed after the test.
 */
export function startSidecarProcess(args: string[], wrapper: string[] = []): SidecarProcess {
  const command = [...wrapper, process.execPath, sidecarMain, ...args];
  const proc = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  let buffered = '';
  proc.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    for (const line of parts) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
    waiters.splice(0).forEach((w) => w());
  });
  let stderr = '';
  proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  cleanups.push(() => proc.kill('SIGKILL'));
  const waitFor = async (msg: string) => {
    for (;;) {
      const found = lines.find((l) => l['msg'] === msg);
      if (found) return found;
      if (proc.exitCode !== null) throw new Error(`sidecar exited before "${msg}": ${stderr}`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        proc.once('exit', () => resolve());
      });
    }
  };
  return { proc, lines, waitFor, exited };
}

export interface ServingSidecar {
  child: SidecarProcess;
  /** its `sidecar serving` log line */
  serving: Record<string, unknown>;
  listen: number;
  stats: number;
}

/** The sidecar process on ephemeral loopback ports in front of a fresh echo server, once serving. */
export async function startSidecarToEcho(
  extraArgs: string[],
  wrapper: string[] = [],
): Promise<ServingSidecar> {
  const upstream = await echoServer();
  const args = [
    '--listen',
    '127.0.0.1:0',
    '--stats',
    '127.0.0.1:0',
    '--upstream',
    `127.0.0.1:${upstream.port}`,
  ];
  const child = startSidecarProcess([...args, ...extraArgs], wrapper);
  const serving = await child.waitFor('sidecar serving');
  return {
    child,
    serving,
    listen: (serving['listen'] as { port: number }).port,
    stats: (serving['stats'] as { port: number }).port,
  };
}
