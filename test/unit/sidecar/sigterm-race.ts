// Drives the SIGTERM race against the real sidecar process: clients connect to the sidecar's
// public port while it receives SIGTERM, and each client's outcome is recorded. A client whose
// connect completed must be served (its bytes echoed back) or, at the very least, refused before
// it connected; a client that connected and then got a reset (or a bare end of stream) is what
// the sidecar must never do. Used by sigterm-race.test.ts, and runnable on its own to measure:
//
//   node test/unit/sidecar/sigterm-race.ts --engine js --rounds 20 --clients 5 [--main sidecar/main.ts]
//     [--handoff] [--handoff-linger 0.3]
//
// Each round starts a fresh sidecar in front of an echo server, then performs `clients` connects
// and one SIGTERM as a sequence of steps one event-loop turn apart, the SIGTERM at a different
// step each round (before all connects, between them, after all), so the connects land before,
// while and after the sidecar handles the signal. With --handoff, each round first fences the
// sidecar with a handoff address (another echo server, whose answers are tagged): clients the
// stopping sidecar sends there count as handed off.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export type ClientOutcome = 'served' | 'handed off' | 'refused' | 'reset' | 'closed unserved' | 'timeout';

export interface RaceTally {
  served: number;
  'handed off': number;
  refused: number;
  reset: number;
  'closed unserved': number;
  timeout: number;
  rounds: number;
  /** rounds in which the sidecar did not exit 0 */
  badExits: number;
}

const DEFAULT_MAIN = fileURLToPath(new URL('../../../sidecar/main.ts', import.meta.url));

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** One client: connects, sends a line, and waits for it to come back. */
function client(port: number, text: string, timeoutMs: number): Promise<ClientOutcome> {
  return new Promise((resolve) => {
    let connected = false;
    let got = '';
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (outcome: ClientOutcome) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => done('timeout'), timeoutMs);
    socket.once('connect', () => {
      connected = true;
      socket.write(text);
    });
    const answered = () => got === text || got === `${HANDOFF_TAG}${text}`;
    socket.on('data', (chunk: Buffer) => {
      got += chunk.toString();
      if (answered()) {
        clearTimeout(timer);
        socket.end();
        socket.once('close', () => resolve(got === text ? 'served' : 'handed off'));
      }
    });
    socket.once('end', () => {
      if (!answered()) done('closed unserved');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      if (!connected && error.code === 'ECONNREFUSED') done('refused');
      else if (answered()) return;
      else done('reset');
    });
  });
}

const HANDOFF_TAG = 'handoff:';

/** An echo server; `tag` goes before every answer. */
async function echoServer(tag = ''): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => socket.write(tag + chunk.toString()));
    socket.on('end', () => socket.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        sockets.forEach((s) => s.destroy());
        server.close(() => resolve());
      }),
  };
}

/** Starts the sidecar process and resolves with its public port once it logs `sidecar serving`. */
function startSidecar(
  main: string,
  args: string[],
): Promise<{
  port: number;
  stats: number;
  exited: Promise<number | null>;
  kill(signal: NodeJS.Signals): void;
}> {
  const proc = spawn(process.execPath, [main, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  let stderr = '';
  proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve, reject) => {
    let buffered = '';
    proc.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      for (const line of buffered.split('\n').slice(0, -1)) {
        const entry = JSON.parse(line) as {
          msg?: string;
          listen?: { port: number };
          stats?: { port: number };
        };
        if (entry.msg === 'sidecar serving') {
          resolve({
            port: entry.listen!.port,
            stats: entry.stats!.port,
            exited,
            kill: (signal) => proc.kill(signal),
          });
        }
      }
      buffered = buffered.slice(buffered.lastIndexOf('\n') + 1);
    });
    void exited.then((code) => reject(new Error(`sidecar exited (${code}) before serving: ${stderr}`)));
  });
}

export interface RaceOptions {
  engine: string;
  rounds: number;
  clients: number;
  /** the sidecar's main.ts (another checkout's, to measure it) */
  main?: string;
  /** more sidecar flags */
  args?: string[];
  /** fence each sidecar with a handoff address first (`tokenFile` holds `token`) */
  handoff?: { tokenFile: string; token: string };
}

/** Runs the race `rounds` times; every round is a fresh sidecar process. */
export async function sigtermRace(options: RaceOptions): Promise<RaceTally> {
  const tally: RaceTally = {
    served: 0,
    'handed off': 0,
    refused: 0,
    reset: 0,
    'closed unserved': 0,
    timeout: 0,
    rounds: 0,
    badExits: 0,
  };
  const upstream = await echoServer();
  const handoff = options.handoff ? await echoServer(HANDOFF_TAG) : undefined;
  try {
    for (let round = 0; round < options.rounds; round++) {
      const sidecar = await startSidecar(options.main ?? DEFAULT_MAIN, [
        '--engine',
        options.engine,
        '--listen',
        '127.0.0.1:0',
        '--stats',
        '127.0.0.1:0',
        '--upstream',
        `127.0.0.1:${upstream.port}`,
        '--grace',
        '10',
        ...(options.handoff ? ['--token-file', options.handoff.tokenFile] : []),
        ...(options.args ?? []),
      ]);
      if (handoff) {
        const fenced = await fetch(
          `http://127.0.0.1:${sidecar.stats}/fence?handoff=127.0.0.1:${handoff.port}`,
          {
            method: 'POST',
            headers: { authorization: `Bearer ${options.handoff!.token}` },
          },
        );
        if (fenced.status !== 200) throw new Error(`POST /fence answered ${fenced.status}`);
      }
      // the SIGTERM at step `at` of clients + 1 steps, one event-loop turn apart
      const at = round % (options.clients + 1);
      const outcomes: Promise<ClientOutcome>[] = [];
      for (let step = 0, next = 0; step <= options.clients; step++) {
        if (step === at) sidecar.kill('SIGTERM');
        else outcomes.push(client(sidecar.port, `round ${round} client ${next++}`, 8000));
        await nextTurn();
      }
      for (const outcome of await Promise.all(outcomes)) tally[outcome]++;
      const code = await Promise.race([
        sidecar.exited,
        new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 15_000)),
      ]);
      if (code !== 0) {
        tally.badExits++;
        sidecar.kill('SIGKILL');
      }
      tally.rounds++;
    }
  } finally {
    await upstream.close();
    await handoff?.close();
  }
  return tally;
}

const invokedDirectly = process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1];
if (invokedDirectly) {
  const { values } = parseArgs({
    options: {
      engine: { type: 'string', default: 'native' },
      rounds: { type: 'string', default: '20' },
      clients: { type: 'string', default: '5' },
      main: { type: 'string' },
      handoff: { type: 'boolean', default: false },
      'handoff-linger': { type: 'string', default: '0.3' },
    },
  });
  let handoff: RaceOptions['handoff'];
  if (values.handoff) {
    const dir = mkdtempSync(join(tmpdir(), 'bkf-race-'));
    writeFileSync(join(dir, 'token'), 'race\n');
    handoff = { tokenFile: join(dir, 'token'), token: 'race' };
  }
  const tally = await sigtermRace({
    engine: values.engine,
    rounds: Number(values.rounds),
    clients: Number(values.clients),
    ...(values.main ? { main: values.main } : {}),
    ...(handoff ? { handoff, args: ['--handoff-linger', values['handoff-linger']] } : {}),
  });
  if (handoff) rmSync(dirname(handoff.tokenFile), { recursive: true, force: true });
  process.stdout.write(`${JSON.stringify({ engine: values.engine, handoff: values.handoff, ...tally })}\n`);
}
