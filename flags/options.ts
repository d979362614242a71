// Command options defined once: each has a flag, an optional environment variable, a type that
// validates it and a description. Parsing, env fallback, errors and --help all come from the
// same definitions, so the help text cannot drift from what the code accepts.
import { parseArgs } from 'node:util';

import { UsageError } from './errors.ts';

export type OptionType =
  'string' | 'boolean' | 'port' | 'hostport' | 'seconds' | 'integer' | { oneOf: readonly string[] };

export interface OptionSpec {
  type: OptionType;
  description: string;
  env?: string;
  default?: string | boolean;
}

export type OptionSpecs = Record<string, OptionSpec>;

export interface HostPort {
  host: string;
  port: number;
}

type ValueOf<T extends OptionType> = T extends 'boolean'
  ? boolean
  : T extends 'port' | 'seconds' | 'integer'
    ? number
    : T extends 'hostport'
      ? HostPort
      : string;

export type ParsedOptions<S extends OptionSpecs> = {
  [K in keyof S]: S[K]['default'] extends string | boolean
    ? ValueOf<S[K]['type']>
    : ValueOf<S[K]['type']> | undefined;
};

export function parseHostPort(text: string): HostPort | undefined {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):([0-9]{1,5})$/.exec(text);
  if (!match) return undefined;
  const port = Number(match[3]);
  if (port > 65535) return undefined;
  return { host: match[1] ?? (match[2] || '0.0.0.0'), port };
}

function convert(name: string, spec: OptionSpec, raw: string | boolean, source: string): unknown {
  const bad = (why: string) => new UsageError(`${source} ${JSON.stringify(raw)}: ${why}`);
  const type = spec.type;
  if (type === 'boolean') {
    if (typeof raw === 'boolean') return raw;
    if (/^(1|true|yes)$/i.test(raw)) return true;
    if (/^(0|false|no)$/i.test(raw)) return false;
    throw bad('must be true or false');
  }
  const text = String(raw);
  if (typeof type === 'object') {
    if (!type.oneOf.includes(text)) throw bad(`must be one of ${type.oneOf.join(', ')}`);
    return text;
  }
  switch (type) {
    case 'port': {
      if (!/^[0-9]{1,5}$/.test(text) || Number(text) > 65535) throw bad('must be a port number 0-65535');
      return Number(text);
    }
    case 'integer': {
      if (!/^[0-9]+$/.test(text) || Number(text) < 1) throw bad('must be a whole number of at least 1');
      return Number(text);
    }
    case 'seconds': {
      if (!/^[0-9]+(\.[0-9]+)?$/.test(text)) throw bad('must be a number of seconds');
      // every duration ends up in a timer, and Node fires a longer one at once
      if (Number(text) > MAX_SECONDS) throw bad(`must be at most ${MAX_SECONDS} seconds (about 24 days)`);
      return Number(text);
    }
    case 'hostport': {
      const hp = parseHostPort(text);
      if (!hp) throw bad('must be host:port, e.g. 0.0.0.0:9443, :9443 or [::1]:9443');
      return hp;
    }
    default:
      if (!text) throw bad(`--${name} must not be empty`);
      return text;
  }
}

/** setTimeout's longest delay: a longer one fires at once, so no duration may exceed it */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** the longest duration a flag takes: MAX_TIMER_MS in whole seconds */
export const MAX_SECONDS = Math.floor(MAX_TIMER_MS / 1000);

/**
 * A `seconds` flag's value in whole milliseconds, for settings that must be integers: the plain
 * product is not one for many values given to the millisecond (1.001 * 1000 is 1000.9999999999999).
 */
export const millisecondsOf = (seconds: number): number => Math.round(seconds * 1000);

export function parseOptions<S extends OptionSpecs>(
  args: string[],
  specs: S,
  env: NodeJS.ProcessEnv = process.env,
): ParsedOptions<S> {
  const parseSpec = Object.fromEntries(
    Object.entries(specs).map(([name, spec]) => [
      name,
      { type: spec.type === 'boolean' ? 'boolean' : 'string' } as const,
    ]),
  );
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args, options: parseSpec, strict: true, allowPositionals: false })
      .values as typeof values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(specs)) {
    const fromFlag = values[name];
    const fromEnv = spec.env ? env[spec.env] : undefined;
    if (fromFlag !== undefined) out[name] = convert(name, spec, fromFlag, `--${name}`);
    else if (fromEnv !== undefined && fromEnv !== '') out[name] = convert(name, spec, fromEnv, `${spec.env}`);
    else if (spec.default !== undefined)
      out[name] = convert(name, spec, spec.default, `default of --${name}`);
  }
  return out as ParsedOptions<S>;
}

export function optionsHelp(specs: OptionSpecs): string {
  const rows = Object.entries(specs).map(([name, spec]) => {
    const value =
      spec.type === 'boolean'
        ? ''
        : typeof spec.type === 'object'
          ? ` <${spec.type.oneOf.join('|')}>`
          : ` <${spec.type}>`;
    const extras = [
      spec.default !== undefined && spec.default !== '' ? `default ${spec.default}` : '',
      spec.env ? `env ${spec.env}` : '',
    ].filter(Boolean);
    return [`--${name}${value}`, `${spec.description}${extras.length ? ` (${extras.join('; ')})` : ''}`];
  });
  const width = Math.max(...rows.map(([flag]) => flag!.length));
  return rows.map(([flag, text]) => `  ${flag!.padEnd(width)}  ${text}`).join('\n');
}
