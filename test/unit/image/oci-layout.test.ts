// The OCI layout writer (scripts/image/oci-layout.ts): what containerd reads from the tar, and
// that the same recipe gives the same bytes. The tars are read back with GNU tar.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { normalizeReference, planLayer, writeImage } from '../../../scripts/image/oci-layout.ts';
import type { ImageSpec, LayerEntry } from '../../../scripts/image/oci-layout.ts';
import { listTar, readLayout, tarNames, tmpDir } from './layout-support.ts';

describe('normalizeReference: the name containerd stores and the CRI looks up', () => {
  test.each([
    ['buildkit-fleet:local', 'docker.io/library/buildkit-fleet:local'],
    ['moby/buildkit:latest', 'docker.io/moby/buildkit:latest'],
    ['moby/buildkit', 'docker.io/moby/buildkit:latest'],
    ['busybox', 'docker.io/library/busybox:latest'],
    ['docker.io/buildkit-fleet/pause:local', 'docker.io/buildkit-fleet/pause:local'],
    ['docker.io/library/node:24', 'docker.io/library/node:24'],
    ['index.docker.io/library/node:24', 'docker.io/library/node:24'],
    ['docker.io/node', 'docker.io/library/node:latest'],
    ['ghcr.io/seatgeek/buildkit-operator:v1.2.3', 'ghcr.io/seatgeek/buildkit-operator:v1.2.3'],
    ['localhost/x', 'localhost/x:latest'],
    ['localhost:5000/team/app:dev', 'localhost:5000/team/app:dev'],
    ['registry.example:5000/app', 'registry.example:5000/app:latest'],
    [`alpine@sha256:${'a'.repeat(64)}`, `docker.io/library/alpine@sha256:${'a'.repeat(64)}`],
    [`alpine:3@sha256:${'b'.repeat(64)}`, `docker.io/library/alpine:3@sha256:${'b'.repeat(64)}`],
  ])('%s -> %s', (reference, normalized) => {
    expect(normalizeReference(reference)).toBe(normalized);
    // normalizing twice changes nothing
    expect(normalizeReference(normalized)).toBe(normalized);
  });

  test.each([
    ['', /no name/],
    [':local', /no name/],
    ['BuildKit-Fleet:local', /"BuildKit-Fleet" is not a lowercase name component/],
    ['moby//buildkit', /"" is not a lowercase name component/],
    ['moby/buildkit:', /bad tag ""/],
    ['moby/buildkit:has space', /bad tag/],
    ['alpine@sha256:short', /bad digest/],
  ])('%j is refused', (reference, message) => {
    expect(() => normalizeReference(reference)).toThrow(message);
  });
});

const root = { uid: 0, gid: 0 };

describe('planLayer', () => {
  test('adds the parent folders a recipe left out, as root 0755, and sorts by path', () => {
    const planned = planLayer([
      { type: 'file', path: '/usr/local/bin/node', mode: 0o755, ...root, content: 'x' },
      { type: 'dir', path: '/home/user', mode: 0o700, uid: 1000, gid: 1000 },
      { type: 'symlink', path: '/bin/sh', target: 'busybox', ...root },
    ]);
    expect(
      planned.map((e) => `${e.path} ${e.type} ${'mode' in e ? e.mode.toString(8) : ''} ${e.uid}`),
    ).toEqual([
      '/bin dir 755 0',
      '/bin/sh symlink  0',
      '/home dir 755 0',
      '/home/user dir 700 1000',
      '/usr dir 755 0',
      '/usr/local dir 755 0',
      '/usr/local/bin dir 755 0',
      '/usr/local/bin/node file 755 0',
    ]);
  });

  test.each<[string, LayerEntry[], RegExp]>([
    [
      'a path twice',
      [
        { type: 'dir', path: '/a', mode: 0o755, ...root },
        { type: 'file', path: '/a', mode: 0o644, ...root, content: '' },
      ],
      /names \/a twice/,
    ],
    ['a relative path', [{ type: 'dir', path: 'a', mode: 0o755, ...root }], /must be absolute/],
    [
      'an unnormalized path',
      [{ type: 'dir', path: '/a/../b', mode: 0o755, ...root }],
      /must be absolute, normalized/,
    ],
    [
      'an entry below a file',
      [
        { type: 'file', path: '/a', mode: 0o644, ...root, content: '' },
        { type: 'file', path: '/a/b', mode: 0o644, ...root, content: '' },
      ],
      /\/a\/b is below \/a, which is a file/,
    ],
  ])('refuses %s', (_name, entries, message) => {
    expect(() => planLayer(entries)).toThrow(message);
  });
});

function sha256(file: string): string {
  return `sha256:${createHash('sha256').update(fs.readFileSync(file)).digest('hex')}`;
}

describe('writeImage', () => {
  const dir = tmpDir('writer');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const source = path.join(dir, 'source.bin');
  fs.writeFileSync(source, Buffer.alloc(70_000, 7));
  fs.chmodSync(source, 0o600);

  const spec = (): ImageSpec => ({
    reference: 'example/app:1',
    config: {
      entrypoint: ['/bin/app'],
      cmd: ['--help'],
      env: ['PATH=/bin', 'A=b'],
      user: '1000:1000',
      workingDir: '/work',
      labels: { 'z.label': 'last', 'a.label': 'first' },
    },
    layers: [
      {
        description: 'first',
        entries: [
          { type: 'file', path: '/bin/app', mode: 0o755, ...root, source },
          { type: 'dir', path: '/tmp', mode: 0o1777, ...root },
          {
            type: 'file',
            path: `/deep/${'long-folder-name/'.repeat(8)}file`,
            mode: 0o644,
            uid: 7,
            gid: 8,
            content: 'x',
          },
        ],
      },
      {
        description: 'second',
        entries: [{ type: 'symlink', path: '/bin/sh', target: 'app', ...root }],
      },
    ],
  });

  test('an OCI layout containerd can import: index, manifest, config and layer media types, names, digests', async () => {
    const written = await writeImage(spec(), path.join(dir, 'a', 'image.tar'));
    expect(written.reference).toBe('docker.io/example/app:1');
    const layout = readLayout(written.tarPath, dir);

    expect(fs.readFileSync(path.join(layout.dir, 'oci-layout'), 'utf8')).toBe(
      '{"imageLayoutVersion":"1.0.0"}',
    );
    expect(layout.index.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(layout.index.manifests).toHaveLength(1);
    expect(layout.index.manifests[0]).toMatchObject({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: written.manifest.digest,
      annotations: {
        'io.containerd.image.name': 'docker.io/example/app:1',
        'org.opencontainers.image.ref.name': 'docker.io/example/app:1',
      },
      platform: { architecture: 'amd64', os: 'linux' },
    });
    expect(layout.manifest.config.mediaType).toBe('application/vnd.oci.image.config.v1+json');
    expect(layout.manifest.layers.map((l) => l.mediaType)).toEqual([
      'application/vnd.oci.image.layer.v1.tar',
      'application/vnd.oci.image.layer.v1.tar',
    ]);
    // every descriptor names its blob's real digest and size
    for (const d of [layout.index.manifests[0]!, layout.manifest.config, ...layout.manifest.layers]) {
      expect(sha256(layout.blob(d.digest))).toBe(d.digest);
      expect(fs.statSync(layout.blob(d.digest)).size).toBe(d.size);
    }
    // uncompressed layers: the diff_ids are the layer digests
    expect(layout.config.rootfs).toEqual({
      type: 'layers',
      diff_ids: layout.manifest.layers.map((l) => l.digest),
    });
    expect(layout.config).toMatchObject({
      architecture: 'amd64',
      os: 'linux',
      config: {
        Entrypoint: ['/bin/app'],
        Cmd: ['--help'],
        Env: ['PATH=/bin', 'A=b'],
        User: '1000:1000',
        WorkingDir: '/work',
        Labels: { 'a.label': 'first', 'z.label': 'last' },
      },
    });
    expect(layout.files).toEqual([
      'blobs/',
      'blobs/sha256/',
      ...[layout.manifest.config.digest, written.manifest.digest, ...written.layers.map((l) => l.digest)]
        .map((d) => `blobs/sha256/${d.slice(7)}`)
        .sort(),
      'index.json',
      'oci-layout',
    ]);
  });

  test('layer entries: sorted, parents added, mtime 0, numeric owners, modes from the recipe, long paths kept', async () => {
    const written = await writeImage(spec(), path.join(dir, 'b', 'image.tar'));
    const layout = readLayout(written.tarPath, dir);
    const lines = listTar(layout.blob(written.layers[0]!.digest)).map((l) => l.replace(/ +/g, ' '));
    const long = `deep/${'long-folder-name/'.repeat(8)}file`;
    expect(lines).toEqual([
      'drwxr-xr-x 0/0 0 1970-01-01 00:00:00 bin/',
      '-rwxr-xr-x 0/0 70000 1970-01-01 00:00:00 bin/app',
      'drwxr-xr-x 0/0 0 1970-01-01 00:00:00 deep/',
      ...Array.from(
        { length: 8 },
        (_, i) => `drwxr-xr-x 0/0 0 1970-01-01 00:00:00 deep/${'long-folder-name/'.repeat(i + 1)}`,
      ),
      `-rw-r--r-- 7/8 1 1970-01-01 00:00:00 ${long}`,
      'drwxrwxrwt 0/0 0 1970-01-01 00:00:00 tmp/',
    ]);
    expect(listTar(layout.blob(written.layers[1]!.digest)).map((l) => l.replace(/ +/g, ' '))).toEqual([
      'drwxr-xr-x 0/0 0 1970-01-01 00:00:00 bin/',
      'lrwxrwxrwx 0/0 0 1970-01-01 00:00:00 bin/sh -> app',
    ]);
    // the file's bytes, not just its size
    const unpacked = tmpDir('unpacked');
    execFileSync('tar', ['-x', '-f', layout.blob(written.layers[0]!.digest), '-C', unpacked]);
    expect(fs.readFileSync(path.join(unpacked, 'bin/app')).equals(fs.readFileSync(source))).toBe(true);
    fs.rmSync(unpacked, { recursive: true, force: true });
  });

  test('the same recipe twice is the same tar, byte for byte; another recipe is another digest', async () => {
    const one = await writeImage(spec(), path.join(dir, 'c', 'one.tar'));
    const two = await writeImage(spec(), path.join(dir, 'c', 'two.tar'));
    expect(sha256(two.tarPath)).toBe(sha256(one.tarPath));
    expect(two.manifest.digest).toBe(one.manifest.digest);
    const changed = spec();
    changed.config.env = ['PATH=/bin'];
    const three = await writeImage(changed, path.join(dir, 'c', 'three.tar'));
    expect(three.manifest.digest).not.toBe(one.manifest.digest);
    // the config changed, the layers did not
    expect(three.layers).toEqual(one.layers);
  });

  test('a failed build leaves no tar and no scratch files behind, and keeps an older tar as it was', async () => {
    const out = path.join(dir, 'd', 'image.tar');
    const first = await writeImage(spec(), out);
    const before = sha256(out);
    const broken = spec();
    broken.layers[1]!.entries.push({
      type: 'file',
      path: '/missing',
      mode: 0o644,
      ...root,
      source: path.join(dir, 'nope'),
    });
    await expect(writeImage(broken, out)).rejects.toThrow(/ENOENT.*nope/);
    expect(sha256(first.tarPath)).toBe(before);
    expect(fs.readdirSync(path.dirname(out))).toEqual(['image.tar']);

    const fresh = path.join(dir, 'e', 'image.tar');
    await expect(writeImage(broken, fresh)).rejects.toThrow(/ENOENT/);
    expect(fs.readdirSync(path.dirname(fresh))).toEqual([]);
  });

  test('an invalid reference fails before anything is written', async () => {
    const out = path.join(dir, 'f', 'image.tar');
    await expect(writeImage({ ...spec(), reference: 'Bad:name' }, out)).rejects.toThrow(
      /invalid image reference/,
    );
    expect(fs.existsSync(out)).toBe(false);
  });

  test('tarNames lists in file order', () => {
    // guards the helper the order assertions above rely on
    const file = path.join(dir, 'order.tar');
    fs.writeFileSync(path.join(dir, 'order-z'), '');
    fs.writeFileSync(path.join(dir, 'order-a'), '');
    execFileSync('tar', ['-c', '-f', file, '-C', dir, 'order-z', 'order-a']);
    expect(tarNames(file)).toEqual(['order-z', 'order-a']);
  });
});
