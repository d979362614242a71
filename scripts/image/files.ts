// The thin I/O between the host's files and layer entries: listing a folder as entries, finding
// the shared libraries a binary loads, and laying entries out as a folder (the Dockerfile's build
// stage uses that to get the same runtime files as `npm run image`).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { planLayer } from './oci-layout.ts';
import type { LayerEntry } from './oci-layout.ts';

const ROOT = { uid: 0, gid: 0 };

/**
 * A host file as an image file owned by root. Modes are reduced to 0755 or 0644 (executable or
 * not) so that the image does not depend on the umask of whoever ran npm ci.
 */
export function fileEntry(source: string, imagePath: string, mode?: number): LayerEntry {
  const stat = fs.statSync(source);
  if (!stat.isFile()) throw new Error(`${source} is not a file`);
  return {
    type: 'file',
    path: imagePath,
    source,
    mode: mode ?? (stat.mode & 0o111 ? 0o755 : 0o644),
    ...ROOT,
  };
}

/**
 * Everything below host folder `from` as entries below `to`, the folder itself included.
 * `skip(relativePath)` leaves out a file or a whole folder. Symbolic links stay links.
 */
export function treeEntries(
  from: string,
  to: string,
  skip: (relative: string) => boolean = () => false,
): LayerEntry[] {
  if (!fs.statSync(from).isDirectory()) throw new Error(`${from} is not a folder`);
  const out: LayerEntry[] = [{ type: 'dir', path: to, mode: 0o755, ...ROOT }];
  const walk = (relative: string) => {
    for (const entry of fs.readdirSync(path.join(from, relative), { withFileTypes: true })) {
      const rel = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (skip(rel)) continue;
      const source = path.join(from, rel);
      const imagePath = path.posix.join(to, rel);
      if (entry.isSymbolicLink()) {
        out.push({ type: 'symlink', path: imagePath, target: fs.readlinkSync(source), ...ROOT });
      } else if (entry.isDirectory()) {
        out.push({ type: 'dir', path: imagePath, mode: 0o755, ...ROOT });
        walk(rel);
      } else if (entry.isFile()) {
        out.push(fileEntry(source, imagePath));
      } else {
        throw new Error(`${source}: only files, folders and symbolic links can go into an image`);
      }
    }
  };
  walk('');
  return out;
}

/**
 * The shared libraries in `ldd` output, the dynamic loader included, as the paths the binary
 * asks for (which is where they must be in the image). A library ldd cannot find throws; a
 * static binary has none.
 */
export function parseLdd(output: string, binary: string): string[] {
  const libraries: string[] = [];
  for (const raw of output.split('\n')) {
    const line = raw.trim();
    if (line === '' || /statically linked|not a dynamic executable/.test(line)) continue;
    if (line.startsWith('linux-vdso.so') || line.startsWith('linux-gate.so')) continue;
    if (/=> not found/.test(line))
      throw new Error(`${binary} needs ${line.split(' ')[0]}, which ldd cannot find`);
    const m = /=> (\/\S+) \(0x[0-9a-f]+\)$/.exec(line) ?? /^(\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (!m) throw new Error(`cannot read ldd's line for ${binary}: ${JSON.stringify(line)}`);
    libraries.push(m[1]!);
  }
  return libraries;
}

/** The libraries `binaries` load on this host (ldd), each once, sorted. */
export function sharedLibraries(binaries: readonly string[]): string[] {
  const all = new Set<string>();
  for (const binary of binaries) {
    let output: string;
    try {
      output = execFileSync('ldd', [binary], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (error) {
      const e = error as { stdout?: string; stderr?: string; message: string };
      // ldd exits 1 on a static binary and says so
      if (/not a dynamic executable/.test(`${e.stdout ?? ''}${e.stderr ?? ''}`)) continue;
      throw new Error(`ldd ${binary} failed: ${e.stderr?.trim() || e.message}`, { cause: error });
    }
    for (const library of parseLdd(output, binary)) all.add(library);
  }
  return [...all].sort();
}

export function isStatic(binary: string): boolean {
  return sharedLibraries([binary]).length === 0;
}

/** The library files as the binary finds them: the real file's bytes at the path it asks for. */
export function libraryEntries(libraries: readonly string[]): LayerEntry[] {
  return libraries.map((library) => fileEntry(fs.realpathSync(library), library, 0o755));
}

/**
 * Lays `entries` out below `dir` as files (`dir` is the image's root). For the Dockerfile's build
 * stage, whose final stage copies the folder: owners are set only when running as root.
 */
export function writeEntries(entries: readonly LayerEntry[], dir: string): void {
  const canChown = process.getuid?.() === 0;
  for (const entry of planLayer(entries)) {
    const target = path.join(dir, entry.path);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    if (entry.type === 'dir') fs.mkdirSync(target, { recursive: true });
    else if (entry.type === 'symlink') fs.symlinkSync(entry.target, target);
    else if ('source' in entry) fs.copyFileSync(entry.source, target);
    else fs.writeFileSync(target, entry.content);
    if (entry.type !== 'symlink') fs.chmodSync(target, entry.mode);
    if (canChown) fs.lchownSync(target, entry.uid, entry.gid);
  }
}
