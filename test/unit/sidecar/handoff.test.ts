// The handoff address (POST /fence?handoff=<ip>:<port>): where a stopping sidecar sends the
// clients that still arrive while kube-proxy reprograms. The address is checked strictly (400 and
// no change); on SIGTERM with one, the real sidecar process keeps accepting for --handoff-linger
// after the last arrival (within --grace) and proxies each new connection there instead of to
// buildkitd, for both engines; without one it refuses at once, as before.
import { setTimeout as sleep } from 'node:timers/promises';
import { jest } from '@jest/globals';
import { pino } from 'pino';

import { parseOptions } from '../../../flags/options.ts';
import { parseHandoff } from '../../../sidecar/handoff.ts';
import type { RunningSidecar } from '../../../sidecar/main.ts';
import { SIDECAR_OPTIONS, startSidecar } from '../../../sidecar/main.ts';
import { cleanups, connect, runCleanups, startSidecarProcess } from '../../support/sidecar.ts';
import type { SidecarProcess } from '../../support/sidecar.ts';
import { exchange, rawHttp, taggedEcho, tokenFile } from './helpers.ts';

jest.setTimeout(60_000);
afterEach(runCleanups);

const TOKEN = 'handoff-token';
const token = tokenFile(TOKEN);
const logger = pino({ level: 'silent' });

describe('the address', () => {
  const context = {
    listen: { host: '0.0.0.0', port: 1234 },
    stats: { host: '0.0.0.0', port: 9436 },
    upstream: { host: '127.0.0.1', port: 1233 },
    localAddresses: ['127.0.0.1', '::1', '10.244.0.5'],
  };
  const error = (text: string) => {
    const parsed = parseHandoff(text, context);
    return 'error' in parsed ? parsed.error : undefined;
  };

  test('an IPv4 or bracketed IPv6 literal and a port 1-65535', () => {
    expect(parseHandoff('10.0.0.7:1234', context)).toEqual({ address: { host: '10.0.0.7', port: 1234 } });
    expect(parseHandoff('[fd00::7]:65535', context)).toEqual({ address: { host: 'fd00::7', port: 65535 } });
    // another pod may well listen on the same port number as this sidecar
    expect(parseHandoff('10.244.0.9:1234', context)).toEqual({ address: { host: '10.244.0.9', port: 1234 } });
    expect(parseHandoff('[::ffff:10.0.0.7]:1', context)).toEqual({
      address: { host: '::ffff:10.0.0.7', port: 1 },
    });
  });

  test('anything else is refused with the reason', () => {
    const cases: [string, RegExp][] = [
      ['', /must be <ip>:<port>/],
      ['10.0.0.7', /must be <ip>:<port>/],
      ['fd00::7:1234', /must be <ip>:<port>/],
      ['activator.system.svc:1234', /is not an IPv4 address \(names are not accepted/],
      ['localhost:1234', /names are not accepted/],
      ['10.0.0.256:1', /is not an IPv4 address/],
      ['010.0.0.7:1', /is not an IPv4 address/],
      ['[fd00::7%eth0]:1', /is not an IPv6 address \(a zone/],
      ['[10.0.0.7]:1', /is not an IPv6 address/],
      ['10.0.0.7:0', /port must be a number from 1 to 65535, not "0"/],
      ['10.0.0.7:65536', /from 1 to 65535/],
      ['10.0.0.7:01234', /from 1 to 65535/],
      ['10.0.0.7:+1', /from 1 to 65535/],
      ['10.0.0.7:', /from 1 to 65535/],
      ['0.0.0.0:1', /is an unspecified address/],
      ['[::]:1', /is an unspecified address/],
      ['224.0.0.1:1', /is a multicast address/],
      ['[ff02::1]:1', /is a multicast address/],
      ['255.255.255.255:1', /is the broadcast address/],
      ['127.0.0.1:1234', /this sidecar's own public port: it would connect to itself/],
      ['10.244.0.5:1234', /own public port/],
      ['[::1]:9436', /this sidecar's stats port/],
      ['127.0.0.1:1233', /buildkitd's address/],
      ['127.0.0.2:1233', /buildkitd's address/],
    ];
    for (const [text, why] of cases) {
      expect({ text, error: error(text) }).toEqual({ text, error: expect.stringMatching(why) });
      expect(error(text)).toContain(`handoff ${JSON.stringify(text)}: `);
    }
  });
});

describe('POST /fence?handoff=', () => {
  let running: RunningSidecar;
  let upstreamPort: number;
  beforeEach(async () => {
    const upstream = await taggedEcho('buildkitd');
    upstreamPort = upstream.port;
    const options = parseOptions(
      ['--listen', '127.0.0.1:0', '--stats', '127.0.0.1:0', '--upstream', `127.0.0.1:${upstream.port}`],
      SIDECAR_OPTIONS,
      {},
    );
    running = await startSidecar({ ...options, 'token-file': token }, logger);
    cleanups.push(() => running.stop(0));
  });

  const post = async (path: string, auth = TOKEN) => {
    const res = await fetch(`http://127.0.0.1:${running.stats.port}${path}`, {
      method: 'POST',
      headers: auth ? { authorization: `Bearer ${auth}` } : {},
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const get = async (path: string) =>
    (await (await fetch(`http://127.0.0.1:${running.stats.port}${path}`)).json()) as Record<string, unknown>;

  test('a bad address, a second one or another parameter: 400 with the reason, and nothing changes', async () => {
    const refusals: [string, string][] = [
      ['/fence?handoff=activator:1234', 'handoff "activator:1234": "activator" is not an IPv4 address'],
      ['/fence?handoff=10.0.0.7', 'handoff "10.0.0.7": must be <ip>:<port>'],
      ['/fence?handoff=', 'handoff "": must be <ip>:<port>'],
      ['/fence?handoff=10.0.0.7:1&handoff=10.0.0.8:1', 'handoff: give it once'],
      ['/fence?handof=10.0.0.7:1', 'unknown parameter "handof" (only handoff)'],
      [`/fence?handoff=127.0.0.1:${running.listen.port}`, 'it would connect to itself'],
      [`/fence?handoff=127.0.0.1:${upstreamPort}`, "buildkitd's address"],
    ];
    for (const [path, reason] of refusals) {
      const answer = await post(path);
      expect({ path, status: answer.status }).toEqual({ path, status: 400 });
      expect(answer.body['error']).toContain(reason);
    }
    expect(await get('/fence')).toMatchObject({ fenced: false, handoff: null });
    // the token is checked first: without it, a bad address is no business of the caller's
    expect((await post('/fence?handoff=nonsense', 'wrong')).status).toBe(401);
    // while fenced, a bad address changes nothing either
    await post('/fence?handoff=10.0.0.7:1234');
    expect((await post('/fence?handoff=10.0.0.7:0')).status).toBe(400);
    expect(await get('/fence')).toMatchObject({ fenced: true, handoff: '10.0.0.7:1234' });
  });

  test('recorded with the fence, shown in /fence and /stats; a retry keeps it, a new one replaces it, unfence clears it', async () => {
    const fenced = await post(`/fence?handoff=${encodeURIComponent('[fd00::7]:1234')}`);
    expect(fenced).toEqual({
      status: 200,
      body: expect.objectContaining({ fenced: true, clean: true, handoff: '[fd00::7]:1234' }),
    });
    expect(await get('/fence')).toMatchObject({ handoff: '[fd00::7]:1234' });
    expect(await get('/stats')).toMatchObject({ fenced: true, handoff: '[fd00::7]:1234', handedOff: 0 });
    expect((await post('/fence')).body).toMatchObject({ handoff: '[fd00::7]:1234' });
    expect((await post('/fence?handoff=10.0.0.8:1')).body).toMatchObject({
      fenced: true,
      handoff: '10.0.0.8:1',
    });
    expect((await post('/unfence')).body).toMatchObject({ fenced: false, handoff: null });
    expect(await get('/stats')).toMatchObject({ fenced: false, handoff: null });
  });
});

/** The real sidecar process in front of a tagged buildkitd stand-in, fenced with `handoff` (or not). */
async function stoppingSidecar(engine: string, flags: string[], handoffTo?: { host: string; port: number }) {
  const buildkitd = await taggedEcho('buildkitd');
  const child: SidecarProcess = startSidecarProcess([
    '--engine',
    engine,
    '--listen',
    '127.0.0.1:0',
    '--stats',
    '127.0.0.1:0',
    '--upstream',
    `127.0.0.1:${buildkitd.port}`,
    '--token-file',
    token,
    ...flags,
  ]);
  const serving = await child.waitFor('sidecar serving');
  const listen = (serving['listen'] as { port: number }).port;
  const stats = (serving['stats'] as { port: number }).port;
  const control = await rawHttp(stats);
  if (handoffTo) {
    const at = handoffTo.host.includes(':') ? `[${handoffTo.host}]` : handoffTo.host;
    const [fenced] = await control.send({
      method: 'POST',
      path: `/fence?handoff=${encodeURIComponent(`${at}:${handoffTo.port}`)}`,
      token: TOKEN,
    });
    expect(fenced!.status).toBe(200);
  }
  return { child, listen, control };
}

describe.each(['native', 'js'])('SIGTERM, %s engine', (engine) => {
  test('with a handoff address: new clients go there while they keep coming, then the listener closes', async () => {
    const activator = await taggedEcho('activator');
    const { child, listen, control } = await stoppingSidecar(engine, ['--handoff-linger', '1'], activator);
    const early = await openExchange(listen, 'early');
    expect(early.first).toBe('buildkitd:early');

    const signalled = Date.now();
    child.proc.kill('SIGTERM');
    await child.waitFor('handing off: new connections go to the handoff address while they keep arriving');
    // clients keep coming, each well within the linger of the one before: all go to the activator
    const late: string[] = [];
    for (let i = 0; i < 4; i++) {
      late.push(await exchange(listen, `late ${i}`));
      await sleep(400);
    }
    expect(late).toEqual([0, 1, 2, 3].map((i) => `activator:late ${i}`));
    // the connection from before keeps its buildkitd
    expect(await early.again('still there')).toBe('buildkitd:still there');
    const [during] = await control.send({ path: '/stats' });
    expect(during!.json()).toMatchObject({ stopping: true, handedOff: 4, opened: 5, backlog: 0 });
    const [ready] = await control.send({ path: '/readyz' });
    expect(ready!.status).toBe(503);

    // a second after the last arrival the listener closes: new clients are refused
    await child.waitFor('stopped accepting; waiting for open connections');
    const lingered = Date.now() - signalled;
    // the last arrival came after three gaps of 400 ms; the linger is polled every 50 ms
    expect(lingered).toBeGreaterThanOrEqual(3 * 400 + 1000 - 100);
    expect(await exchange(listen, 'too late')).toBe('ECONNREFUSED');
    expect(child.lines.find((l) => l['msg'] === 'handoff linger over')).toMatchObject({ handedOff: 4 });

    early.socket.end();
    expect(await child.exited).toBe(0);
    expect(child.lines.find((l) => l['msg'] === 'sidecar stopped')).toMatchObject({
      drained: true,
      handedOff: 4,
      opened: 5,
      upstreamFailures: 0,
    });
  });

  test('the linger ends with --grace, however many clients keep coming', async () => {
    const activator = await taggedEcho('activator');
    const { child, listen } = await stoppingSidecar(
      engine,
      ['--handoff-linger', '30', '--grace', '1.5'],
      activator,
    );
    const signalled = Date.now();
    child.proc.kill('SIGTERM');
    await child.waitFor('handing off: new connections go to the handoff address while they keep arriving');
    const outcomes: string[] = [];
    while (outcomes.at(-1) !== 'ECONNREFUSED' && Date.now() - signalled < 10_000) {
      outcomes.push(await exchange(listen, 'x'));
      await sleep(100);
    }
    expect(outcomes.at(-1)).toBe('ECONNREFUSED');
    expect(outcomes.slice(0, -1).every((o) => o === 'activator:x')).toBe(true);
    expect(Date.now() - signalled).toBeLessThan(4000);
    expect(await child.exited).toBe(0);
  });

  test('an IPv6 handoff address behind an IPv4 buildkitd', async () => {
    const activator = await taggedEcho('activator6', '::1');
    const { child, listen } = await stoppingSidecar(engine, ['--handoff-linger', '0.5'], activator);
    child.proc.kill('SIGTERM');
    await child.waitFor('handing off: new connections go to the handoff address while they keep arriving');
    expect(await exchange(listen, 'over v6')).toBe('activator6:over v6');
    expect(await child.exited).toBe(0);
    expect(child.lines.find((l) => l['msg'] === 'sidecar stopped')).toMatchObject({ handedOff: 1 });
  });

  test('unfenced (the handoff address cleared): the listener closes at once and new clients are refused', async () => {
    const activator = await taggedEcho('activator');
    const { child, listen, control } = await stoppingSidecar(engine, ['--handoff-linger', '30'], activator);
    const [unfenced] = await control.send({ method: 'POST', path: '/unfence', token: TOKEN });
    expect(unfenced!.json()).toMatchObject({ fenced: false, handoff: null });
    const signalled = Date.now();
    child.proc.kill('SIGTERM');
    await child.waitFor('stopped accepting; waiting for open connections');
    expect(Date.now() - signalled).toBeLessThan(2000);
    expect(await exchange(listen, 'late')).toBe('ECONNREFUSED');
    expect(
      child.lines.some(
        (l) => l['msg'] === 'handing off: new connections go to the handoff address while they keep arriving',
      ),
    ).toBe(false);
    expect(await child.exited).toBe(0);
  });
});

/** A connection with one exchange done, and a way to talk on it again. */
async function openExchange(port: number, text: string) {
  const socket = await connect(port);
  const reply = () =>
    new Promise<string>((resolve) => socket.once('data', (c: Buffer) => resolve(c.toString())));
  const first = reply();
  socket.write(text);
  return {
    socket,
    first: await first,
    again: (more: string) => {
      const next = reply();
      socket.write(more);
      return next;
    },
  };
}
