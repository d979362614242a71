#!/usr/bin/env node
// `buildkit-fleet <command>`: one binary for every component (one image, one package).
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { COMMANDS, runCli } from './commands.ts';

export { COMMANDS };

const invokedDirectly = process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  // `buildkit-fleet crds | head` closes the pipe early; that is not an error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
  process.exitCode = await runCli(process.argv.slice(2), {
    out: (s) => process.stdout.write(s),
    err: (s) => process.stderr.write(s),
  });
}
