// The preStop drain script, rendered from controller/assets/buildkit-prestop.sh and then run for
// real with /bin/sh against real TCP connections (it reads this machine's /proc/net/tcp).
// UPDATE_GOLDEN=1 rewrites the golden copy of the script in test/unit/controller/golden/prestop/.
import type { ChildProcess } from 'node:child_process';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo, Server, Socket } from 'node:net';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { prestopScript } from '../../../controller/prestop.ts';
import { goldenDir } from '../../support/golden.ts';

const { expectGolden } = goldenDir(new URL('./golden/', import.meta.url));

const shells = ['sh', 'dash', 'bash', 'busybox'].filter(
  (shell) => spawnSync('sh', ['-c', `command -v ${shell}`]).status === 0,
);

describe('prestopScript', () => {
  test('the default script is reviewed in test/unit/controller/golden/prestop/buildkit-prestop.sh', () => {
    expectGolden('prestop/buildkit-prestop.sh', prestopScript(1234));
  });

  test('the asset has exactly the placeholders prestop.ts fills, and none is left over', () => {
    const asset = readFileSync(
      new URL('../../../controller/assets/buildkit-prestop.sh', import.meta.url),
      'utf8',
    );
    const names = new Set([...asset.matchAll(/\{\{([A-Z_]+)\}\}/g)].map((m) => m[1]));
    expect([...names].sort()).toEqual([
      'DEFAULT_PORT',
      'HEARTBEAT_CHECKS',
      'INTERVAL_MS',
      'INTERVAL_SECONDS',
      'INTERVAL_US',
      'QUIET_SECONDS',
      'REQUIRED_CHECKS',
    ]);
    for (const script of [
      prestopScript(1234),
      prestopScript(65535, { quietSeconds: 7, intervalMs: 60_000 }),
    ]) {
      expect(script).not.toMatch(/\{\{|\}\}\}/);
    }
  });

  test('the port and timing are parameters', () => {
    const script = prestopScript(8372, { quietSeconds: 30, intervalMs: 250 });
    expect(script).toContain('PORT="${1:-8372}"');
    expect(script).toContain('REQUIRED_CHECKS=120');
    expect(script).toContain('usleep 250000 2>/dev/null || sleep 0.25');
  });

  test.each<[number, object]>([
    [0, {}],
    [65536, {}],
    [1.5, {}],
    [1234, { quietSeconds: 0 }],
    [1234, { intervalMs: -1 }],
    [1234, { intervalMs: 120_000 }],
  ])('refuses port %p with %p', (port, options) => {
    expect(() => prestopScript(port, options)).toThrow(RangeError);
  });

  test.each(shells.filter((s) => s !== 'busybox'))('parses with %s -n', (shell) => {
    const result = spawnSync(shell, ['-n'], { input: prestopScript(1234) });
    expect(result.stderr.toString()).toBe('');
    expect(result.status).toBe(0);
  });

  test('parses with busybox sh (the moby/buildkit images use it)', () => {
    // .ci/run installs busybox; a missing one is a failure, not a skip
    expect(shells).toContain('busybox');
    const result = spawnSync('busybox', ['sh', '-n'], { input: prestopScript(1234) });
    expect(result.stderr.toString()).toBe('');
    expect(result.status).toBe(0);
  });
});

describe.each([['/bin/sh'], ['busybox sh']])('prestopScript run with %s', (shell) => {
  let dir: string;
  let server: Server;
  let other: Server;
  const sockets: Socket[] = [];
  const children: ChildProcess[] = [];

  const listen = async (): Promise<Server> => {
    const s = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    return s;
  };
  const portOf = (s: Server): number => (s.address() as AddressInfo).port;
  const connectTo = async (s: Server): Promise<Socket> => {
    const socket = connect(portOf(s), '127.0.0.1');
    sockets.push(socket);
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    return socket;
  };

  /** Runs the script (1s quiet period, 100ms checks) for `port`, logging to a file. */
  const run = (port: number) => {
    const file = join(dir, 'prestop.sh');
    const log = join(dir, `log-${children.length}.jsonl`);
    writeFileSync(file, prestopScript(1, { quietSeconds: 1, intervalMs: 100 }));
    const started = Date.now();
    const [command, ...shellArgs] = shell.split(' ') as [string, ...string[]];
    const child = spawn(command, [...shellArgs, file, String(port)], {
      env: { PATH: process.env.PATH, BUILDKIT_PRESTOP_LOG: log },
      stdio: 'ignore',
    });
    children.push(child);
    const exited = new Promise<number>((resolve) => child.once('exit', () => resolve(Date.now() - started)));
    const lines = () =>
      readFileSync(log, 'utf8')
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { level: string; msg: string; port: number; connections: number });
    return { child, exited, lines };
  };

  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bkf-prestop-'));
    server = await listen();
    other = await listen();
  });

  afterEach(async () => {
    for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
    for (const socket of sockets.splice(0)) socket.destroy();
    await Promise.all([server, other].map((s) => new Promise((resolve) => s.close(resolve))));
    rmSync(dir, { recursive: true, force: true });
  });

  test('returns after the quiet period when nobody is connected', async () => {
    const { exited, lines } = run(portOf(server));
    const took = await exited;
    expect(took).toBeGreaterThanOrEqual(1000);
    // The script has no deadline of its own, so this only says it returned; a busy machine
    // (tens of thousands of TIME_WAIT rows in /proc/net/tcp) slows each check.
    expect(took).toBeLessThan(20_000);
    const log = lines();
    expect(log[0]).toMatchObject({ level: 'info', port: portOf(server), connections: 0 });
    expect(log.at(-1)!.msg).toContain('may stop');
  }, 30_000);

  test('waits while a client is connected, then returns once it leaves', async () => {
    const client = await connectTo(server);
    const { child, exited, lines } = run(portOf(server));
    await sleep(2000);
    expect(child.exitCode).toBeNull();
    expect(lines()[0]!.connections).toBe(1);

    client.destroy();
    const took = await exited;
    expect(took).toBeGreaterThanOrEqual(3000);
    expect(lines().map((l) => l.connections)).toEqual([1, 1, 0, 0]);
  }, 30_000);

  test('connections to another port do not count', async () => {
    await connectTo(other);
    const { exited, lines } = run(portOf(server));
    expect(await exited).toBeLessThan(20_000);
    expect(lines().map((l) => l.connections)).toEqual([0, 0, 0]);
  }, 30_000);
});
