// `npm stop`: undoes what `npm start` set up. A local cluster is stopped with everything in it (the
// real node's pods, mounts, iptables chains and host settings included: hack/cli.ts down); in an
// existing cluster (npm start -- --kubeconfig) only the release and the example are removed.
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { findBinaries } from '../hack/binaries.ts';
import { START_STATE_FILE, type StartState } from './start-state.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const local = path.resolve(process.env['BKF_LOCAL_DIR'] ?? path.join(root, '.local'));
const stateFile = path.join(local, START_STATE_FILE);
const say = (line: string) => process.stdout.write(`[stop] ${line}\n`);
const run = promisify(execFile);

if (process.argv.length > 2) {
  process.stderr.write(`npm stop takes no arguments (got ${process.argv.slice(2).join(' ')})\n`);
  process.exit(2);
}

const state = fs.existsSync(stateFile)
  ? (JSON.parse(fs.readFileSync(stateFile, 'utf8')) as StartState)
  : undefined;
let code = 0;
if (state?.external) {
  const { helm, kubectl } = findBinaries().found;
  if (!helm || !kubectl) {
    process.stderr.write('[stop] kubectl or helm is missing: run npm run cluster:prereqs\n');
    process.exit(1);
  }
  say(`removing the release ${state.release} from ${state.kubeconfig}`);
  try {
    await run(helm, [
      '--kubeconfig',
      state.kubeconfig,
      'uninstall',
      state.release,
      '-n',
      state.namespace,
      '--wait',
    ]);
    await run(kubectl, [
      '--kubeconfig',
      state.kubeconfig,
      'delete',
      '-f',
      path.join(root, 'examples', 'autoscaled.yaml'),
      '--ignore-not-found',
      '--wait=false',
    ]);
  } catch (error) {
    process.stderr.write(
      `[stop] ${((error as { stderr?: string }).stderr ?? (error as Error).message).trim()}\n`,
    );
    code = 1;
  }
} else {
  const child = spawn(
    process.execPath,
    ['--disable-warning=ExperimentalWarning', path.join(root, 'hack', 'cli.ts'), 'down'],
    {
      stdio: 'inherit',
    },
  );
  [code] = (await once(child, 'exit')) as [number];
}
if (code === 0) fs.rmSync(stateFile, { force: true });
process.exit(code);
