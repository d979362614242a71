// The real node's images (hack/images.ts): pause and the buildkitd stand-in, built with
// buildNodeImages as the cluster builds them, then unpacked and run the way the kubelet runs
// them: the stand-in as buildkitd with the controller's args, gRPC health over TCP and the unix
// socket, SIGTERM; the preStop drain script with the image's busybox. Running needs root.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

import { jest } from '@jest/globals';

import { prestopScript } from '../../../controller/prestop.ts';
import {
  BUSYBOX_APPLETS,
  PAUSE_REFERENCE,
  STANDIN_REFERENCE,
  buildNodeImages,
  checkStandinImports,
  pauseBinaryPath,
  pauseImage,
  standinImage,
} from '../../../hack/images.ts';
import type { NodeImages } from '../../../hack/images.ts';
import { healthCheck, listWorkers } from '../../support/buildkit-client.ts';
import {
  finished,
  listTar,
  readLayout,
  requireRoot,
  runInImage,
  startInImage,
  tmpDir,
  unpackRootfs,
} from './layout-support.ts';
import type { Layout } from './layout-support.ts';

jest.setTimeout(30_000);

const dir = tmpDir('node-images');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

// What pause does (kubernetes build/pause/linux/pause.c): wait for signals, exit 0 on SIGTERM.
// Compiled here so this test does not wait for install-prereqs.sh to build the real one.
const PAUSE_C = `#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
static void down(int s) { (void)s; _exit(0); }
int main(void) { signal(SIGTERM, down); signal(SIGINT, down); for (;;) pause(); }
`;

function compilePause(): string {
  const source = path.join(dir, 'pause.c');
  const binary = path.join(dir, 'pause');
  fs.writeFileSync(source, PAUSE_C);
  const r = spawnSync('gcc', ['-Os', '-static', '-o', binary, source], { encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(
      `cannot compile a pause binary for the test (gcc -static; npm test installs g++): ${r.stderr || r.error?.message}`,
    );
  }
  return binary;
}

let built: NodeImages;
const layouts: Record<string, Layout> = {};
const rootfs: Record<string, string> = {};

beforeAll(async () => {
  built = await buildNodeImages(path.join(dir, 'images'), compilePause());
  for (const image of built.images) {
    if (image.name === 'platform') continue;
    layouts[image.name] = readLayout(image.tarPath, dir);
    rootfs[image.name] = path.join(dir, `${image.name}-rootfs`);
    unpackRootfs(layouts[image.name]!, rootfs[image.name]!);
  }
}, 60_000);

const free = async (): Promise<number> => {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
};

describe('buildNodeImages', () => {
  test('the platform, pause and stand-in tars, by the names containerd stores; pause is the sandbox image', () => {
    expect(built.images.map(({ name, reference, aliases }) => ({ name, reference, aliases }))).toEqual([
      { name: 'platform', reference: 'docker.io/library/buildkit-fleet:local', aliases: undefined },
      { name: 'pause', reference: 'docker.io/buildkit-fleet/pause:local', aliases: undefined },
      {
        name: 'buildkitd-standin',
        reference: 'docker.io/buildkit-fleet/buildkitd-standin:local',
        // the images templates default to
        aliases: ['docker.io/moby/buildkit:latest', 'docker.io/moby/buildkit:rootless'],
      },
    ]);
    expect(built.sandbox).toBe(PAUSE_REFERENCE);
    for (const image of built.images) {
      expect(fs.existsSync(image.tarPath)).toBe(true);
      expect(readLayout(image.tarPath, dir).index.manifests[0]!.annotations).toEqual({
        'io.containerd.image.name': image.reference,
        'org.opencontainers.image.ref.name': image.reference,
      });
    }
  });

  test('the stand-in and the platform image share the runtime layer: one blob in containerd', () => {
    const platform = readLayout(built.images[0]!.tarPath, dir);
    expect(layouts['buildkitd-standin']!.manifest.layers[0]!.digest).toBe(
      platform.manifest.layers[0]!.digest,
    );
  });

  test('without the pause binary it says how to get one', () => {
    const missing = pauseBinaryPath({ BUILDKIT_FLEET_CACHE: path.join(dir, 'empty-cache') });
    expect(missing).toBe(path.join(dir, 'empty-cache', 'kubernetes-1.20.2', 'pause'));
    expect(() => pauseImage(missing)).toThrow(
      `${missing} is missing: run \`bash hack/install-prereqs.sh --real-node\``,
    );
    expect(() => pauseImage('/usr/bin/env')).toThrow('/usr/bin/env must be a static binary');
  });

  test('without a static busybox the stand-in says how to get one', () => {
    expect(() => standinImage(undefined, '/usr/bin/env')).toThrow(
      "/usr/bin/env is not static (Debian's busybox package): the stand-in image needs busybox-static; run `bash hack/install-prereqs.sh --real-node`",
    );
  });
});

describe('the pause image', () => {
  test('one static /pause, entrypoint /pause, user 65535', () => {
    const layout = layouts['pause']!;
    expect(layout.config.config).toMatchObject({ Entrypoint: ['/pause'], User: '65535:65535' });
    expect(layout.manifest.layers).toHaveLength(1);
    expect(
      listTar(layout.blob(layout.manifest.layers[0]!.digest)).map(
        (l) => l.split(/ +/)[0] + ' ' + l.split(/ +/).at(-1),
      ),
    ).toEqual(['-rwxr-xr-x pause']);
  });

  test('runs until SIGTERM, then exits 0', async () => {
    requireRoot('running the pause image');
    const layout = layouts['pause']!;
    const child = startInImage(rootfs['pause']!, layout.config.config, [], { readOnly: true });
    const done = finished(child);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(child.exitCode).toBe(null);
    child.kill('SIGTERM');
    expect(await done).toMatchObject({ code: 0 });
  });
});

describe('the buildkitd stand-in image', () => {
  const layout = () => layouts['buildkitd-standin']!;
  const root = () => rootfs['buildkitd-standin']!;

  test('entrypoint /usr/local/bin/buildkitd as root, labelled as a stand-in', () => {
    expect(STANDIN_REFERENCE).toBe('docker.io/buildkit-fleet/buildkitd-standin:local');
    expect(layout().config.config).toMatchObject({
      Entrypoint: ['/usr/local/bin/buildkitd'],
      User: '0:0',
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin'],
    });
    expect(layout().config.config.Labels!['org.opencontainers.image.description']).toMatch(
      /^STAND-IN for buildkitd, for tests only/,
    );
  });

  test("buildkitd's folders with the owners and modes rootful and rootless buildkitd need; busybox and its applets", () => {
    const lines = listTar(layout().blob(layout().manifest.layers[1]!.digest)).map((l) => {
      const f = l.split(/ +/);
      return `${f[0]} ${f[1]} ${f.slice(5).join(' ')}`;
    });
    for (const want of [
      'drwxr-xr-x 0/0 run/buildkit/',
      'drwx------ 1000/1000 run/user/1000/',
      'drwxr-xr-x 1000/1000 run/user/1000/buildkit/',
      'drwxr-xr-x 1000/1000 home/user/.local/share/buildkit/',
      'drwxrwxrwt 0/0 tmp/',
      'drwx--x--x 0/0 var/lib/buildkit/',
      '-rwxr-xr-x 0/0 bin/busybox',
      '-rwxr-xr-x 0/0 usr/local/bin/buildkitd',
      '-rwxr-xr-x 0/0 usr/local/bin/buildctl',
      'lrwxrwxrwx 0/0 bin/sh -> busybox',
    ]) {
      expect(lines).toContain(want);
    }
    for (const applet of ['printf', 'date', 'usleep', 'sleep', 'cat', 'echo', '[']) {
      expect(BUSYBOX_APPLETS).toContain(applet);
      expect(lines).toContain(`lrwxrwxrwx 0/0 bin/${applet} -> busybox`);
    }
    expect(fs.readFileSync(path.join(root(), 'etc/passwd'), 'utf8')).toContain(
      'user:x:1000:1000:user:/home/user:/bin/sh\n',
    );
  });

  test("the stand-in's sources and protos, and grpc's packages only", () => {
    const files = fs.readdirSync(path.join(root(), 'standin'), { recursive: true }) as string[];
    expect(files).toEqual(
      expect.arrayContaining([
        'main.ts',
        'buildctl.ts',
        'args.ts',
        'services.ts',
        'protos/health.proto',
        'protos/control.proto',
        'package.json',
      ]),
    );
    const modules = fs.readdirSync(path.join(root(), 'standin/node_modules'));
    expect(modules).toEqual(expect.arrayContaining(['@grpc', 'protobufjs']));
    for (const other of ['pino', 'jest', 'express', '@kubernetes', 'typescript'])
      expect(modules).not.toContain(other);
  });

  test('an import the image would not carry stops the build', () => {
    expect(() => checkStandinImports({ 'main.ts': "import { x } from '../ports.ts';" })).toThrow(
      'hack/buildkitd-standin/main.ts imports ../ports.ts, which is not in hack/buildkitd-standin/',
    );
    expect(() => checkStandinImports({ 'main.ts': "import pino from 'pino';" })).toThrow(
      'hack/buildkitd-standin/main.ts imports pino: the stand-in image carries only @grpc/grpc-js and @grpc/proto-loader',
    );
    expect(() =>
      checkStandinImports({
        'main.ts':
          "import fs from 'node:fs';\nimport * as grpc from '@grpc/grpc-js';\nimport { a } from './args.ts';",
        'args.ts': '',
      }),
    ).not.toThrow();
  });

  test("serves as buildkitd with the controller's args: health over TCP and the unix socket, the buildctl exec probe, then SIGTERM ends it at once", async () => {
    requireRoot('running the stand-in image');
    // what the controller mounts: the template's buildkitd.toml
    fs.mkdirSync(path.join(root(), 'etc/buildkit'), { recursive: true });
    fs.writeFileSync(path.join(root(), 'etc/buildkit/buildkitd.toml'), '');
    const port = await free();
    const child = startInImage(root(), layout().config.config, [
      '--addr',
      'unix:///run/buildkit/buildkitd.sock',
      '--addr',
      `tcp://127.0.0.1:${port}`,
      '--config',
      '/etc/buildkit/buildkitd.toml',
      '--debug',
    ]);
    const done = finished(child);
    let out = '';
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if ((out.match(/^listening on /gm) ?? []).length === 2) resolve();
      });
      child.once('exit', () => reject(new Error(`the stand-in exited: ${out}`)));
    });
    expect(out).toContain(`listening on tcp://127.0.0.1:${port}\n`);
    expect(await healthCheck(`tcp://127.0.0.1:${port}`)).toEqual({ status: 'SERVING' });
    // the socket is in the image's /run/buildkit
    expect(await healthCheck(`unix://${path.join(root(), 'run/buildkit/buildkitd.sock')}`)).toEqual({
      status: 'SERVING',
    });
    expect((await listWorkers(`tcp://127.0.0.1:${port}`)).record[0]!.ID).toBe('standin');
    // the controller's exec probe before Kubernetes 1.24, run in the container as the kubelet does
    const probe = await runInImage(
      root(),
      layout().config.config,
      ['--addr', 'unix:///run/buildkit/buildkitd.sock', 'debug', 'workers'],
      {
        entrypoint: ['buildctl'],
      },
    );
    expect(probe).toMatchObject({ code: 0, stdout: 'ID\tPLATFORMS\nstandin\tlinux/amd64\n', stderr: '' });
    const start = Date.now();
    child.kill('SIGTERM');
    const result = await done;
    expect(Date.now() - start).toBeLessThan(2000);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('SIGTERM: exiting without draining');
  });

  test('serves rootless, as uid 1000 with its socket in /run/user/1000/buildkit', async () => {
    requireRoot('running the stand-in image');
    const port = await free();
    const child = startInImage(
      root(),
      layout().config.config,
      [
        '--addr',
        'unix:///run/user/1000/buildkit/buildkitd.sock',
        '--addr',
        `tcp://127.0.0.1:${port}`,
        '--oci-worker-no-process-sandbox',
      ],
      { user: '1000:1000' },
    );
    const done = finished(child);
    try {
      const socket = `unix://${path.join(root(), 'run/user/1000/buildkit/buildkitd.sock')}`;
      for (let i = 0; ; i++) {
        try {
          expect(await healthCheck(socket, 500)).toEqual({ status: 'SERVING' });
          break;
        } catch (error) {
          if (i > 40 || child.exitCode !== null) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      expect(fs.statSync(path.join(root(), 'run/user/1000/buildkit/buildkitd.sock')).uid).toBe(1000);
    } finally {
      child.kill('SIGTERM');
    }
    expect((await done).code).toBe(0);
  });

  test("the preStop hook's shell: busybox sh with usleep and date", async () => {
    requireRoot('running the stand-in image');
    const r = await runInImage(root(), layout().config.config, ['-c', 'usleep 1; date -u +%Y'], {
      entrypoint: ['/bin/sh'],
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${new Date().getUTCFullYear()}\n`);
  });

  test('the preStop drain script runs there as the kubelet runs it: waits while a client is connected, returns after', async () => {
    requireRoot('running the stand-in image');
    // the controller's ConfigMap is mounted at /usr/local/bin/buildkit-prestop.sh
    fs.writeFileSync(
      path.join(root(), 'usr/local/bin/buildkit-prestop.sh'),
      prestopScript(1234, { quietSeconds: 1, intervalMs: 100 }),
    );
    const log = path.join(root(), 'tmp/prestop.log');
    const config = {
      ...layout().config.config,
      Env: [...layout().config.config.Env, 'BUILDKIT_PRESTOP_LOG=/tmp/prestop.log'],
    };
    // buildkitd's port with a client connected (same network namespace: the script reads /proc/net/tcp)
    const server = net.createServer((s) => s.on('error', () => undefined));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const client = net.connect(port, '127.0.0.1');
    // a failed expectation must not leave the server and client open: they would keep jest alive
    try {
      await new Promise((resolve) => client.once('connect', resolve));
      const hook = finished(
        startInImage(root(), config, ['/usr/local/bin/buildkit-prestop.sh', String(port)], {
          entrypoint: ['/bin/sh'],
        }),
      );
      const messages = () =>
        fs.existsSync(log)
          ? fs
              .readFileSync(log, 'utf8')
              .trim()
              .split('\n')
              .map((l) => JSON.parse(l) as { msg: string; connections: number })
          : [];
      // the script's start is not timed (a busy machine may take seconds to start the container):
      // wait for its report of the connected client, then check it is still waiting past its quiet time
      let settled = false;
      void hook.then(
        () => (settled = true),
        () => (settled = true),
      );
      for (const start = Date.now(); messages().length === 0 && Date.now() - start < 30_000;) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await new Promise((resolve) => setTimeout(resolve, 1500));
      expect(messages().at(-1)).toMatchObject({ msg: 'preStop: client connections changed', connections: 1 });
      expect(settled).toBe(false);
      const closed = Date.now();
      client.destroy();
      const r = await hook;
      server.close();
      expect(r).toMatchObject({ code: 0, stderr: '' });
      expect(Date.now() - closed).toBeGreaterThanOrEqual(1000);
      expect(messages().at(-1)).toMatchObject({ msg: 'preStop: no client for 1s, buildkitd may stop' });
    } finally {
      client.destroy();
      server.close();
    }
  }, 60_000);
});
