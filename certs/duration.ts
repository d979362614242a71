// Durations for certificate settings. Go-style like webhook/duration.ts, plus days, weeks and years,
// because certificate lifetimes are naturally counted in days ("3650d") while tests need seconds.
import { CertificateError } from './parse.ts';

const MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
  // 365 days, as cert-controller and `openssl -days` count a year; a leap day never matters here.
  y: 365 * 86_400_000,
};
const DURATION = /^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d|w|y))+$/;
const PART = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w|y)/g;
export const DAY_MS = MS['d']!;

/** Milliseconds, or undefined when `text` is not a duration such as `90d`, `12h`, `1h30m`, `500ms`. */
export function parseCertDuration(text: string): number | undefined {
  const trimmed = text.trim();
  if (!DURATION.test(trimmed)) return undefined;
  let total = 0;
  for (const [, amount, unit] of trimmed.matchAll(PART)) total += Number(amount) * MS[unit!]!;
  return total;
}

/** Like parseCertDuration, but throws a CertificateError naming `what` unless the value is positive. */
export function requireDuration(what: string, text: string): number {
  const ms = parseCertDuration(text);
  if (ms === undefined || ms <= 0) {
    throw new CertificateError(
      `${what} ${JSON.stringify(text)}: must be a positive duration such as 3650d, 90d, 12h, 30s or 1h30m`,
    );
  }
  return ms;
}

/** The largest whole unit that divides `ms` exactly: 90d, 12h, 1500ms. */
export function formatCertDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = MS[unit]!;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
