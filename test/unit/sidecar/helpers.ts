// Helpers of the sidecar tests in this folder (beside test/support/sidecar.ts): a raw HTTP/1.1
// connection whose requests the test writes when it wants (so a request can wait in a stopped
// process's socket), a tagged echo server that says which upstream answered, a token file, and
// stopping and continuing a process.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { cleanups } from '../../support/sidecar.ts';

export interface HttpAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
  json(): Record<string, unknown>;
}

/**
 * One keep-alive HTTP/1.1 connection to 127.0.0.1:`port`, opened now. `send` writes requests
 * (pipelined when several) and resolves with their answers in order (chunked or with a
 * Content-Length).
 */
export async function rawHttp(port: number): Promise<{
  send(...requests: { method?: string; path: string; token?: string }[]): Promise<HttpAnswer[]>;
  close(): void;
}> {
  const socket = net.connect(port, '127.0.0.1');
  cleanups.push(() => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let buffered = Buffer.alloc(0);
  let wanted: { count: number; answers: HttpAnswer[]; resolve(a: HttpAnswer[]): void } | undefined;
  const parse = () => {
    while (wanted) {
      const end = buffered.indexOf('\r\n\r\n');
      if (end < 0) return;
      const [statusLine, ...lines] = buffered.subarray(0, end).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
      }
      let body: string;
      if (headers['transfer-encoding'] === 'chunked') {
        // chunks: <hex size>\r\n<data>\r\n ... 0\r\n\r\n
        const parts: Buffer[] = [];
        let at = end + 4;
        for (;;) {
          const eol = buffered.indexOf('\r\n', at);
          if (eol < 0) return;
          const size = parseInt(buffered.subarray(at, eol).toString('latin1'), 16);
          if (buffered.length < eol + 2 + size + 2) return;
          parts.push(buffered.subarray(eol + 2, eol + 2 + size));
          at = eol + 2 + size + 2;
          if (size === 0) break;
        }
        body = Buffer.concat(parts).toString('utf8');
        buffered = buffered.subarray(at);
      } else {
        const length = Number(headers['content-length']);
        if (!Number.isInteger(length)) throw new Error(`neither chunked nor a content-length: ${statusLine}`);
        if (buffered.length < end + 4 + length) return;
        body = buffered.subarray(end + 4, end + 4 + length).toString('utf8');
        buffered = buffered.subarray(end + 4 + length);
      }
      wanted.answers.push({
        status: Number(statusLine!.split(' ')[1]),
        headers,
        body,
        json: () => JSON.parse(body) as Record<string, unknown>,
      });
      if (wanted.answers.length === wanted.count) {
        const done = wanted;
        wanted = undefined;
        done.resolve(done.answers);
      }
    }
  };
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    parse();
  });
  return {
    send(...requests) {
      return new Promise((resolve, reject) => {
        wanted = { count: requests.length, answers: [], resolve };
        socket.once('error', reject);
        socket.write(
          requests
            .map(
              (r) =>
                `${r.method ?? 'GET'} ${r.path} HTTP/1.1\r\nHost: sidecar\r\n` +
                (r.token ? `Authorization: Bearer ${r.token}\r\n` : '') +
                'Content-Length: 0\r\n\r\n',
            )
            .join(''),
        );
      });
    },
    close: () => socket.destroy(),
  };
}

/** A server that answers every read with `<tag>:<what was read>`, so a client sees who served it. */
export async function taggedEcho(tag: string, host = '127.0.0.1'): Promise<{ host: string; port: number }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => socket.write(`${tag}:${chunk.toString()}`));
    socket.on('end', () => socket.end());
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  cleanups.push(() => {
    sockets.forEach((s) => s.destroy());
    return new Promise((resolve) => server.close(resolve));
  });
  return { host, port: (server.address() as AddressInfo).port };
}

/** What a client of 127.0.0.1:`port` gets for `text`: the answer, or an error code, or 'end'. */
export function exchange(port: number, text: string, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    cleanups.push(() => socket.destroy());
    let connected = false;
    socket.once('connect', () => {
      connected = true;
      socket.write(text);
    });
    socket.once('data', (chunk: Buffer) => {
      resolve(chunk.toString());
      socket.end();
    });
    socket.once('error', (e: NodeJS.ErrnoException) =>
      resolve(connected ? `${e.code ?? e.message} after connecting` : (e.code ?? e.message)),
    );
    socket.once('end', () => resolve('end'));
  });
}

/** A token file holding `token`, removed after the test file. */
export function tokenFile(token: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'bkf-sidecar-token-'));
  const file = join(dir, 'token');
  writeFileSync(file, `${token}\n`);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return file;
}

/** The state letter of a process (/proc/<pid>/stat): R, S, T (stopped), ... */
export function processState(pid: number): string {
  return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[0]!;
}

/** Stops the process (SIGSTOP) and resolves once it is stopped; continued after the test. */
export async function stopProcess(pid: number): Promise<void> {
  process.kill(pid, 'SIGSTOP');
  cleanups.push(() => {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone already
    }
  });
  for (let i = 0; processState(pid) !== 'T'; i++) {
    if (i > 400) throw new Error(`process ${pid} did not stop`);
    await sleep(5);
  }
}
