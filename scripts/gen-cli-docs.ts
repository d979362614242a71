// Rewrites docs/cli.md from the CLI's --help output (cli/reference.ts).
import { writeFileSync } from 'node:fs';

import { cliReference } from '../cli/reference.ts';

const target = new URL('../docs/cli.md', import.meta.url);
writeFileSync(target, await cliReference());
process.stdout.write(`wrote ${target.pathname}\n`);
