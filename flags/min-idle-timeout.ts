// The --min-idle-timeout flag, shared by the webhook (templates' spec.autoscaling.idleTimeout)
// and the controller (annotated workloads' idle-timeout annotation), so both read it alike.
import { parseDuration } from '../api/duration.ts';
import { UsageError } from './errors.ts';

/** The longest idle timeout anything may ask for (and so the highest floor). */
export const IDLE_TIMEOUT_MAX_MS = 24 * 3_600_000;

export function parseMinIdleTimeout(text: string): number {
  const ms = parseDuration(text);
  if (ms === undefined || ms < 1000 || ms > IDLE_TIMEOUT_MAX_MS) {
    throw new UsageError(
      `--min-idle-timeout ${JSON.stringify(text)}: must be a duration from 1s to 24h, e.g. 30s or 2m`,
    );
  }
  return ms;
}
