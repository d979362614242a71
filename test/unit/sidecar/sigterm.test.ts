// Graceful termination of the real sidecar process (`node sidecar/main.ts`): after SIGTERM new
// connections are refused, open ones keep working until they close (or --grace ends), then exit 0.
import { jest } from '@jest/globals';
import {
  connect,
  roundTrip,
  runCleanups,
  startSidecarProcess as startChild,
  startSidecarToEcho,
} from '../../support/sidecar.ts';

jest.setTimeout(30_000);

afterEach(runCleanups);

const start = (grace: string) => startSidecarToEcho(['--grace', grace]);

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
  expect(await drained.json()).toEqual({ open: 1, backlog: 0 });
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
