// Node's own TCP handles (the libuv wrappers under net.Socket), typed, for the sidecar's data path.
//
// Why not net.Socket: profiling connection churn through the net.Socket proxy (test/bench/sidecar.ts)
// showed most of each connection's cost in the stream machinery around the socket (two Socket
// objects with their Readable/Writable state, listeners, nextTicks, timers) and in the garbage it
// leaves, not in the system calls. A proxy needs none of that: it reads, writes what it read,
// half-closes and closes. These handles are what net.Socket itself drives; they are reached
// through process.binding, which Node keeps for exactly these modules (tcp_wrap, stream_wrap, uv).
//
// Everything here is checked once at load: if a future Node changes a piece, the sidecar refuses
// to start with a message naming it, instead of misbehaving on the data path. package.json pins
// Node 24 (engines), and the sidecar's unit tests exercise every call below on real sockets.
import { getSystemErrorName, types } from 'node:util';

export interface WriteRequest {
  oncomplete: (status: number) => void;
  /** set while an asynchronous write is pending: keeps the written bytes alive */
  buffer?: Uint8Array | undefined;
}

export interface ShutdownRequest {
  oncomplete: (status: number) => void;
}

export interface ConnectRequest {
  oncomplete: (status: number) => void;
}

export interface SocketName {
  address?: string;
  port?: number;
  family?: string;
}

/** A connected (or connecting) TCP socket handle. Methods return 0 or a negative errno. */
export interface TcpHandle {
  /**
   * Called for every read; the byte count (or a negative errno, or UV_EOF) is in
   * lastReadResult(). With a user buffer (useUserBuffer) the bytes are at its start, and a buffer
   * returned here is where the next read goes.
   */
  onread: (() => Uint8Array | undefined) | null;
  readStart(): number;
  readStop(): number;
  writeBuffer(request: WriteRequest, data: Uint8Array): number;
  shutdown(request: ShutdownRequest): number;
  connect(request: ConnectRequest, address: string, port: number): number;
  connect6(request: ConnectRequest, address: string, port: number): number;
  /** reads go into `buffer` instead of a fresh allocation per read (see onread) */
  useUserBuffer(buffer: Uint8Array): void;
  setNoDelay(enable: boolean): number;
  setKeepAlive(enable: boolean, initialDelaySeconds: number): number;
  getpeername(out: SocketName): number;
  /** closes with an RST (SO_LINGER 0); fails with EINVAL once a shutdown was requested */
  reset(callback: () => void): number;
  close(callback: () => void): void;
  readonly writeQueueSize: number;
}

/** A listening TCP handle. */
export interface TcpServerHandle {
  onconnection: ((status: number, client?: TcpHandle) => void) | null;
  bind(address: string, port: number): number;
  bind6(address: string, port: number, flags: number): number;
  listen(backlog: number): number;
  setNoDelay(enable: boolean): number;
  setKeepAlive(enable: boolean, initialDelaySeconds: number): number;
  getsockname(out: SocketName): number;
  close(callback: () => void): void;
}

interface TcpWrapBinding {
  TCP: new (type: number) => TcpHandle & TcpServerHandle;
  TCPConnectWrap: new () => ConnectRequest;
  constants: { SOCKET: number; SERVER: number };
}

interface StreamWrapBinding {
  WriteWrap: new () => WriteRequest;
  ShutdownWrap: new () => ShutdownRequest;
  streamBaseState: Int32Array;
  kReadBytesOrError: number;
  kLastWriteWasAsync: number;
}

const SOCKET_METHODS = [
  'readStart',
  'readStop',
  'writeBuffer',
  'shutdown',
  'connect',
  'connect6',
  'useUserBuffer',
  'setNoDelay',
  'setKeepAlive',
  'getpeername',
  'reset',
  'close',
  'bind',
  'bind6',
  'listen',
  'getsockname',
] as const;

function load(): { tcp: TcpWrapBinding; stream: StreamWrapBinding; eof: number } {
  const fail = (what: string) =>
    new Error(
      `this Node.js (${process.version}) lacks ${what}, which the sidecar's data path uses; run it on Node 24 (package.json engines)`,
    );
  const binding = (name: string): Record<string, unknown> => {
    try {
      return (process as unknown as { binding(name: string): Record<string, unknown> }).binding(name);
    } catch {
      throw fail(`process.binding('${name}')`);
    }
  };
  const tcp = binding('tcp_wrap') as unknown as TcpWrapBinding;
  const stream = binding('stream_wrap') as unknown as StreamWrapBinding;
  const eof = binding('uv')['UV_EOF'];
  if (typeof tcp.TCP !== 'function' || typeof tcp.TCPConnectWrap !== 'function' || !tcp.constants) {
    throw fail('tcp_wrap.TCP');
  }
  if (typeof stream.WriteWrap !== 'function' || typeof stream.ShutdownWrap !== 'function') {
    throw fail('stream_wrap.WriteWrap');
  }
  // not instanceof: the binding's Int32Array may come from another realm (jest's vm contexts)
  if (!types.isInt32Array(stream.streamBaseState)) throw fail('stream_wrap.streamBaseState');
  for (const key of ['kReadBytesOrError', 'kLastWriteWasAsync'] as const) {
    if (typeof stream[key] !== 'number') throw fail(`stream_wrap.${key}`);
  }
  if (typeof eof !== 'number') throw fail('uv.UV_EOF');
  const probe = new tcp.TCP(tcp.constants.SOCKET);
  for (const method of SOCKET_METHODS) {
    if (typeof (probe as unknown as Record<string, unknown>)[method] !== 'function') {
      throw fail(`TCP.prototype.${method}`);
    }
  }
  probe.close(() => undefined);
  return { tcp, stream, eof };
}

const { tcp, stream, eof } = load();
const state = stream.streamBaseState;
const READ_RESULT = stream.kReadBytesOrError;
const WRITE_WAS_ASYNC = stream.kLastWriteWasAsync;

/** The read result libuv reports at end of stream. */
export const UV_EOF = eof;

export const newSocketHandle = (): TcpHandle => new tcp.TCP(tcp.constants.SOCKET);
export const newServerHandle = (): TcpServerHandle => new tcp.TCP(tcp.constants.SERVER);
export const newWriteRequest = (): WriteRequest => new stream.WriteWrap();
export const newShutdownRequest = (): ShutdownRequest => new stream.ShutdownWrap();
export const newConnectRequest = (): ConnectRequest => new tcp.TCPConnectWrap();

/** Bytes read (> 0), 0 for nothing, UV_EOF, or a negative errno; valid inside onread only. */
export const lastReadResult = (): number => state[READ_RESULT]!;
/** Whether the writeBuffer call just made is still pending (it then holds the data). */
export const lastWriteWasAsync = (): boolean => state[WRITE_WAS_ASYNC] !== 0;

/** ECONNRESET for -104, and so on; the number itself when it has no name. */
export function errorName(code: number): string {
  try {
    return getSystemErrorName(code);
  } catch {
    return String(code);
  }
}

/** An Error with the errno's name as its code, as net would throw it. */
export function errnoError(code: number, syscall: string, address?: string): NodeJS.ErrnoException {
  const name = errorName(code);
  const error: NodeJS.ErrnoException = new Error(`${syscall} ${name}${address ? ` ${address}` : ''}`);
  error.code = name;
  error.errno = code;
  error.syscall = syscall;
  return error;
}
