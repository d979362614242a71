// Graceful termination of the real sidecar process (`node sidecar/main.ts`): after SIGTERM new
// connections are refused, open ones keep working until they close (or --grace ends), then exit 0.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { jest } from '@jest/globals';
import { cleanups, connect, echoServer, roundTrip, runCleanups } from './sidecar-support.ts';

jest.setTimeout(30_000);

const main = fileURLToPath(new URL('../../sidecar/main.ts', import.meta.url));
afterEach(runCleanups);

interface Child {
  proc: ChildProcess;
  lines: Record<string, unknown>[];
  waitFor(msg: string): Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
}

function startChild(args: string[]): Child {
  // process.execPath is the Node 24 that runs jest, which runs .ts directly
  const proc = spawn(process.execPath, [main, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
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

async function start(grace: string) {
  const upstream = await echoServer();
  const child = startChild([
    '--listen',
    '127.0.0.1:0',
    '--stats',
    '127.0.0.1:0',
    '--upstream',
    `127.0.0.1:${upstream.port}`,
    '--grace',
    grace,
  ]);
  const serving = await child.waitFor('sidecar serving');
  const listen = (serving['listen'] as { port: number }).port;
  const stats = (serving['stats'] as { port: number }).port;
  return { child, listen, stats };
}

test('SIGTERM: open connections keep working until they close, new ones are refused, then exit 0', async () => {
  const { child, listen, stats } = await start('20');
  const socket = await connect(listen);
  expect(await roundTrip(socket, 'before')).toBe('before');

  const signalled = Date.now();
  child.proc.kill('SIGTERM');
  await child.waitFor('stopped accepting; waiting for open connections');
  await expect(connect(listen)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  // the open connection still works, and the preStop check still answers (not drained yet)
  expect(await roundTrip(socket, 'after')).toBe('after');
  const drained = await fetch(`http://127.0.0.1:${stats}/drained`);
  expect(drained.status).toBe(503);
  expect(await drained.json()).toEqual({ open: 1 });
  expect(child.proc.exitCode).toBeNull();

  socket.end();
  expect(await child.exited).toBe(0);
  expect(Date.now() - signalled).toBeLessThan(5000);
  const stopped = child.lines.find((l) => l['msg'] === 'sidecar stopped');
  expect(stopped).toMatchObject({ drained: true, open: 0, opened: 1, closed: 1, bytesIn: 11, bytesOut: 11 });
});

test('SIGTERM: connections still open when --grace ends are reset, then exit 0', async () => {
  const { child, listen } = await start('0.5');
  const socket = await connect(listen);
  expect(await roundTrip(socket, 'x')).toBe('x');
  const outcome = new Promise<string>((resolve) => {
    socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    socket.once('end', () => resolve('end'));
  });
  const signalled = Date.now();
  child.proc.kill('SIGTERM');
  expect(await outcome).toBe('ECONNRESET');
  expect(await child.exited).toBe(0);
  expect(Date.now() - signalled).toBeGreaterThanOrEqual(450);
  expect(child.lines.find((l) => l['msg'] === 'sidecar stopped')).toMatchObject({ drained: false, open: 0 });
});

test('bad input exits 2 with a clear message and no stack trace', async () => {
  const child = startChild(['--listen', '127.0.0.1:5000', '--upstream', '127.0.0.1:5000']);
  let stderr = '';
  child.proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  expect(await child.exited).toBe(2);
  expect(stderr).toMatch(/^sidecar: --upstream 127.0.0.1:5000 is the --listen address/);
  expect(stderr).not.toContain('    at ');
});
