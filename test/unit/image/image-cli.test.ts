// `npm run image` (scripts/image.ts) as a user meets it: help, usage errors that leave nothing
// behind, and a build that says what it wrote and how to import it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { tmpDir, readLayout } from './layout-support.ts';

const script = fileURLToPath(new URL('../../../scripts/image.ts', import.meta.url));
const dir = tmpDir('cli');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function image(...args: string[]) {
  const r = spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', cwd: dir, timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('--help says what goes in, that it builds first, and how to import', () => {
  const r = image('--help');
  expect(r.code).toBe(0);
  expect(r.out).toContain('Usage: npm run image');
  expect(r.out).toContain('runs `npm run build` first');
  expect(r.out).toContain('ctr -n k8s.io images import');
  expect(r.out).toContain('--tag <ref>');
  expect(r.out).toContain('--no-build');
});

test.each([
  [['--bogus'], "image: Unknown option '--bogus'"],
  [['--tag'], "image: Option '--tag' argument is ambiguous"],
  [['--tag', 'Not:Lowercase'], 'image: --tag: invalid image reference "Not:Lowercase"'],
  [['extra'], "image: Unexpected argument 'extra'"],
  [['--runtime-dir', 'x', '--tag', 'a:b'], 'image: --runtime-dir writes a folder, not an image'],
])('%j is a usage error (exit 2) that writes nothing', (args, message) => {
  const out = path.join(dir, 'usage', 'image.tar');
  const r = image(...args, '--out', out);
  expect(r.code).toBe(2);
  expect(r.err).toContain(message);
  expect(r.err).toContain('--help');
  expect(fs.existsSync(path.dirname(out))).toBe(false);
});

test('a build with --tag and --out: the tar is there, under the normalized name, and the output says how to import it', () => {
  const out = path.join(dir, 'built', 'x.tar');
  const r = image('--no-build', '--tag', 'example/fleet:dev', '--out', out);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  expect(r.out).toMatch(
    /^image: docker\.io\/example\/fleet:dev \(manifest sha256:[0-9a-f]{64}, [0-9.]+ MiB\)\n/,
  );
  expect(r.out).toContain(`import: ctr -n k8s.io images import built/x.tar`);
  expect(readLayout(out, dir).index.manifests[0]!.annotations!['io.containerd.image.name']).toBe(
    'docker.io/example/fleet:dev',
  );
  expect(fs.readdirSync(path.dirname(out))).toEqual(['x.tar']);
}, 60_000);
