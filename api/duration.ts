// The one duration syntax of the platform: Go-style ("90s", "5m", "1h30m", "1.5h"), as the
// seatgeek API spells spec.autoscaling.idleTimeout. Certificate lifetimes are naturally counted in
// days, so callers may also allow days, weeks and years ("3650d").

const UNIT_MS = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
  // 365 days, as cert-controller and `openssl -days` count a year; a leap day never matters here.
  y: 365 * 86_400_000,
} as const;

export type DurationUnit = keyof typeof UNIT_MS;

/** Go's units: what the CRD schema's pattern accepts. */
export const GO_UNITS: readonly DurationUnit[] = ['ms', 's', 'm', 'h'];
/** Go's units plus days, weeks and years, for certificate settings. */
export const CALENDAR_UNITS: readonly DurationUnit[] = [...GO_UNITS, 'd', 'w', 'y'];

export const DAY_MS = UNIT_MS.d;

const NUMBER = '[0-9]+(?:\\.[0-9]+)?';
const grammar = (units: readonly DurationUnit[]) => {
  // longest first, so "ms" is not read as "m" followed by garbage
  const alternatives = [...units].sort((a, b) => b.length - a.length).join('|');
  return {
    whole: new RegExp(`^(?:${NUMBER}(?:${alternatives}))+$`),
    part: new RegExp(`(${NUMBER})(${alternatives})`, 'g'),
  };
};
const GRAMMARS = new Map<readonly DurationUnit[], ReturnType<typeof grammar>>();

/** Milliseconds, or undefined when `text` (surrounding blanks aside) is not a duration in `units`. */
export function parseDuration(text: string, units: readonly DurationUnit[] = GO_UNITS): number | undefined {
  let g = GRAMMARS.get(units);
  if (!g) GRAMMARS.set(units, (g = grammar(units)));
  const trimmed = text.trim();
  if (!g.whole.test(trimmed)) return undefined;
  let total = 0;
  for (const [, amount, unit] of trimmed.matchAll(g.part))
    total += Number(amount) * UNIT_MS[unit as DurationUnit];
  return total;
}

/** `ms` in the largest whole unit of `units` that divides it exactly: 90d, 12h, 5m, 1500ms. */
export function formatDuration(ms: number, units: readonly DurationUnit[] = GO_UNITS): string {
  const bySize = [...units].sort((a, b) => UNIT_MS[b] - UNIT_MS[a]);
  for (const unit of bySize) {
    if (unit === 'w' || unit === 'y') continue; // "52w" reads worse than "364d"
    const size = UNIT_MS[unit];
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
