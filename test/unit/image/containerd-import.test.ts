// The image tars as containerd 1.6 takes them: a private containerd (own socket, root and state
// in a temp folder, CRI off) imports each with `ctr -n k8s.io images import`, lists it under its
// normalized name, finds every blob, and runs the platform image read-only with runc.
// Needs root and containerd (npm test installs it where the real-node tier can run).
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { jest } from '@jest/globals';

import { buildNodeImages } from '../../../hack/images.ts';
import type { NodeImages } from '../../../hack/images.ts';
import { requireRoot, tmpDir } from './layout-support.ts';

jest.setTimeout(30_000);

const dir = tmpDir('containerd');
const socket = path.join(dir, 'containerd.sock');
let containerd: ChildProcess | undefined;
let built: NodeImages;

function ctr(...args: string[]) {
  const r = spawnSync('ctr', ['--address', socket, '--namespace', 'k8s.io', ...args], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  if (r.status !== 0)
    throw new Error(`ctr ${args.join(' ')} failed (${r.status}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}

beforeAll(async () => {
  requireRoot('importing into containerd');
  if (spawnSync('containerd', ['--version'], { stdio: 'ignore' }).status !== 0) {
    throw new Error(
      'importing into containerd cannot run here: containerd is missing (bash hack/install-prereqs.sh --real-node installs it)',
    );
  }
  fs.writeFileSync(
    path.join(dir, 'config.toml'),
    [
      'version = 2',
      `root = "${dir}/root"`,
      `state = "${dir}/state"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      `[grpc]\n  address = "${socket}"`,
      `[ttrpc]\n  address = "${socket}.ttrpc"`,
      '',
    ].join('\n'),
  );
  const log = fs.openSync(path.join(dir, 'containerd.log'), 'a');
  containerd = spawn('containerd', ['--config', path.join(dir, 'config.toml')], {
    stdio: ['ignore', log, log],
  });
  fs.closeSync(log);
  const images = buildNodeImages(path.join(dir, 'images'));
  for (let i = 0; !fs.existsSync(socket); i++) {
    if (i > 100 || containerd.exitCode !== null) {
      throw new Error(
        `containerd did not start: ${fs.readFileSync(path.join(dir, 'containerd.log'), 'utf8')}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  built = await images;
}, 60_000);

afterAll(async () => {
  if (containerd && containerd.exitCode === null) {
    const exited = new Promise((resolve) => containerd!.once('exit', resolve));
    containerd.kill('SIGTERM');
    await exited;
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('ctr -n k8s.io images import lists each image under its normalized name, complete and unpacked', () => {
  for (const image of built.images) {
    expect(ctr('images', 'import', image.tarPath)).toContain(`unpacking ${image.reference} (sha256:`);
    for (const alias of image.aliases ?? []) ctr('images', 'tag', '--force', image.reference, alias);
  }
  expect(ctr('images', 'ls', '--quiet').trim().split('\n').sort()).toEqual([
    'docker.io/buildkit-fleet/buildkitd-standin:local',
    'docker.io/buildkit-fleet/pause:local',
    'docker.io/library/buildkit-fleet:local',
    'docker.io/moby/buildkit:latest',
    'docker.io/moby/buildkit:rootless',
  ]);
  const check = ctr('images', 'check');
  for (const image of built.images) {
    expect(check).toMatch(
      new RegExp(`^${image.reference.replace(/[.]/g, '\\.')} .* complete \\(\\d+/\\d+\\) .* true\\s*$`, 'm'),
    );
  }
});

test('containerd runs the platform image read-only as its user: buildkit-fleet --help', () => {
  const out = ctr(
    'run',
    '--rm',
    '--read-only',
    'docker.io/library/buildkit-fleet:local',
    `bkf-image-test-${process.pid}`,
    'buildkit-fleet',
    '--help',
  );
  expect(out).toContain('Usage: buildkit-fleet <command>');
});
