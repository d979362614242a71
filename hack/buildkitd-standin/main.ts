// A STAND-IN for buildkitd, for tests and the local cluster only: no package ships a real buildkitd
// here. It listens the way buildkitd does (`--addr tcp://0.0.0.0:1234`, `--addr unix:///run/...`,
// repeatable), serves grpc.health.v1.Health (as buildkitd has since moby/buildkit#4145) and two
// calls of moby.buildkit.v1.Control: ListWorkers, and Status, a long server stream with quiet gaps
// that stands for a build (a `RUN sleep` sends nothing for a while). Like buildkitd
// (moby/buildkit#4090), SIGTERM ends it at once: open calls are cut, nothing is drained.
//
//   node hack/buildkitd-standin/main.ts --addr tcp://127.0.0.1:0 --addr unix:///tmp/b.sock
//
// Status's Ref may ask for a build shape, `steps=<n>,quiet=<ms>` (default 3 steps, 1000 ms apart).
// Prints `listening on <address>` per address (port 0 resolved) once it serves.
//
// Like buildkitd it keeps state under --root (default /var/lib/buildkit) when that directory
// exists: one line per start in `standin-boots.log`, so a test can see that a woken instance
// mounted the same build cache as before (buildkitd's own cache is not there to look at).
import { appendFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';

import * as grpc from '@grpc/grpc-js';

import { bindAddress, buildShape } from './args.ts';
import { standinServices } from './services.ts';

function fail(message: string): never {
  process.stderr.write(`buildkitd-standin: ${message}\n`);
  process.exit(2);
}

const { values } = (() => {
  try {
    // The flags the controller's pods give buildkitd; only --addr means anything here.
    return parseArgs({
      options: {
        addr: { type: 'string', multiple: true },
        config: { type: 'string' },
        debug: { type: 'boolean' },
        'oci-worker-no-process-sandbox': { type: 'boolean' },
        root: { type: 'string' },
      },
      strict: true,
    });
  } catch (error) {
    return fail((error as Error).message);
  }
})();
const addrs = values.addr ?? ['unix:///run/buildkit/buildkitd.sock'];
const binds = addrs.map(
  (a) => bindAddress(a) ?? fail(`--addr ${a}: must be tcp://<host>:<port> or unix:///<path>`),
);

const root = values.root ?? '/var/lib/buildkit';
if (existsSync(root)) {
  try {
    appendFileSync(`${root}/standin-boots.log`, `${new Date().toISOString()} ${hostname()}\n`);
  } catch (error) {
    process.stderr.write(
      `buildkitd-standin: cannot record the start in ${root}: ${(error as Error).message}\n`,
    );
  }
}

const services = standinServices();
const server = new grpc.Server();
server.addService(services.Health.service, {
  Check: (_call: grpc.ServerUnaryCall<unknown, unknown>, done: grpc.sendUnaryData<unknown>) =>
    done(null, { status: 'SERVING' }),
});
server.addService(services.Control.service, {
  ListWorkers: (_call: grpc.ServerUnaryCall<unknown, unknown>, done: grpc.sendUnaryData<unknown>) =>
    done(null, {
      record: [
        {
          ID: 'standin',
          Labels: { 'org.mobyproject.buildkit.worker.executor': 'stand-in' },
          platforms: [{ Architecture: process.arch === 'arm64' ? 'arm64' : 'amd64', OS: 'linux' }],
        },
      ],
    }),
  Status: (call: grpc.ServerWritableStream<{ Ref: string }, unknown>) => {
    const shape = buildShape(call.request.Ref ?? '');
    if (!shape) {
      call.destroy(
        Object.assign(new Error(`bad Ref ${JSON.stringify(call.request.Ref)}`), {
          code: grpc.status.INVALID_ARGUMENT,
        }),
      );
      return;
    }
    let step = 0;
    const next = () => {
      if (call.cancelled) return;
      if (step === shape.steps) return call.end();
      step++;
      call.write({
        logs: [{ vertex: 'sha256:standin', stream: 1, msg: Buffer.from(`step ${step}/${shape.steps}\n`) }],
      });
      timer = setTimeout(next, shape.quietMs);
    };
    let timer = setTimeout(next, 0);
    call.on('cancelled', () => clearTimeout(timer));
  },
});

for (const [i, bind] of binds.entries()) {
  if (bind.startsWith('unix:')) {
    // buildkitd makes the socket's directory (e.g. /run/user/1000/buildkit when rootless).
    const socket = bind.slice('unix:'.length);
    mkdirSync(dirname(socket), { recursive: true });
    rmSync(socket, { force: true });
  }
  const port = await new Promise<number>((resolve) =>
    server.bindAsync(bind, grpc.ServerCredentials.createInsecure(), (error, p) =>
      error ? fail(`cannot listen on ${addrs[i]}: ${error.message}`) : resolve(p),
    ),
  );
  const shown = bind.startsWith('unix:') ? addrs[i] : `tcp://${bind.replace(/:[0-9]+$/, `:${port}`)}`;
  process.stdout.write(`listening on ${shown}\n`);
}

process.once('SIGTERM', () => {
  // buildkitd does not drain on SIGTERM: the process ends and the kernel closes every connection,
  // so an open call sees the connection drop (UNAVAILABLE), not a graceful cancel
  process.stdout.write('SIGTERM: exiting without draining\n');
  process.exit(0);
});
