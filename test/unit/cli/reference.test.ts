// docs/cli.md must be what the CLI says about itself (regenerate with `npm run gen`).
import { readFileSync } from 'node:fs';

import { cliReference } from '../../../cli/reference.ts';

test('docs/cli.md is the current --help of every command', async () => {
  const committed = readFileSync(new URL('../../../docs/cli.md', import.meta.url), 'utf8');
  const current = await cliReference();
  // on failure, say how to fix it rather than only showing the diff
  if (committed !== current) throw new Error('docs/cli.md is out of date: run `npm run gen`');
  expect(committed).toContain('## `buildkit-fleet sidecar`');
});
