// examples/ hands users the seed documents' examples; they must stay exactly as written there.
import { readFileSync } from 'node:fs';

import { seatgeekExamples } from '../../support/examples.ts';

const example = (name: string): string =>
  readFileSync(new URL(`../../../examples/${name}`, import.meta.url), 'utf8').replace(/^#.*\n/, '');

test('examples/ holds the seatgeek README examples unchanged', () => {
  const { template, instance } = seatgeekExamples();
  expect(example('buildkittemplate.yaml')).toBe(template);
  expect(example('buildkit.yaml')).toBe(instance);
});
