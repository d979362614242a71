// The one place that reads client-node's errors. ApiException carries the HTTP status in `.code`
// and the response body as a string; Watch errors carry `.statusCode`; network failures carry a
// Node error code, sometimes only on `.cause`.

/** HTTP status of a client-node error, or undefined when the API server never answered. */
export function errorStatus(error: unknown): number | undefined {
  const e = error as { statusCode?: unknown; code?: unknown } | null | undefined;
  const status = e?.statusCode ?? e?.code;
  return typeof status === 'number' ? status : undefined;
}

export const isNotFound = (error: unknown): boolean => errorStatus(error) === 404;
export const isConflict = (error: unknown): boolean => errorStatus(error) === 409;
export const isForbidden = (error: unknown): boolean => errorStatus(error) === 403;

/** A short, low-cardinality reason for metrics: http_503, ECONNREFUSED, TimeoutError, ... */
export function errorReason(error: unknown): string {
  const status = errorStatus(error);
  if (status !== undefined) return `http_${status}`;
  const e = error as { code?: unknown; name?: unknown; cause?: { code?: unknown } } | null | undefined;
  const code = e?.code ?? e?.cause?.code;
  if (typeof code === 'string' && /^[A-Z_]+$/.test(code)) return code;
  return typeof e?.name === 'string' ? e.name : 'error';
}

/** The error's message with its cause's, for logs; also for the plain `{ message }` objects node-forge throws. */
export function errorMessage(error: unknown): string {
  const e = error as { message?: unknown; cause?: { message?: unknown } } | null | undefined;
  const message = typeof e?.message === 'string' ? e.message : String(error);
  const cause = e?.cause?.message;
  // errors that already quote their cause (CertificateError does) need it only once
  return typeof cause === 'string' && !message.includes(cause) ? `${message}: ${cause}` : message;
}

/** What the API server said, in one line: client-node puts the whole response body in the message. */
export function apiErrorText(error: unknown): string {
  const body = (error as { body?: unknown } | null | undefined)?.body;
  if (typeof body === 'string') {
    try {
      const message = (JSON.parse(body) as { message?: unknown }).message;
      if (typeof message === 'string') return message;
    } catch {
      // not JSON; fall through to the message
    }
  }
  return (error instanceof Error ? error.message : String(error)).split('\n')[0]!;
}
