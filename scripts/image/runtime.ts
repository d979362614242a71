// The Node.js runtime layer every image here starts with: the node binary of the npm package
// `node` (the project's pinned Node 24, a real ELF executable), /usr/bin/env (dist/cli/main.js
// starts with `#!/usr/bin/env node`), and the host's shared libraries they and any native addon
// load, at the paths they load them from. One recipe for all images, so identical inputs give
// one identical layer (one blob in containerd's store).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { fileEntry, libraryEntries, sharedLibraries } from './files.ts';
import type { Layer } from './oci-layout.ts';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const NODE_IN_IMAGE = '/usr/local/bin/node';
export const ENV_IN_IMAGE = '/usr/bin/env';
const HOST_ENV = '/usr/bin/env';

/** The node binary of the npm package (node_modules/.bin/node is a link to it). */
export function nodeBinary(root: string = REPO_ROOT): string {
  const binary = path.join(root, 'node_modules/node/bin/node');
  const head = Buffer.alloc(4);
  try {
    const fd = fs.openSync(binary, 'r');
    fs.readSync(fd, head, 0, 4, 0);
    fs.closeSync(fd);
  } catch (error) {
    throw new Error(`${binary} is missing: run npm ci (the npm package node@24 is a devDependency)`, {
      cause: error,
    });
  }
  // the package's preinstall puts the real binary there; before it, or on a failed install, it is not one
  if (!head.equals(Buffer.from('\x7fELF', 'latin1'))) {
    throw new Error(`${binary} is not an ELF executable: reinstall the node package (npm ci)`);
  }
  return binary;
}

/**
 * The runtime layer. `alsoLoading` are other files the image's node will dlopen (the sidecar's
 * native addon), whose libraries must be there too.
 */
export function runtimeLayer(alsoLoading: readonly string[] = [], root: string = REPO_ROOT): Layer {
  const node = nodeBinary(root);
  const libraries = sharedLibraries([node, HOST_ENV, ...alsoLoading]);
  return {
    description: `node ${NODE_IN_IMAGE}, ${ENV_IN_IMAGE} and their libraries (${libraries.join(' ')})`,
    entries: [
      fileEntry(node, NODE_IN_IMAGE, 0o755),
      fileEntry(HOST_ENV, ENV_IN_IMAGE, 0o755),
      ...libraryEntries(libraries),
    ],
  };
}
