// How many clients wait in the proxy's listen backlog: connections whose TCP handshake the kernel
// has completed into the listening socket's accept queue, which the proxy has not accepted yet.
// Such a client is connected as far as it can tell (its connect() returned, it may be sending),
// yet no counter of the proxy has seen it. /stats, the fence and /drained report this number
// beside `open`, so a scale-down never takes "open: 0" for idleness while a client is queued.
//
// Where it comes from: for a socket in the LISTEN state the kernel prints the accept queue's
// current length as the rx_queue column of /proc/net/tcp and /proc/net/tcp6 (and its limit as
// tx_queue). The other source, getsockopt(TCP_INFO) on the listening descriptor (tcpi_unacked),
// needs the descriptor: the native engine has it, but the JavaScript engine runs on Node's public
// net APIs only and cannot reach its listener's descriptor. One reader for both engines gives
// both the same definition and the same tests. It costs one read of the first lines of the table:
// the kernel prints every listening socket before any connected one, so the read stops at the
// first line that is not LISTEN, however many connections are open.
//
// The table is opened once, when the proxy listens, and read again from offset 0 on each call, so
// the count can still be read when the process has no descriptor left, which is exactly when the
// native engine holds new clients in the backlog (docs/sidecar.md, at the file descriptor limit).
import { closeSync, openSync, readSync } from 'node:fs';
import net from 'node:net';
import { endianness } from 'node:os';

/** The state column of a listening socket in /proc/net/tcp{,6} (TCP_LISTEN is 10). */
const LISTEN_STATE = '0A';
const CHUNK_BYTES = 64 * 1024;

/** An IPv4 or IPv6 address as its 4 or 16 bytes, in network order; undefined when it is neither. */
export function addressBytes(host: string): number[] | undefined {
  if (net.isIPv4(host)) return host.split('.').map(Number);
  if (!net.isIPv6(host)) return undefined;
  let text = host.split('%', 1)[0]!;
  const tail: number[] = [];
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    tail.push(...v4[1]!.split('.').map(Number));
    text = `${text.slice(0, -v4[1]!.length)}0:0`;
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const groups = (part: string) => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const left = groups(head);
  const right = rest === undefined ? [] : groups(rest);
  const words = [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right];
  const bytes = words.flatMap((w) => [w >> 8, w & 0xff]);
  if (v4) bytes.splice(12, 4, ...tail);
  return bytes;
}

/**
 * The local_address column the kernel prints for `host:port`: the address as 32-bit words in the
 * machine's byte order (%08X each), a colon, the port (%04X).
 */
export function procLocalAddress(host: string, port: number, order = endianness()): string | undefined {
  const bytes = addressBytes(host);
  if (!bytes) return undefined;
  const buffer = Buffer.from(bytes);
  let words = '';
  for (let i = 0; i < buffer.length; i += 4) {
    const word = order === 'LE' ? buffer.readUInt32LE(i) : buffer.readUInt32BE(i);
    words += word.toString(16).toUpperCase().padStart(8, '0');
  }
  return `${words}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
}

/**
 * The accept-queue length of the listening socket on `local` in one /proc/net/tcp{,6} text, and
 * whether the text went past the listening sockets (so the rest of the table need not be read).
 */
export function backlogFromTable(text: string, local: string): { backlog?: number; pastListeners: boolean } {
  for (const line of text.split('\n')) {
    // "  sl  local_address rem_address   st tx_queue:rx_queue ..."
    const fields = line.trim().split(/\s+/);
    if (fields.length < 5 || !/^\d+:$/.test(fields[0]!)) continue;
    if (fields[3] !== LISTEN_STATE) return { pastListeners: true };
    if (fields[1] === local) {
      const rx = fields[4]!.split(':')[1];
      return { backlog: rx === undefined ? 0 : parseInt(rx, 16), pastListeners: true };
    }
  }
  return { pastListeners: false };
}

export interface BacklogReader {
  /** clients in the accept queue now; 0 once the listener is closed (or the table is unreadable) */
  read(): number;
  close(): void;
  /** why the count cannot be read (it is then always 0) */
  unavailable?: string;
}

/**
 * A reader for the listener on `host:port` (an IP address, as the proxy bound it). The table for
 * the address family is opened now; when it cannot be (not Linux), `read` always answers 0 and
 * `unavailable` says why.
 */
export function backlogReader(host: string, port: number): BacklogReader {
  const local = procLocalAddress(host, port);
  const table = net.isIPv6(host) ? '/proc/self/net/tcp6' : '/proc/self/net/tcp';
  let fd: number | undefined;
  let unavailable: string | undefined;
  if (local === undefined) unavailable = `${host} is not an IP address`;
  else {
    try {
      fd = openSync(table, 'r');
    } catch (error) {
      unavailable = `${table}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`;
    }
  }
  const buffer = Buffer.alloc(CHUNK_BYTES);
  return {
    ...(unavailable === undefined ? {} : { unavailable }),
    read() {
      if (fd === undefined || local === undefined) return 0;
      let position = 0;
      let carry = '';
      for (;;) {
        let n: number;
        try {
          n = readSync(fd, buffer, 0, buffer.length, position);
        } catch {
          return 0;
        }
        if (n === 0) return backlogFromTable(carry, local).backlog ?? 0;
        position += n;
        const text = carry + buffer.toString('latin1', 0, n);
        const cut = text.lastIndexOf('\n') + 1;
        const found = backlogFromTable(text.slice(0, cut), local);
        if (found.pastListeners) return found.backlog ?? 0;
        carry = text.slice(cut);
      }
    },
    close() {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
  };
}
