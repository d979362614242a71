// Kubernetes resource quantities ("500m", "8Gi", "1.5", "1e3", 2), parsed exactly as a fraction of
// BigInts so comparisons never suffer float rounding. @kubernetes/client-node has a helper but does
// not export it, and it throws on fractional binary values such as "0.5Gi".

export interface Quantity {
  /** value = numerator / denominator, denominator > 0 */
  numerator: bigint;
  denominator: bigint;
}

const BINARY: Record<string, bigint> = { Ki: 1n, Mi: 2n, Gi: 3n, Ti: 4n, Pi: 5n, Ei: 6n };
const DECIMAL: Record<string, number> = { n: -9, u: -6, m: -3, '': 0, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };

const QUANTITY = /^([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$/;

/** Parses a quantity; returns undefined when it is not one. */
export function parseQuantity(input: string | number): Quantity | undefined {
  const text = typeof input === 'number' ? String(input) : input;
  if (typeof input === 'number' && !Number.isFinite(input)) return undefined;
  const match = QUANTITY.exec(text);
  if (!match) return undefined;
  const [, sign, number = '', suffix = ''] = match;
  const [whole = '', fraction = ''] = number.split('.');
  let numerator = BigInt((whole || '0') + fraction);
  let denominator = 10n ** BigInt(fraction.length);
  let exponent10 = 0;
  if (suffix in BINARY) numerator *= 1024n ** BINARY[suffix]!;
  else if (/^[eE]/.test(suffix)) exponent10 = Number(suffix.slice(1));
  else exponent10 = DECIMAL[suffix] ?? 0;
  if (Math.abs(exponent10) > 1000) return undefined;
  if (exponent10 >= 0) numerator *= 10n ** BigInt(exponent10);
  else denominator *= 10n ** BigInt(-exponent10);
  if (sign === '-') numerator = -numerator;
  return { numerator, denominator };
}

/** -1, 0 or 1 as a is less than, equal to or greater than b. */
export function compareQuantities(a: Quantity, b: Quantity): -1 | 0 | 1 {
  const left = a.numerator * b.denominator;
  const right = b.numerator * a.denominator;
  return left < right ? -1 : left > right ? 1 : 0;
}
