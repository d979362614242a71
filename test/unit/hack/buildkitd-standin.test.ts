// The buildkitd stand-in (hack/buildkitd-standin/), run as a process and called with a real gRPC
// client over TCP and a unix socket, the way buildctl and a gRPC probe reach buildkitd.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';

import { bindAddress, buildShape } from '../../../hack/buildkitd-standin/args.ts';
import { healthCheck, listWorkers, streamBuild } from '../../support/buildkit-client.ts';

const MAIN = fileURLToPath(new URL('../../../hack/buildkitd-standin/main.ts', import.meta.url));

const children: ChildProcess[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** Starts the stand-in and resolves with the addresses it printed. */
async function startStandin(
  addrs: string[],
  flags: string[] = [],
): Promise<{ child: ChildProcess; listening: string[] }> {
  const child = spawn(process.execPath, [MAIN, ...addrs.flatMap((a) => ['--addr', a]), ...flags], {
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

test('it serves health and ListWorkers on every --addr, TCP and unix socket', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bkf-standin-'));
  dirs.push(dir);
  const socket = join(dir, 'buildkitd.sock');
  const { listening } = await startStandin(['tcp://127.0.0.1:0', `unix://${socket}`]);
  expect(listening[0]).toMatch(/^tcp:\/\/127\.0\.0\.1:[0-9]+$/);
  expect(listening[1]).toBe(`unix://${socket}`);
  for (const addr of listening) {
    expect(await healthCheck(addr)).toEqual({ status: 'SERVING' });
    const workers = await listWorkers(addr);
    expect(workers.record).toEqual([
      expect.objectContaining({ ID: 'standin', platforms: [expect.objectContaining({ OS: 'linux' })] }),
    ]);
  }
});

test("it takes the flags the controller's pods give buildkitd, and makes the socket's directory", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bkf-standin-'));
  dirs.push(dir);
  // as in a rootless pod: the socket under /run/user/1000/buildkit, which buildkitd creates
  const socket = join(dir, 'run/user/1000/buildkit/buildkitd.sock');
  const { listening } = await startStandin(
    [`unix://${socket}`],
    ['--config', join(dir, 'buildkitd.toml'), '--oci-worker-no-process-sandbox', '--debug'],
  );
  expect(await healthCheck(listening[0]!)).toEqual({ status: 'SERVING' });
});

test('each start is recorded in the state directory given by --root, as a stand-in for the build cache', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bkf-standin-'));
  dirs.push(dir);
  for (let i = 0; i < 2; i++) {
    const { child } = await startStandin(['tcp://127.0.0.1:0'], ['--root', dir]);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
  }
  expect(readFileSync(join(dir, 'standin-boots.log'), 'utf8').trim().split('\n')).toHaveLength(2);
});

test('Status streams a build with quiet gaps, then ends', async () => {
  const { listening } = await startStandin(['tcp://127.0.0.1:0']);
  const { steps, at } = await streamBuild(listening[0]!, 'steps=3,quiet=300').done;
  expect(steps).toEqual(['step 1/3\n', 'step 2/3\n', 'step 3/3\n']);
  // nothing is sent during a quiet gap
  expect(at[2]! - at[0]!).toBeGreaterThanOrEqual(590);
});

test('SIGTERM ends it at once and cuts an open build, as buildkitd does', async () => {
  const { child, listening } = await startStandin(['tcp://127.0.0.1:0']);
  const build = streamBuild(listening[0]!, 'steps=100,quiet=200');
  await build.firstMessage;
  const ended = build.done.then(
    () => 'end' as const,
    (e: grpc.ServiceError) => e,
  );
  const signalled = Date.now();
  child.kill('SIGTERM');
  const [code] = (await once(child, 'exit')) as [number | null];
  expect(code).toBe(0);
  expect(Date.now() - signalled).toBeLessThan(5000);
  const outcome = await ended;
  expect(outcome).not.toBe('end');
  expect((outcome as grpc.ServiceError).code).toBe(grpc.status.UNAVAILABLE);
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

const BUILDCTL = fileURLToPath(new URL('../../../hack/buildkitd-standin/buildctl.ts', import.meta.url));

function buildctl(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, [BUILDCTL, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  return once(child, 'exit').then(([code]) => ({ code: code as number | null, out, err }));
}

test('the buildctl stand-in answers `debug workers` over the unix socket, as the pre-1.24 probe asks', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bkf-standin-'));
  dirs.push(dir);
  const socket = join(dir, 'buildkitd.sock');
  await startStandin([`unix://${socket}`]);
  const ok = await buildctl('--addr', `unix://${socket}`, 'debug', 'workers');
  expect(ok).toEqual({ code: 0, out: 'ID\tPLATFORMS\nstandin\tlinux/amd64\n', err: '' });
  // no buildkitd there: the probe fails
  const down = await buildctl('--addr', `unix://${join(dir, 'none.sock')}`, 'debug', 'workers');
  expect(down.code).toBe(1);
  expect(down.err).toContain('listing workers');
  // anything but that one command is refused
  const other = await buildctl('build');
  expect(other.code).toBe(2);
  expect(other.err).toContain('only "debug workers" is supported');
});
