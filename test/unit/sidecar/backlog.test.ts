// Clients in the listen backlog: connected as far as they can tell (their connect returned), not
// accepted by the proxy yet. The sidecar reports them as `backlog` (/stats, /fence, /drained, a
// metric) and treats them like open connections: no clean fence, not drained. The count comes from
// /proc/net/tcp{,6} (sidecar/listen-backlog.ts), read here against real listeners, and through the
// real sidecar process, stopped (SIGSTOP) so that clients stay queued while a request waits for it.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { jest } from '@jest/globals';

import {
  addressBytes,
  backlogFromTable,
  backlogReader,
  procLocalAddress,
} from '../../../sidecar/listen-backlog.ts';
import { cleanups, runCleanups, startSidecarToEcho } from '../../support/sidecar.ts';
import { exchange, rawHttp, stopProcess, tokenFile } from './helpers.ts';

jest.setTimeout(30_000);
afterEach(runCleanups);

const TOKEN = 'backlog-token';
const token = tokenFile(TOKEN);

describe('the /proc reading', () => {
  test('addresses as the kernel prints them (words in machine order, port in hex)', () => {
    expect(addressBytes('10.1.2.3')).toEqual([10, 1, 2, 3]);
    expect(addressBytes('::1')).toEqual([...Array<number>(15).fill(0), 1]);
    expect(addressBytes('fd00:1::2:3')).toEqual([0xfd, 0, 0, 1, ...Array<number>(8).fill(0), 0, 2, 0, 3]);
    expect(addressBytes('::ffff:127.0.0.1')).toEqual([
      ...Array<number>(10).fill(0),
      0xff,
      0xff,
      127,
      0,
      0,
      1,
    ]);
    expect(addressBytes('localhost')).toBeUndefined();
    expect(procLocalAddress('127.0.0.1', 8080, 'LE')).toBe('0100007F:1F90');
    expect(procLocalAddress('127.0.0.1', 8080, 'BE')).toBe('7F000001:1F90');
    expect(procLocalAddress('0.0.0.0', 1234, 'LE')).toBe('00000000:04D2');
    expect(procLocalAddress('::1', 443, 'LE')).toBe('00000000000000000000000001000000:01BB');
    expect(procLocalAddress('::ffff:10.0.0.7', 1, 'LE')).toBe('0000000000000000FFFF00000700000A:0001');
  });

  test('the table: the listener by its address, the queue length in rx_queue; listeners come first', () => {
    const table = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:A361 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0',
      '   1: 00000000:04D2 00000000:0000 0A 00000000:00000011 00:00000000 00000000  1000        0 2 1 0 100 0 0 10 0',
      '   2: 0100007F:04D2 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 20 4 30 10 -1',
    ].join('\n');
    expect(backlogFromTable(table, '00000000:04D2')).toEqual({ backlog: 17, pastListeners: true });
    expect(backlogFromTable(table, '0100007F:A361')).toEqual({ backlog: 0, pastListeners: true });
    // not among the listeners: the connected sockets after them are not looked at
    expect(backlogFromTable(table, '0100007F:9999')).toEqual({ pastListeners: true });
    expect(backlogFromTable(table.split('\n').slice(0, 2).join('\n'), '0100007F:9999')).toEqual({
      pastListeners: false,
    });
  });

  test.each(['127.0.0.1', '::1'])(
    'a real listener on %s that accepts nobody: its queue, as clients connect; 0 once it is gone',
    async (host) => {
      // a listener in a stopped process: the kernel completes the handshakes, nobody accepts
      const child = spawn(
        process.execPath,
        [
          '-e',
          `const s = require('net').createServer(); s.listen(0, ${JSON.stringify(host)}, () => console.log(s.address().port));`,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      cleanups.push(() => child.kill('SIGKILL'));
      const [line] = (await once(child.stdout, 'data')) as [Buffer];
      const port = Number(line.toString().trim());
      await stopProcess(child.pid!);
      const reader = backlogReader(host, port);
      cleanups.push(() => reader.close());
      expect(reader.unavailable).toBeUndefined();
      expect(reader.read()).toBe(0);
      for (let i = 1; i <= 3; i++) {
        const socket = net.connect({ host, port });
        socket.on('error', () => undefined);
        cleanups.push(() => socket.destroy());
        await once(socket, 'connect');
        expect(reader.read()).toBe(i);
      }
      child.kill('SIGKILL');
      await once(child, 'exit');
      expect(reader.read()).toBe(0);
    },
  );
});

describe('through the sidecar (js engine, stopped while clients connect)', () => {
  test('/fence, /drained, /stats and /metrics show the queued clients: not clean, broken, not drained', async () => {
    const { child, listen, stats } = await startSidecarToEcho(['--engine', 'js', '--token-file', token]);
    const control = await rawHttp(stats);
    const [fenced] = await control.send({ method: 'POST', path: '/fence', token: TOKEN });
    expect(fenced!.json()).toMatchObject({ fenced: true, clean: true, open: 0, backlog: 0 });

    // While the sidecar is stopped, the requests wait in its stats socket, and then three
    // clients connect and wait in its listen backlog. Once it continues it reads the requests
    // first (they were there first) and answers them before it accepts the clients.
    await stopProcess(child.proc.pid!);
    const answers = control.send(
      { path: '/fence' },
      { path: '/drained' },
      { path: '/stats' },
      { path: '/metrics' },
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    const clients = [0, 1, 2].map((i) => exchange(listen, `queued ${i}`));
    // their handshakes complete in the kernel
    await new Promise((resolve) => setTimeout(resolve, 100));
    process.kill(child.proc.pid!, 'SIGCONT');
    const [fence, drained, snapshot, metrics] = await answers;

    expect(fence!.json()).toMatchObject({
      fenced: true,
      fenceBroken: true,
      clean: false,
      open: 0,
      backlog: 3,
    });
    expect(drained!.status).toBe(503);
    expect(drained!.json()).toEqual({ open: 0, backlog: 3 });
    expect(snapshot!.json()).toMatchObject({ open: 0, opened: 0, backlog: 3 });
    expect(metrics!.body).toContain('\nbuildkit_fleet_sidecar_backlog_connections 3\n');
    const broken = await child.waitFor('client connected while fenced: fence broken');
    expect(broken).toMatchObject({ backlog: 3, opened: 0 });

    // and then they are served
    expect(await Promise.all(clients)).toEqual(['queued 0', 'queued 1', 'queued 2']);
    const [after] = await control.send({ path: '/fence' });
    expect(after!.json()).toMatchObject({ fenceBroken: true, clean: false, backlog: 0, opened: 3 });
  });
});
