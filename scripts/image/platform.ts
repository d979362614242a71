// The platform's one image (webhook, certs, controller, sidecar: `buildkit-fleet <command>`) as
// pure data: its config, what /app holds, and the layers. scripts/image.ts writes it; the
// Dockerfile builds the same thing, and test/unit/image/dockerfile.test.ts holds the two together
// through APP_CONTENTS and PLATFORM_CONFIG.
import fs from 'node:fs';
import path from 'node:path';

import { treeEntries, fileEntry } from './files.ts';
import type { ImageConfig, ImageSpec, Layer, LayerEntry } from './oci-layout.ts';
import { checkLockfile, productionPackages } from './packages.ts';
import type { Lockfile } from './packages.ts';
import { REPO_ROOT, runtimeLayer } from './runtime.ts';

/** The webhook's --local sidecar image (LOCAL_SIDECAR_IMAGE) is this one. */
export const PLATFORM_REFERENCE = 'buildkit-fleet:local';
export const APP_DIR = '/app';
export const NATIVE_ADDON = 'build/native/proxy-engine.node';

/** distroless's non-root user: the usual uid for "not root" images, and what charts expect. */
export const NONROOT = { uid: 65532, gid: 65532, name: 'nonroot', home: '/home/nonroot' } as const;

export const PLATFORM_CONFIG: ImageConfig = {
  // on PATH, so the injected sidecar's `buildkit-fleet sidecar` and `node -e` resolve the same way
  entrypoint: ['buildkit-fleet'],
  env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'NODE_ENV=production', `HOME=${NONROOT.home}`],
  user: `${NONROOT.uid}:${NONROOT.gid}`,
  workingDir: APP_DIR,
  labels: {
    'org.opencontainers.image.title': 'buildkit-fleet',
    'org.opencontainers.image.licenses': 'Apache-2.0',
  },
};

export interface AppItem {
  /** relative to the package root, and to /app */
  path: string;
  kind: 'file' | 'folder' | 'production modules';
}

/**
 * What /app holds. package.json makes dist/'s .js files ES modules and names the bin; dist/ is
 * the compiled code with its assets; the addon is the sidecar's native data path, which
 * sidecar/native-proxy.ts finds relative to the package root; node_modules only what production
 * needs (package-lock.json's non-dev packages, no .bin links).
 */
export const APP_CONTENTS: readonly AppItem[] = [
  { path: 'package.json', kind: 'file' },
  { path: 'dist', kind: 'folder' },
  { path: NATIVE_ADDON, kind: 'file' },
  { path: 'node_modules', kind: 'production modules' },
];

interface PackageJson {
  name: string;
  bin?: string | Record<string, string>;
}

export function readPackageJson(root: string): PackageJson {
  return JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as PackageJson;
}

export function readLockfile(root: string): Lockfile {
  const file = path.join(root, 'package-lock.json');
  return checkLockfile(JSON.parse(fs.readFileSync(file, 'utf8')), file);
}

/** package.json's bin as links in /usr/local/bin to files in /app. */
export function binLinks(pkg: PackageJson): { link: string; target: string }[] {
  const bin = typeof pkg.bin === 'string' ? { [pkg.name]: pkg.bin } : (pkg.bin ?? {});
  return Object.entries(bin)
    .map(([name, file]) => ({ link: `/usr/local/bin/${name}`, target: path.posix.join(APP_DIR, file) }))
    .sort((a, b) => (a.link < b.link ? -1 : 1));
}

/**
 * Users, name lookup, the home folder and the bin links. Nothing is owned by the user: the image
 * runs with a read-only root filesystem, so HOME only has to exist.
 */
export function systemLayer(pkg: PackageJson): Layer {
  const root = { uid: 0, gid: 0 };
  const { uid, gid, name, home } = NONROOT;
  return {
    description: `user ${name} (${uid}:${gid}), /etc/nsswitch.conf, bin links`,
    entries: [
      {
        type: 'file',
        path: '/etc/passwd',
        mode: 0o644,
        ...root,
        content: `root:x:0:0:root:/root:/sbin/nologin\n${name}:x:${uid}:${gid}:${name}:${home}:/sbin/nologin\n`,
      },
      { type: 'file', path: '/etc/group', mode: 0o644, ...root, content: `root:x:0:\n${name}:x:${gid}:\n` },
      // without it glibc asks DNS before /etc/hosts
      {
        type: 'file',
        path: '/etc/nsswitch.conf',
        mode: 0o644,
        ...root,
        content: 'passwd: files\ngroup: files\nhosts: files dns\n',
      },
      { type: 'dir', path: home, mode: 0o755, ...root },
      ...binLinks(pkg).map(({ link, target }): LayerEntry => ({
        type: 'symlink',
        path: link,
        target,
        ...root,
      })),
    ],
  };
}

/** Fails with what to run when the build's output is not there. */
export function checkBuilt(root: string): void {
  const need = [
    ['dist/cli/main.js', 'npm run build'],
    [NATIVE_ADDON, 'npm run build (the sidecar native addon; needs g++)'],
  ];
  for (const [file, how] of need) {
    if (!fs.existsSync(path.join(root, file!))) throw new Error(`${file} is missing: run ${how} first`);
  }
}

/**
 * /app's entries. Files package.json names as bins are made executable (tsc writes 0644, and the
 * bin links exec them through their shebang).
 */
export function appEntries(
  root: string,
  lock: Lockfile,
  pkg: PackageJson = readPackageJson(root),
): LayerEntry[] {
  const executable = new Set(binLinks(pkg).map((l) => l.target));
  const entries: LayerEntry[] = [];
  for (const item of APP_CONTENTS) {
    const to = path.posix.join(APP_DIR, item.path);
    if (item.kind === 'file') {
      entries.push(fileEntry(path.join(root, item.path), to));
    } else if (item.kind === 'folder') {
      entries.push(...treeEntries(path.join(root, item.path), to));
    } else {
      entries.push({ type: 'dir', path: to, mode: 0o755, uid: 0, gid: 0 });
      for (const key of productionPackages(lock)) {
        const from = path.join(root, key);
        if (!fs.existsSync(from)) {
          // an optional dependency for another platform is in the lock but not installed
          if (lock.packages[key]!.optional || lock.packages[key]!.devOptional) continue;
          throw new Error(`${key} is missing: run npm ci`);
        }
        // a nested node_modules holds other lock entries, each copied (or not) on its own
        entries.push(...treeEntries(from, path.posix.join(APP_DIR, key), (rel) => rel === 'node_modules'));
      }
    }
  }
  return entries.map((e) => (e.type === 'file' && executable.has(e.path) ? { ...e, mode: 0o755 } : e));
}

export function platformImage(root: string = REPO_ROOT, reference: string = PLATFORM_REFERENCE): ImageSpec {
  checkBuilt(root);
  const pkg = readPackageJson(root);
  return {
    reference,
    config: PLATFORM_CONFIG,
    layers: [
      runtimeLayer([path.join(root, NATIVE_ADDON)], root),
      systemLayer(pkg),
      {
        description: `${APP_DIR}: ${APP_CONTENTS.map((c) => c.path).join(', ')}`,
        entries: appEntries(root, readLockfile(root), pkg),
      },
    ],
  };
}
