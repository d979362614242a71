// GET /readyz?check=grpc: asks buildkitd itself whether it serves, with the standard gRPC health
// check (grpc.health.v1.Health/Check, empty service name: the server as a whole), which buildkitd
// answers since moby/buildkit#4145. The activator uses it to confirm that a woken buildkitd really
// serves before it splices the clients it holds; the plain /readyz only shows that buildkitd's
// port accepts a TCP connection, which it may do before it answers calls.
//
// The call goes from the stats port straight to buildkitd's private address, never through the
// proxy, so it is no client activity: no counter moves. It is one HTTP/2 request over cleartext
// (h2c with prior knowledge, as gRPC without TLS does) made with node:http2, with the one-field
// protobuf messages written and read by hand (the sidecar carries no gRPC library):
//   request  HealthCheckRequest {}                  -> gRPC frame 00 00000000 (an empty message)
//   response HealthCheckResponse { status = 1: enum } -> field 1, varint
// Every failure is an answer with the reason, never an exception.
import http2 from 'node:http2';

import type { HostPort } from '../flags/options.ts';
import { formatHostPort } from './handoff.ts';

export const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';

/** grpc.health.v1.HealthCheckResponse.ServingStatus */
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

/** gRPC status codes by number, for the reason text. */
const GRPC_CODES = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
];

export type HealthResult = { serving: true } | { serving: false; reason: string };

/** An error as a reason: its code (ECONNREFUSED), with the message when the code alone says little. */
function describe(error: NodeJS.ErrnoException): string {
  if (!error.code) return error.message;
  return error.code.startsWith('ERR_') ? `${error.code} (${error.message})` : error.code;
}

/** One varint at `offset`: its value and the offset after it; undefined when truncated or too long. */
function varint(bytes: Buffer, offset: number): { value: number; next: number } | undefined {
  let value = 0;
  for (let shift = 0, i = offset; i < bytes.length && shift < 64; shift += 7, i++) {
    const byte = bytes[i]!;
    value += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return { value, next: i + 1 };
  }
  return undefined;
}

/**
 * The `status` field (1) of a HealthCheckResponse message (0, UNKNOWN, when absent, as proto3
 * leaves out a default); other fields are skipped. A string saying what is wrong when the bytes
 * are not a valid message.
 */
export function decodeHealthResponse(message: Buffer): number | string {
  let status = 0;
  for (let offset = 0; offset < message.length;) {
    const key = varint(message, offset);
    if (!key) return 'a truncated field key';
    const field = Math.floor(key.value / 8);
    const wire = key.value % 8;
    offset = key.next;
    if (wire === 0) {
      const value = varint(message, offset);
      if (!value) return 'a truncated varint';
      if (field === 1) status = value.value;
      offset = value.next;
    } else if (wire === 1 || wire === 5) {
      offset += wire === 1 ? 8 : 4;
    } else if (wire === 2) {
      const length = varint(message, offset);
      if (!length) return 'a truncated length';
      offset = length.next + length.value;
    } else {
      return `wire type ${wire}`;
    }
    if (offset > message.length) return 'a field past the end';
  }
  return status;
}

/** The one message of a gRPC response body (a 5-byte prefix: compressed flag, length). */
export function unframe(body: Buffer): Buffer | string {
  if (body.length < 5) return `a response body of ${body.length} bytes, shorter than a gRPC frame`;
  if (body[0] !== 0) return 'a compressed response (none was offered)';
  const length = body.readUInt32BE(1);
  if (body.length !== 5 + length) return `a frame of ${length} bytes in a body of ${body.length}`;
  return body.subarray(5);
}

function grpcStatusText(status: string, message: string | undefined): string {
  const name = GRPC_CODES[Number(status)] ?? 'unknown code';
  let detail = '';
  if (message) {
    try {
      detail = `: ${decodeURIComponent(message)}`;
    } catch {
      detail = `: ${message}`;
    }
  }
  return `grpc-status ${status} (${name})${detail}`;
}

const header = (value: string | string[] | undefined): string | undefined =>
  Array.isArray(value) ? value[0] : value;

/** The health check of the gRPC server at `target`, within timeoutMs (connect included). */
export function grpcHealthCheck(target: HostPort, timeoutMs: number): Promise<HealthResult> {
  return new Promise((resolve) => {
    let settled = false;
    const session = http2.connect(`http://${formatHostPort(target)}`);
    const finish = (result: HealthResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      resolve(result);
    };
    const fail = (reason: string) => finish({ serving: false, reason });
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    session.on('error', (error: NodeJS.ErrnoException) => fail(`connection: ${describe(error)}`));
    session.on('close', () => fail('the connection closed before an answer'));

    const request = session.request({
      ':method': 'POST',
      ':path': HEALTH_CHECK_PATH,
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    let headers: (http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader) | undefined;
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    request.on('response', (h) => (headers = h));
    request.on('trailers', (t) => (trailers = t));
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('error', (error: NodeJS.ErrnoException) => {
      // a stream cancelled because the connection failed carries the connection's error
      const cause = error.cause as NodeJS.ErrnoException | undefined;
      if (error.code === 'ERR_HTTP2_STREAM_CANCEL' && cause) fail(`connection: ${describe(cause)}`);
      else fail(`request: ${describe(error)}`);
    });
    request.on('end', () => {
      if (!headers) return fail('no response headers');
      const status = headers[':status'];
      if (status !== 200) return fail(`HTTP status ${status}`);
      const type = header(headers['content-type']) ?? '';
      if (!type.startsWith('application/grpc')) {
        return fail(`not a gRPC answer (content-type ${JSON.stringify(type)})`);
      }
      // a gRPC error comes as trailers, or in the headers alone ("Trailers-Only")
      const from = trailers?.['grpc-status'] !== undefined ? trailers : headers;
      const grpcStatus = header(from['grpc-status']);
      if (grpcStatus === undefined) return fail('no grpc-status in the answer');
      if (grpcStatus !== '0') return fail(grpcStatusText(grpcStatus, header(from['grpc-message'])));
      const message = unframe(Buffer.concat(chunks));
      if (typeof message === 'string') return fail(`not a health answer: ${message}`);
      const serving = decodeHealthResponse(message);
      if (typeof serving === 'string') return fail(`not a health answer: ${serving}`);
      if (serving === 1) return finish({ serving: true });
      fail(`buildkitd reports ${SERVING_STATUS[serving] ?? `status ${serving}`}`);
    });
    request.end(Buffer.alloc(5));
  });
}
