import { compareQuantities, parseQuantity } from '../../../api/quantity.ts';

const value = (q: string | number): number => {
  const parsed = parseQuantity(q);
  if (!parsed) throw new Error(`not a quantity: ${q}`);
  return Number(parsed.numerator) / Number(parsed.denominator);
};

test.each([
  ['500m', 0.5],
  ['1', 1],
  [2, 2],
  ['1.5', 1.5],
  ['.5', 0.5],
  ['8Gi', 8 * 1024 ** 3],
  ['0.5Gi', 512 * 1024 ** 2],
  ['16Gi', 16 * 1024 ** 3],
  ['1k', 1000],
  ['1M', 1e6],
  ['1e3', 1000],
  ['1E-3', 0.001],
  ['100n', 1e-7],
  ['+3', 3],
  ['-1', -1],
])('parses %p as %p', (input, expected) => {
  expect(value(input)).toBeCloseTo(expected, 12);
});

test.each(['', 'abc', '1Gb', '1 Gi', '1.2.3', 'Gi', '1i', '--1', '1e', NaN, Infinity])(
  'refuses %p',
  (input) => {
    expect(parseQuantity(input as string)).toBeUndefined();
  },
);

test.each([
  ['1', '1000m', 0],
  ['1Gi', '1G', 1],
  ['999Mi', '1Gi', -1],
  ['8', '16', -1],
  ['0.1', '100m', 0],
  ['1Ki', '1024', 0],
])('compares %p with %p -> %p', (a, b, expected) => {
  expect(compareQuantities(parseQuantity(a)!, parseQuantity(b)!)).toBe(expected);
});
