// Who may fence: a bearer token shared with the controller through a Secret mounted as a file.
//
// Why a token rather than mTLS: the stats port is plain HTTP so probes, wget in the preStop hook
// and Prometheus can use it without certificates, and the sidecar then needs no certificate
// lifecycle in every buildkitd pod. The token only guards /fence and /unfence, whose worst misuse
// is delaying a scale-down (fence) or allowing one that the controller then double-checks under
// its own fence (unfence). mTLS on a separate control port, with the controller's client
// certificate issued by the webhook CA, is the alternative if the token's exposure (it sits in
// the pod's Secret volume) becomes a concern.
//
// The file is re-read on every control request: they are rare (a few per scale-down), and a
// Secret update arrives as an atomic symlink swap that file watchers often miss.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';

export type AuthResult = { ok: true } | { ok: false; status: 401 | 503; reason: string };

/** The token in a file's text: surrounding whitespace (an editor's trailing newline) is not part of it. */
export function tokenFromFileText(text: string): string | undefined {
  const token = text.trim();
  return token === '' ? undefined : token;
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? '');
  return match?.[1];
}

/**
 * Constant-time comparison. Hashing first gives timingSafeEqual the equal lengths it needs and
 * keeps the expected token's length from leaking through an early length check.
 */
export function tokensMatch(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export async function readTokenFile(path: string): Promise<string> {
  const token = tokenFromFileText(await readFile(path, 'utf8'));
  if (token === undefined) throw new Error(`token file ${path} is empty`);
  return token;
}

export async function authorize(header: string | undefined, tokenFile: string): Promise<AuthResult> {
  const presented = bearerToken(header);
  if (presented === undefined) return { ok: false, status: 401, reason: 'no bearer token' };
  let expected: string;
  try {
    expected = await readTokenFile(tokenFile);
  } catch (error) {
    // a missing Secret must not open the control, nor be blamed on the caller
    return { ok: false, status: 503, reason: `token unavailable: ${(error as Error).message}` };
  }
  return tokensMatch(presented, expected)
    ? { ok: true }
    : { ok: false, status: 401, reason: 'token does not match' };
}
