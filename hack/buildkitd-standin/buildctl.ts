// A STAND-IN for buildctl, for tests and the local cluster only, beside the buildkitd stand-in
// (main.ts) in its image: on Kubernetes before 1.24 the controller probes buildkitd with
// `buildctl --addr unix:///run/buildkit/buildkitd.sock debug workers`, which the real
// moby/buildkit images ship. This answers that one command the way buildctl does: ListWorkers
// over the address, a table on stdout, exit 0; anything else, or no answer, exits non-zero.
//
//   node hack/buildkitd-standin/buildctl.ts --addr unix:///run/buildkit/buildkitd.sock debug workers
import { parseArgs } from 'node:util';

import * as grpc from '@grpc/grpc-js';

import { bindAddress } from './args.ts';
import { standinServices } from './services.ts';

function fail(message: string, code = 1): never {
  process.stderr.write(`buildctl (stand-in): ${message}\n`);
  process.exit(code);
}

const { values, positionals } = (() => {
  try {
    return parseArgs({
      options: { addr: { type: 'string', default: 'unix:///run/buildkit/buildkitd.sock' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    return fail((error as Error).message, 2);
  }
})();
if (positionals.join(' ') !== 'debug workers')
  fail(`only "debug workers" is supported, not "${positionals.join(' ')}"`, 2);
const target = bindAddress(values.addr);
if (!target) fail(`--addr ${values.addr}: must be tcp://<host>:<port> or unix:///<path>`, 2);

const control = new (standinServices().Control)(target, grpc.credentials.createInsecure()) as grpc.Client &
  Record<string, (...args: unknown[]) => void>;
control['ListWorkers']!(
  {},
  { deadline: Date.now() + 5000 },
  (
    error: Error | null,
    reply: { record: { ID: string; platforms: { OS: string; Architecture: string }[] }[] },
  ) => {
    if (error) fail(`listing workers: ${error.message}`);
    process.stdout.write('ID\tPLATFORMS\n');
    for (const w of reply.record) {
      process.stdout.write(`${w.ID}\t${w.platforms.map((p) => `${p.OS}/${p.Architecture}`).join(',')}\n`);
    }
    control.close();
  },
);
