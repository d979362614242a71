// Shared by the image tests: reading an OCI layout tar with GNU tar (not with the code under
// test), unpacking an image's layers into a root filesystem, and running a program in it as a
// container runtime would: its own mount namespace, the root bind-mounted read-only when asked,
// /proc and /dev from the host, the config's Env, WorkingDir and user.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string };
}

export interface Layout {
  dir: string;
  files: string[];
  index: { schemaVersion: number; mediaType: string; manifests: Descriptor[] };
  manifest: { schemaVersion: number; mediaType: string; config: Descriptor; layers: Descriptor[] };
  config: {
    architecture: string;
    os: string;
    config: {
      User: string;
      Env: string[];
      Entrypoint: string[];
      Cmd?: string[];
      WorkingDir: string;
      Labels?: Record<string, string>;
    };
    rootfs: { type: string; diff_ids: string[] };
  };
  blob(digest: string): string;
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `bkf-image-${prefix}-`));
}

function run(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

/** `tar -tv --numeric-owner` of a tar file: one line per entry. */
export function listTar(file: string): string[] {
  return run('tar', ['-tv', '--numeric-owner', '--full-time', '-f', file]).trim().split('\n');
}

/** Names in a tar file, in the order the file holds them. */
export function tarNames(file: string): string[] {
  return run('tar', ['-t', '-f', file]).trim().split('\n');
}

/** Unpacks the layout tar into a new folder below `parent` and reads its documents. */
export function readLayout(tarPath: string, parent: string): Layout {
  const dir = fs.mkdtempSync(path.join(parent, 'layout-'));
  run('tar', ['-x', '-f', tarPath, '-C', dir]);
  const json = (file: string) => JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
  const blob = (digest: string) => path.join(dir, 'blobs', ...digest.split(':'));
  const index = json('index.json');
  const manifest = JSON.parse(fs.readFileSync(blob(index.manifests[0].digest), 'utf8'));
  const config = JSON.parse(fs.readFileSync(blob(manifest.config.digest), 'utf8'));
  return { dir, files: tarNames(tarPath), index, manifest, config, blob };
}

/** Applies the layers in order into `rootfs`, keeping owners and modes (as root). */
export function unpackRootfs(layout: Layout, rootfs: string): void {
  fs.mkdirSync(rootfs, { recursive: true });
  for (const layer of layout.manifest.layers) {
    run('tar', ['-x', '-p', '--numeric-owner', '-f', layout.blob(layer.digest), '-C', rootfs]);
  }
}

/**
 * Running in an unpacked image needs root (a mount namespace, bind mounts, changing root and
 * user). Elsewhere these tests cannot run, and they fail saying so rather than pass unrun.
 */
export function requireRoot(what: string): void {
  const uid = process.getuid?.();
  if (uid !== 0) {
    throw new Error(
      `${what} cannot run here: it needs root (uid 0, this is uid ${uid}) for unshare -m, mount --bind and a changed root. Run the tests as root (CI does).`,
    );
  }
  for (const tool of ['unshare', 'mount', 'tar']) {
    if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).status !== 0) {
      throw new Error(`${what} cannot run here: ${tool} is missing (util-linux, tar)`);
    }
  }
}

export interface RunOptions {
  /** uid:gid, default the image's User */
  user?: string;
  readOnly?: boolean;
  /** replaces the Entrypoint */
  entrypoint?: string[];
}

/**
 * Starts `args` in the image at `rootfs` the way a runtime would: Entrypoint + args, the
 * config's Env only, WorkingDir, User. The rootfs gets /proc and /dev mount points first (a
 * runtime creates them too). The process keeps its pid through every exec, so a signal sent to
 * the returned child reaches the image's program.
 */
export function startInImage(
  rootfs: string,
  config: Layout['config']['config'],
  args: string[],
  options: RunOptions = {},
): ChildProcess {
  for (const dir of ['proc', 'dev']) fs.mkdirSync(path.join(rootfs, dir), { recursive: true });
  const [uid, gid] = (options.user ?? (config.User || '0:0')).split(':');
  const command = [...(options.entrypoint ?? config.Entrypoint), ...args];
  // positional parameters, not environment variables: the program sees the config's Env only
  const script = [
    'r=$1 w=$2 u=$3 g=$4',
    'shift 4',
    `mount --bind ${options.readOnly ? '-o ro ' : ''}"$r" "$r"`,
    'mount --rbind /proc "$r/proc"',
    'mount --rbind /dev "$r/dev"',
    'exec unshare --root="$r" --wd="$w" --setuid "$u" --setgid "$g" "$@"',
  ].join(' && ');
  const env = Object.fromEntries(
    config.Env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]),
  );
  const positional = [rootfs, config.WorkingDir || '/', uid!, gid ?? uid!];
  // the host's sh, mount and unshare run with the image's PATH, which has /usr/bin and /bin too
  return spawn(
    'unshare',
    ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', ...positional, ...command],
    {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
}

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function finished(child: ChildProcess): Promise<Finished> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

export function runInImage(
  rootfs: string,
  config: Layout['config']['config'],
  args: string[],
  options: RunOptions = {},
): Promise<Finished> {
  return finished(startInImage(rootfs, config, args, options));
}
