// The chart's defaults that must match what the code and its docs say.
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

import { CONTROLLER_NODE_OPTIONS } from '../../../controller/options.ts';

const values = parse(
  readFileSync(new URL('../../../charts/buildkit-fleet/values.yaml', import.meta.url), 'utf8'),
) as { controller: { nodeOptions: string; nodeFlags: string[] } };

test('the controller runs with the process settings controller/options.ts names, split as node needs', () => {
  const { nodeOptions, nodeFlags } = values.controller;
  expect([...nodeOptions.split(' '), ...nodeFlags].sort()).toEqual(CONTROLLER_NODE_OPTIONS.split(' ').sort());
  // NODE_OPTIONS refuses these: they must be on node's command line
  for (const flag of ['--no-opt', '--no-maglev']) expect(nodeOptions).not.toContain(flag);
});
