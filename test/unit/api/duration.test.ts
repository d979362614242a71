// The platform's one duration syntax (api/duration.ts): Go-style for the API, with days, weeks and
// years where certificate settings allow them.
import { CALENDAR_UNITS, DAY_MS, formatDuration, parseDuration } from '../../../api/duration.ts';
import { DURATION_PATTERN } from '../../../api/schema.ts';

describe('parseDuration', () => {
  test.each([
    ['90s', 90_000],
    ['5m', 300_000],
    ['1h30m', 5_400_000],
    ['1.5h', 5_400_000],
    ['250ms', 250],
    ['1m500ms', 60_500],
  ])('Go-style %s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  test.each(['', '5', 'm', '5 m', '5x', '-5m', '1d', '3650d', '2w', '1y', 'h1'])(
    '%j is not a Go-style duration',
    (text) => {
      expect(parseDuration(text)).toBeUndefined();
    },
  );

  test('the CRD schema pattern accepts exactly what the parser accepts with Go units', () => {
    const pattern = new RegExp(DURATION_PATTERN);
    for (const text of ['90s', '1h30m', '1.5h', '250ms', '', '1d', '5 m', 'm5']) {
      expect(pattern.test(text)).toBe(parseDuration(text) !== undefined);
    }
  });

  test.each([
    ['3650d', 3650 * DAY_MS],
    ['2w', 14 * DAY_MS],
    ['1y', 365 * DAY_MS],
    ['1d12h', 1.5 * DAY_MS],
    [' 90d ', 90 * DAY_MS],
  ])('with calendar units %j is %d ms', (text, ms) => {
    expect(parseDuration(text, CALENDAR_UNITS)).toBe(ms);
  });
});

describe('formatDuration', () => {
  test.each([
    [300_000, '5m'],
    [5_400_000, '90m'],
    [7_200_000, '2h'],
    [90_000, '90s'],
    [1500, '1500ms'],
    [2 * DAY_MS, '48h'],
  ])('%d ms is %s in Go units', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  test.each([
    [90 * DAY_MS, '90d'],
    [14 * DAY_MS, '14d'],
    [365 * DAY_MS, '365d'],
    [12 * 3_600_000, '12h'],
  ])('%d ms is %s with calendar units (days, never weeks or years)', (ms, text) => {
    expect(formatDuration(ms, CALENDAR_UNITS)).toBe(text);
  });

  test('formatting then parsing gives the same milliseconds', () => {
    for (const ms of [1, 999, 1000, 61_000, 3_600_000, 90 * DAY_MS + 1000]) {
      expect(parseDuration(formatDuration(ms, CALENDAR_UNITS), CALENDAR_UNITS)).toBe(ms);
      expect(parseDuration(formatDuration(ms))).toBe(ms);
    }
  });
});
