// Certificate settings take durations in days as well ("3650d"): the platform's one parser
// (api/duration.ts) with calendar units, and an error that names the setting.
import { CALENDAR_UNITS, formatDuration, parseDuration } from '../api/duration.ts';
import { CertificateError } from './parse.ts';

export { DAY_MS } from '../api/duration.ts';

/** Milliseconds, or undefined when `text` is not a duration such as `90d`, `12h`, `1h30m`, `500ms`. */
export const parseCertDuration = (text: string): number | undefined => parseDuration(text, CALENDAR_UNITS);

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
export const formatCertDuration = (ms: number): string => formatDuration(ms, CALENDAR_UNITS);
