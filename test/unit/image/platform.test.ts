// The platform image `npm run image` builds (scripts/image/platform.ts), built here from this
// checkout's dist/ and addon (npm ci builds both; npm test makes sure of the addon), then unpacked
// and run the way a pod runs it: read-only root filesystem, user 65532, the config's Env.
// Running needs root; without it those tests fail and say so.
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

import { jest } from '@jest/globals';

import { serverFeatures } from '../../../kube/server-features.ts';
import { normalizeReference, writeImage } from '../../../scripts/image/oci-layout.ts';
import type { WrittenImage } from '../../../scripts/image/oci-layout.ts';
import { productionPackages } from '../../../scripts/image/packages.ts';
import { appEntries, platformImage, readLockfile } from '../../../scripts/image/platform.ts';
import { REPO_ROOT } from '../../../scripts/image/runtime.ts';
import { LOCAL_SIDECAR_IMAGE } from '../../../webhook/injection-options.ts';
import { sidecarContainer } from '../../../webhook/pod-injection/container.ts';
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

const dir = tmpDir('platform');
const rootfs = path.join(dir, 'rootfs');
let written: WrittenImage;
let layout: Layout;

beforeAll(async () => {
  written = await writeImage(platformImage(REPO_ROOT), path.join(dir, 'buildkit-fleet.oci.tar'));
  layout = readLayout(written.tarPath, dir);
  // as root it keeps the owners; without root the run tests fail anyway
  unpackRootfs(layout, rootfs);
}, 60_000);

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Regular files and links in a layer, as absolute paths. */
function layerFiles(digest: string): string[] {
  return listTar(layout.blob(digest))
    .filter((line) => line.startsWith('-') || line.startsWith('l'))
    .map((line) => `/${/^(?:\S+ +){5}(.*?)(?: -> .*)?$/.exec(line)![1]}`)
    .sort();
}

describe('the image config', () => {
  test('buildkit-fleet as entrypoint, found on PATH; user 65532:65532; /app; production environment', () => {
    expect(layout.config.config).toEqual({
      Entrypoint: ['buildkit-fleet'],
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'NODE_ENV=production', 'HOME=/home/nonroot'],
      User: '65532:65532',
      WorkingDir: '/app',
      Labels: {
        'org.opencontainers.image.licenses': 'Apache-2.0',
        'org.opencontainers.image.title': 'buildkit-fleet',
      },
    });
    expect(layout.config).toMatchObject({ architecture: 'amd64', os: 'linux' });
  });

  test("is stored as docker.io/library/buildkit-fleet:local, the webhook's --local sidecar image", () => {
    expect(written.reference).toBe('docker.io/library/buildkit-fleet:local');
    expect(written.reference).toBe(normalizeReference(LOCAL_SIDECAR_IMAGE));
    expect(layout.index.manifests[0]!.annotations!['io.containerd.image.name']).toBe(written.reference);
  });
});

describe('the files', () => {
  test('/app: package.json, dist/, the native addon and the production node_modules, nothing else', () => {
    const app = layerFiles(written.layers[2]!.digest);
    // the layer is what the recipe says ...
    const recipe = appEntries(REPO_ROOT, readLockfile(REPO_ROOT))
      .filter((e) => e.type !== 'dir')
      .map((e) => e.path)
      .sort();
    expect(app).toEqual(recipe);
    // ... and the recipe is what production needs
    expect(app).toEqual(
      expect.arrayContaining([
        '/app/package.json',
        '/app/dist/cli/main.js',
        '/app/build/native/proxy-engine.node',
      ]),
    );
    const tops = new Set(app.map((p) => p.split('/').slice(0, 3).join('/')));
    expect([...tops].sort()).toEqual(['/app/build', '/app/dist', '/app/node_modules', '/app/package.json']);
    for (const key of productionPackages(readLockfile(REPO_ROOT))) {
      expect(app).toContain(`/app/${key}/package.json`);
    }
    for (const dev of ['jest', 'typescript', 'eslint', 'node', 'ts-jest', '@grpc/grpc-js', 'prettier']) {
      expect(app.filter((p) => p.startsWith(`/app/node_modules/${dev}/`))).toEqual([]);
    }
    expect(app.filter((p) => p.includes('/.bin/') || p.endsWith('/.package-lock.json'))).toEqual([]);
  });

  test('node, /usr/bin/env and the libraries they load at the paths they load them from; the bin link; the user', () => {
    for (const file of [
      'usr/local/bin/node',
      'usr/bin/env',
      'lib64/ld-linux-x86-64.so.2',
      'lib/x86_64-linux-gnu/libc.so.6',
      'lib/x86_64-linux-gnu/libstdc++.so.6',
    ]) {
      expect(fs.lstatSync(path.join(rootfs, file)).isFile()).toBe(true);
    }
    expect(fs.readlinkSync(path.join(rootfs, 'usr/local/bin/buildkit-fleet'))).toBe('/app/dist/cli/main.js');
    expect(fs.statSync(path.join(rootfs, 'app/dist/cli/main.js')).mode & 0o111).toBe(0o111);
    expect(fs.readFileSync(path.join(rootfs, 'etc/passwd'), 'utf8')).toContain(
      'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n',
    );
    expect(fs.readFileSync(path.join(rootfs, 'etc/group'), 'utf8')).toContain('nonroot:x:65532:\n');
    expect(fs.statSync(path.join(rootfs, 'home/nonroot')).isDirectory()).toBe(true);
  });

  test('nothing belongs to the user or is writable by others: nothing in it needs to be written', () => {
    for (const layer of written.layers) {
      const lines = listTar(layout.blob(layer.digest));
      expect(lines.filter((l) => !l.split(/ +/)[1]!.startsWith('0/0'))).toEqual([]);
      expect(lines.filter((l) => !l.startsWith('l') && l[8] === 'w')).toEqual([]);
    }
  });
});

describe('running it read-only as 65532, as a pod does', () => {
  test('buildkit-fleet --help', async () => {
    requireRoot('running the image');
    const r = await runInImage(rootfs, layout.config.config, ['--help'], { readOnly: true });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Usage: buildkit-fleet <command>');
  });

  test('buildkit-fleet sidecar --help', async () => {
    requireRoot('running the image');
    const r = await runInImage(rootfs, layout.config.config, ['sidecar', '--help'], { readOnly: true });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Usage: buildkit-fleet sidecar');
  });

  test("node loads the sidecar's native addon", async () => {
    requireRoot('running the image');
    const r = await runInImage(
      rootfs,
      layout.config.config,
      [
        '-e',
        "console.log(require('/app/build/native/proxy-engine.node').counterCount, process.cwd(), require('os').userInfo().username)",
      ],
      { readOnly: true, entrypoint: ['node'] },
    );
    expect(r.stderr).toBe('');
    // the same addon as the one built here: it exposes the same number of counters
    const built = createRequire(import.meta.url)(
      fileURLToPath(new URL('../../../build/native/proxy-engine.node', import.meta.url)),
    ) as { counterCount: number };
    expect(r.stdout).toBe(`${built.counterCount} /app nonroot\n`);
  });

  test('the root filesystem really is read-only there (even root cannot write)', async () => {
    requireRoot('running the image');
    const r = await runInImage(
      rootfs,
      layout.config.config,
      ['-e', "require('fs').writeFileSync('/app/x', '')"],
      {
        readOnly: true,
        entrypoint: ['node'],
        user: '0:0',
      },
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("EROFS: read-only file system, open '/app/x'");
  });

  test('the injected sidecar container: its command and environment, the native engine, its postStart hook, SIGTERM', async () => {
    requireRoot('running the image');
    const free = async () => {
      const s = net.createServer();
      await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
      const { port } = s.address() as AddressInfo;
      await new Promise((resolve) => s.close(resolve));
      return port;
    };
    const echo = net.createServer((socket) => socket.pipe(socket));
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    const ports = {
      public: await free(),
      private: (echo.address() as AddressInfo).port,
      stats: await free(),
    };
    const container = sidecarContainer(
      {
        pod: { spec: { containers: [] } },
        namespace: 'ci',
        config: {
          image: written.reference,
          resources: {},
          statsPort: ports.stats,
          tokenSecretName: 'token',
          platformNamespace: 'buildkit-fleet',
          graceSeconds: 0,
        },
      },
      serverFeatures({ major: 1, minor: 28 }),
      ports,
      [],
    );
    const config = {
      ...layout.config.config,
      Env: [...layout.config.config.Env, ...container.env!.map((e) => `${e.name}=${e.value}`)],
    };
    const sidecar = startInImage(rootfs, config, container.command!.slice(1), {
      readOnly: true,
      entrypoint: container.command!.slice(0, 1),
    });
    const done = finished(sidecar);
    try {
      // the kubelet runs postStart in the container; it returns once the proxy listens
      const hook = container.lifecycle!.postStart!.exec!.command!;
      const started = await runInImage(rootfs, config, hook.slice(1), {
        readOnly: true,
        entrypoint: hook.slice(0, 1),
      });
      expect(started.code).toBe(0);
      const client = net.connect(ports.public, '127.0.0.1');
      const reply = new Promise<string>((resolve) =>
        client.once('data', (c: Buffer) => resolve(c.toString())),
      );
      client.write('ping');
      expect(await reply).toBe('ping');
      client.destroy();
    } finally {
      sidecar.kill('SIGTERM');
      echo.close();
    }
    const { code, stdout } = await done;
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.find((l) => l['msg'] === 'sidecar serving')).toMatchObject({ engine: 'native' });
    expect(lines.at(-1)).toMatchObject({ msg: 'sidecar stopped' });
    expect(code).toBe(0);
  });
});
