// The images the local cluster's real node imports into its containerd (no registry, no pulls):
// the platform image (scripts/image/platform.ts), the pod sandbox's pause image, and a buildkitd
// image that runs the stand-in (hack/buildkitd-standin/), since no package ships buildkitd.
// All are written by scripts/image/oci-layout.ts; the stand-in shares the platform image's
// runtime layer recipe, so the node binary and its libraries are one blob in containerd.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { DEFAULT_IMAGE, DEFAULT_ROOTLESS_IMAGE } from '../api/group.ts';
import { fileEntry, isStatic, treeEntries } from '../scripts/image/files.ts';
import { normalizeReference, writeImage } from '../scripts/image/oci-layout.ts';
import type { ImageSpec, LayerEntry } from '../scripts/image/oci-layout.ts';
import { dependencyClosure } from '../scripts/image/packages.ts';
import { PLATFORM_REFERENCE, platformImage, readLockfile } from '../scripts/image/platform.ts';
import { REPO_ROOT, runtimeLayer } from '../scripts/image/runtime.ts';
import { K8S_VERSION, cacheRoot } from './binaries.ts';

export const PAUSE_REFERENCE = 'docker.io/buildkit-fleet/pause:local';
export const STANDIN_REFERENCE = 'docker.io/buildkit-fleet/buildkitd-standin:local';

/** Where install-prereqs.sh --real-node puts the pause binary it compiles. */
export function pauseBinaryPath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(cacheRoot(env), `kubernetes-${K8S_VERSION}`, 'pause');
}

const ROOT = { uid: 0, gid: 0 };
const PATH_ENV = 'PATH=/usr/local/bin:/usr/bin:/bin';

/** One static binary. The upstream pause image also runs as 65535. */
export function pauseImage(pauseBinary: string): ImageSpec {
  if (!fs.existsSync(pauseBinary)) {
    throw new Error(
      `${pauseBinary} is missing: run \`bash hack/install-prereqs.sh --real-node\` (it compiles pause from the Kubernetes source)`,
    );
  }
  if (!isStatic(pauseBinary))
    throw new Error(`${pauseBinary} must be a static binary: the pause image has no libc`);
  return {
    reference: PAUSE_REFERENCE,
    config: { entrypoint: ['/pause'], env: [PATH_ENV], user: '65535:65535', workingDir: '/' },
    layers: [{ description: '/pause', entries: [fileEntry(pauseBinary, '/pause', 0o755)] }],
  };
}

// --- the buildkitd stand-in -------------------------------------------------------------------

const STANDIN_SOURCE = fileURLToPath(new URL('./buildkitd-standin', import.meta.url));
const STANDIN_DIR = '/standin';
/** The packages the stand-in imports; the image carries them and what they need. */
export const STANDIN_PACKAGES = ['@grpc/grpc-js', '@grpc/proto-loader'] as const;
export const BUSYBOX = '/bin/busybox';
/**
 * busybox applets linked in /bin: the shell and every command the preStop drain script runs
 * (controller/assets/buildkit-prestop.sh: printf, date, usleep, sleep, cat, echo, `[`), plus a
 * few for looking around in the container.
 */
export const BUSYBOX_APPLETS = [
  '[',
  'cat',
  'date',
  'echo',
  'env',
  'false',
  'ls',
  'printf',
  'sh',
  'sleep',
  'test',
  'true',
  'usleep',
] as const;
/** buildkitd's rootless uid (moby/buildkit:rootless), the uid the rootless template runs as. */
const ROOTLESS = { uid: 1000, gid: 1000 };

/** A busybox sh script that runs one of the stand-in's programs with the caller's args. */
function launcher(program: string): string {
  return `#!/bin/sh\n# STAND-IN for the local cluster's real node (hack/images.ts): not BuildKit.\nexec node ${STANDIN_DIR}/${program} "$@"\n`;
}

/**
 * The stand-in's commands on PATH. buildkitd is the entrypoint: the pod's args (--addr ...,
 * --config, --oci-worker-no-process-sandbox, --debug) reach main.ts unchanged and node is the
 * container's main process. buildctl answers the controller's exec probe on Kubernetes before
 * 1.24 (`buildctl --addr unix://... debug workers`), which runs in this container.
 */
export const STANDIN_COMMANDS: Readonly<Record<string, string>> = {
  '/usr/local/bin/buildkitd': launcher('main.ts'),
  '/usr/local/bin/buildctl': launcher('buildctl.ts'),
};

/**
 * Fails when a stand-in source imports something the image does not carry: a file outside
 * hack/buildkitd-standin/, or a package other than node's and STANDIN_PACKAGES. `sources` maps
 * paths relative to the stand-in's folder to their text.
 */
export function checkStandinImports(sources: Record<string, string>): void {
  const specifier = /(?:\bfrom\s*|\bimport\s*\(?\s*)['"]([^'"]+)['"]/g;
  for (const [file, text] of Object.entries(sources)) {
    for (const [, spec] of text.matchAll(specifier)) {
      if (spec!.startsWith('.')) {
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec!));
        if (target.startsWith('../') || !(target in sources)) {
          throw new Error(
            `hack/buildkitd-standin/${file} imports ${spec}, which is not in hack/buildkitd-standin/: the stand-in image carries that folder only (hack/images.ts)`,
          );
        }
      } else if (
        !spec!.startsWith('node:') &&
        !STANDIN_PACKAGES.some((p) => spec === p || spec!.startsWith(`${p}/`))
      ) {
        throw new Error(
          `hack/buildkitd-standin/${file} imports ${spec}: the stand-in image carries only ${STANDIN_PACKAGES.join(' and ')} (STANDIN_PACKAGES in hack/images.ts)`,
        );
      }
    }
  }
}

/** Users, folders buildkitd expects, busybox and the stand-in's commands. */
export function standinSystemEntries(busybox: string): LayerEntry[] {
  const rootless = ROOTLESS;
  const dir = (p: string, mode: number, owner: { uid: number; gid: number } = ROOT): LayerEntry => ({
    type: 'dir',
    path: p,
    mode,
    ...owner,
  });
  return [
    fileEntry(busybox, BUSYBOX, 0o755),
    ...BUSYBOX_APPLETS.map((applet): LayerEntry => ({
      type: 'symlink',
      path: `/bin/${applet}`,
      target: 'busybox',
      ...ROOT,
    })),
    ...Object.entries(STANDIN_COMMANDS).map(([file, content]): LayerEntry => ({
      type: 'file',
      path: file,
      mode: 0o755,
      ...ROOT,
      content,
    })),
    {
      type: 'file',
      path: '/etc/passwd',
      mode: 0o644,
      ...ROOT,
      content: `root:x:0:0:root:/root:/bin/sh\nuser:x:${rootless.uid}:${rootless.gid}:user:/home/user:/bin/sh\n`,
    },
    {
      type: 'file',
      path: '/etc/group',
      mode: 0o644,
      ...ROOT,
      content: `root:x:0:\nuser:x:${rootless.gid}:\n`,
    },
    dir('/root', 0o700),
    dir('/tmp', 0o1777),
    // rootful buildkitd: its socket folder and state
    dir('/run/buildkit', 0o755),
    dir('/var/lib/buildkit', 0o711),
    // rootless: XDG_RUNTIME_DIR (the socket's folder below it) and the state under HOME
    dir('/run/user', 0o755),
    dir('/run/user/1000', 0o700, rootless),
    dir('/run/user/1000/buildkit', 0o755, rootless),
    dir('/home/user', 0o755, rootless),
    dir('/home/user/.local', 0o755, rootless),
    dir('/home/user/.local/share', 0o755, rootless),
    dir('/home/user/.local/share/buildkit', 0o755, rootless),
  ];
}

/** /standin: the stand-in's sources and protos as they are (node strips the types itself). */
export function standinEntries(root: string = REPO_ROOT): LayerEntry[] {
  const sources = treeEntries(STANDIN_SOURCE, STANDIN_DIR, (rel) => rel.endsWith('.test.ts'));
  const texts: Record<string, string> = {};
  for (const e of sources) {
    if (e.type === 'file' && 'source' in e && e.path.endsWith('.ts')) {
      texts[path.posix.relative(STANDIN_DIR, e.path)] = fs.readFileSync(e.source, 'utf8');
    }
  }
  checkStandinImports(texts);
  const modules = dependencyClosure(readLockfile(root), STANDIN_PACKAGES).flatMap((key) =>
    treeEntries(path.join(root, key), path.posix.join(STANDIN_DIR, key), (rel) => rel === 'node_modules'),
  );
  return [
    ...sources,
    // main.ts uses top-level await: an ES module, said outright rather than left to detection
    {
      type: 'file',
      path: `${STANDIN_DIR}/package.json`,
      mode: 0o644,
      ...ROOT,
      content: '{"name":"buildkitd-standin","private":true,"type":"module"}\n',
    },
    ...modules,
  ];
}

export function standinImage(root: string = REPO_ROOT, busybox: string = BUSYBOX): ImageSpec {
  if (!fs.existsSync(busybox) || !isStatic(busybox)) {
    throw new Error(
      `${busybox} is ${fs.existsSync(busybox) ? "not static (Debian's busybox package)" : 'missing'}: the stand-in image needs busybox-static; run \`bash hack/install-prereqs.sh --real-node\` (or apt-get install busybox-static)`,
    );
  }
  return {
    reference: STANDIN_REFERENCE,
    config: {
      entrypoint: ['/usr/local/bin/buildkitd'],
      env: [PATH_ENV],
      // buildkitd runs as root (privileged); the rootless template sets runAsUser 1000 itself
      user: '0:0',
      workingDir: '/',
      labels: {
        'org.opencontainers.image.description':
          'STAND-IN for buildkitd, for tests only: a small gRPC server (hack/buildkitd-standin), not BuildKit',
        'org.opencontainers.image.title': 'buildkitd-standin',
      },
    },
    layers: [
      runtimeLayer([], root),
      {
        description: `busybox, users, buildkitd's folders, ${Object.keys(STANDIN_COMMANDS).join(' ')}, ${STANDIN_DIR}`,
        entries: [...standinSystemEntries(busybox), ...standinEntries(root)],
      },
    ],
  };
}

// --- all of them ----------------------------------------------------------------------------

export interface BuiltImage {
  name: 'platform' | 'pause' | 'buildkitd-standin';
  /** normalized, as containerd stores it */
  reference: string;
  tarPath: string;
  /** more names for the same image (ctr images tag), already normalized */
  aliases?: string[];
}

export interface NodeImages {
  images: BuiltImage[];
  /** the reference for containerd's sandbox_image */
  sandbox: string;
}

/**
 * Writes the real node's images into `outDir` (<name>.oci.tar). The platform image is built
 * from dist/ and the addon as they are (npm ci and npm test build them; this does not run tsc),
 * and fails saying so when they are missing. The stand-in also answers to buildkitd's default
 * images (moby/buildkit:latest and :rootless), so templates that leave `image` unset run it.
 */
export async function buildNodeImages(
  outDir: string,
  pauseBinary: string = pauseBinaryPath(),
): Promise<NodeImages> {
  const specs: [BuiltImage['name'], ImageSpec, string[]][] = [
    ['platform', platformImage(REPO_ROOT, PLATFORM_REFERENCE), []],
    ['pause', pauseImage(pauseBinary), []],
    ['buildkitd-standin', standinImage(), [DEFAULT_IMAGE, DEFAULT_ROOTLESS_IMAGE].map(normalizeReference)],
  ];
  const images: BuiltImage[] = [];
  for (const [name, spec, aliases] of specs) {
    const written = await writeImage(spec, path.join(outDir, `${name}.oci.tar`));
    images.push({
      name,
      reference: written.reference,
      tarPath: written.tarPath,
      ...(aliases.length ? { aliases } : {}),
    });
  }
  return { images, sandbox: normalizeReference(PAUSE_REFERENCE) };
}
