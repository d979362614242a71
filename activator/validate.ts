// Input checks of the activator, pure: every problem of a target set or of the options is named in
// one error, before anything changes.
import net from 'node:net';

import { MAX_TIMER_MS } from '../flags/options.ts';
import type { ActivatorOptions, ActivatorTarget } from './types.ts';

/** One path segment of a key: no slash, no whitespace. */
const SEGMENT = '[^/\\s]+';
const KEY = new RegExp(`^${SEGMENT}/${SEGMENT}(/${SEGMENT})?$`);

export const DEFAULTS = {
  listenHost: '0.0.0.0',
  maxHeldPerTarget: 1000,
  maxHeldTotal: 10_000,
  holdTimeoutMs: 300_000,
  connectTimeoutMs: 10_000,
  drainTimeoutMs: 600_000,
} as const;

export type Settings = Required<Omit<ActivatorOptions, 'logger' | 'registry' | 'onWake'>>;

function isPort(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 65535;
}

/** The options with their defaults; throws naming every bad one. */
export function settingsOf(options: ActivatorOptions): Settings {
  const problems: string[] = [];
  const positive = (name: Exclude<keyof Settings, 'listenHost'>): number => {
    const value = options[name] ?? DEFAULTS[name];
    if (!Number.isSafeInteger(value) || value < 1)
      problems.push(`${name} must be a positive integer, not ${value}`);
    else if (name.endsWith('Ms') && value > MAX_TIMER_MS)
      problems.push(`${name} must be at most ${MAX_TIMER_MS} (about 24.8 days), not ${value}`);
    return value;
  };
  const settings: Settings = {
    listenHost: options.listenHost ?? DEFAULTS.listenHost,
    maxHeldPerTarget: positive('maxHeldPerTarget'),
    maxHeldTotal: positive('maxHeldTotal'),
    holdTimeoutMs: positive('holdTimeoutMs'),
    connectTimeoutMs: positive('connectTimeoutMs'),
    drainTimeoutMs: positive('drainTimeoutMs'),
  };
  if (!net.isIP(settings.listenHost))
    problems.push(`listenHost must be an IP address, not ${settings.listenHost}`);
  if (typeof options.onWake !== 'function') problems.push('onWake must be a function');
  if (problems.length) throw new Error(`activator options: ${problems.join('; ')}`);
  return settings;
}

/**
 * Checks a whole target set and returns a copy of it (so later changes to the caller's objects do
 * not reach the activator); throws naming every problem: keys, ports, modes, duplicates.
 */
export function validateTargets(input: readonly ActivatorTarget[]): ActivatorTarget[] {
  if (!Array.isArray(input)) throw new Error('activator targets: an array is needed');
  const problems: string[] = [];
  const byKey = new Map<string, number>();
  const byPort = new Map<number, string>();
  const targets: ActivatorTarget[] = [];
  input.forEach((target: ActivatorTarget | null | undefined, i) => {
    const key: unknown = target?.key;
    const name = typeof key === 'string' ? `target ${i} (${key})` : `target ${i}`;
    const problem = (text: string) => problems.push(`${name}: ${text}`);
    if (typeof target !== 'object' || target === null) return problem('not an object');
    if (typeof key !== 'string' || !KEY.test(key)) {
      problem(`key ${JSON.stringify(key)} is not namespace/name or namespace/kind/name`);
    } else if (byKey.has(key)) {
      problem(`key ${key} is also target ${byKey.get(key)}'s`);
    } else {
      byKey.set(key, i);
    }
    const port: unknown = target.port;
    if (!isPort(port)) {
      problem(`port ${String(port)} is not an integer in 1..65535`);
    } else if (byPort.has(port)) {
      problem(`port ${port} is also ${byPort.get(port)}'s`);
    } else {
      byPort.set(port, typeof key === 'string' ? key : `target ${i}`);
    }
    const mode: unknown = target.mode;
    const kind = (mode as { kind?: unknown } | null | undefined)?.kind;
    if (kind === 'hold') {
      targets.push({ key: key as string, port: port as number, mode: { kind: 'hold' } });
    } else if (kind === 'forward') {
      const upstream = (mode as { upstream?: { host?: unknown; port?: unknown } }).upstream;
      const host = upstream?.host;
      if (typeof host !== 'string' || !net.isIP(host)) {
        problem(`upstream host ${JSON.stringify(host)} is not an IP address`);
      }
      if (!isPort(upstream?.port))
        problem(`upstream port ${String(upstream?.port)} is not an integer in 1..65535`);
      targets.push({
        key: key as string,
        port: port as number,
        mode: { kind: 'forward', upstream: { host: host as string, port: upstream?.port as number } },
      });
    } else {
      problem(`mode ${JSON.stringify(mode)} is neither {kind: 'hold'} nor {kind: 'forward', upstream}`);
    }
  });
  if (problems.length) {
    throw new Error(`activator targets rejected, nothing changed: ${problems.join('; ')}`);
  }
  return targets;
}
