import { selectorMatches } from '../../../../controller/autoscale/label-selector.ts';

const labels = { app: 'buildkitd', tier: 'ci', 'buildkit-fleet.io/autoscale': 'enabled' };

test('matchLabels: every pair must hold', () => {
  expect(selectorMatches({ matchLabels: { app: 'buildkitd' } }, labels)).toBe(true);
  expect(selectorMatches({ matchLabels: { app: 'buildkitd', tier: 'prod' } }, labels)).toBe(false);
  expect(selectorMatches({ matchLabels: { app: 'buildkitd' } }, undefined)).toBe(false);
});

test.each([
  ['In', ['ci', 'dev'], true],
  ['In', ['prod'], false],
  ['NotIn', ['prod'], true],
  ['NotIn', ['ci'], false],
  ['Exists', undefined, true],
  ['DoesNotExist', undefined, false],
  ['Gt', ['1'], false],
])('matchExpressions %s %j on tier=ci -> %s', (operator, values, want) => {
  const selector = { matchExpressions: [{ key: 'tier', operator, ...(values ? { values } : {}) }] };
  expect(selectorMatches(selector, labels)).toBe(want);
});

test('a missing key: NotIn and DoesNotExist hold, In and Exists do not', () => {
  const on = (operator: string) =>
    selectorMatches({ matchExpressions: [{ key: 'zone', operator, values: ['a'] }] }, labels);
  expect([on('NotIn'), on('DoesNotExist'), on('In'), on('Exists')]).toEqual([true, true, false, false]);
});

test('labels and expressions together, and an empty selector matches nothing', () => {
  expect(
    selectorMatches(
      {
        matchLabels: { app: 'buildkitd' },
        matchExpressions: [{ key: 'tier', operator: 'In', values: ['ci'] }],
      },
      labels,
    ),
  ).toBe(true);
  expect(selectorMatches({}, labels)).toBe(false);
  expect(selectorMatches(undefined, labels)).toBe(false);
});
